"""What the live build follows while it serves: the config file it was started from, and
the board's ``rebuild`` commands (``POST /v1/admin/rebuild``).

    follower = Follower(live.rebuild, board, config_path)
    follower.turn()   # each turn of the build's loop

A board that stops answering does not stop the file being followed, nor the other way round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiergate.config import AppConfig
from tiergate.serving.filewatch import FileWatch

log = logging.getLogger(__name__)

COORDINATOR = "coordinator"  # the board role (and member name) the build polls as

Rebuild = Callable[[str | None, bool], None]  # (variant or None for the whole config, force)


class Follower:
    def __init__(self, rebuild: Rebuild, board: Any | None, config_path: Path | None) -> None:
        self.rebuild, self.board, self.config_path = rebuild, board, config_path
        self._watch = FileWatch(config_path) if config_path is not None else None
        self._seq = self._board_seq()  # commands from now on: one posted before this is not lost

    def _board_seq(self) -> int:
        if self.board is None:
            return -1
        import ray

        try:
            return int(ray.get(self.board.seq.remote(), timeout=10))
        except Exception as error:  # a board that does not answer: its commands from its next answer
            log.warning("build board: no command number (%s); following it from its next answer", error)
            return -1

    def turn(self) -> None:
        for follow in (self._commands, self._config):
            try:
                follow()
            except Exception:  # the build outlives a board gone away or a file half-written
                log.exception("live build: following changes failed; trying again next turn")

    def _commands(self) -> None:
        if self.board is None:
            return
        import ray

        polled = ray.get(self.board.poll.remote(COORDINATOR, self._seq, COORDINATOR), timeout=10)
        for command in polled.get("commands", []):
            self._seq = max(self._seq, command["seq"])
            if command["kind"] == "rebuild":
                args = command["args"]
                self.rebuild(args.get("variant"), bool(args.get("force")))
        self._seq = max(self._seq, polled.get("seq", self._seq))

    def _config(self) -> None:
        if self._watch is None or not self._watch.changed():
            return
        log.info("%s changed: applying its variants and recipes", self.config_path)
        self.rebuild(None, False)


def needs_restart(current: AppConfig, new: AppConfig) -> None:
    """Log what a config change asks for that only a restart applies (the base model, its
    weights, the data, the cache folder, the fine-tuning pool)."""
    fields = []
    if new.model.model_dump(exclude={"weights"}) != current.model.model_dump(exclude={"weights"}) or (
        new.model.weights is not None and new.model.weights != current.model.weights
    ):
        fields.append("model")
    if new.data != current.data:
        fields.append("data")
    if new.compress.cache_dir != current.compress.cache_dir:
        fields.append("compress.cache_dir")
    if new.compress.finetune_samples != current.compress.finetune_samples:
        fields.append("compress.finetune_samples")
    if fields:
        log.error("%s changed in the config: restart tiergate serve to apply (the rest is applied)",
                  ", ".join(fields))  # fmt: skip
