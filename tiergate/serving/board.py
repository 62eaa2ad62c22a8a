"""The build board: a small control plane shared by the build coordinator (in the
``tiergate serve`` driver), its build tasks and every serving replica, as one named Ray
actor. The coordinator reports each variant's build progress; replicas poll it to show
that progress and to run commands posted for all of them (an admin's re-profile reaches
every replica, not only the one that answered); the coordinator polls for its own
commands (``rebuild``).

    board = board_actor(create=True)                        # the coordinator, before Serve
    board.report.remote(BuildProgress("int8", BuildState.BUILDING, percent=40).to_json())
    seq = await board.post.remote("reprofile", {}, "replicas")
    polled = await board.poll.remote("replica-1", after=-1)  # {"status", "seq", "commands"}
    await board.answer.remote("replica-1", seq, {"ok": True})

``Board`` is a plain class (unit-tested without Ray); Ray is imported only in ``board_actor``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

BOARD_NAME = "tiergate-board"
BOARD_NAMESPACE = "tiergate"
KEPT_COMMANDS = 256  # the most recent commands (and their answers) the board keeps
FORGET_MEMBER_S = 3600.0  # a member silent this long is dropped from the board's memory


class BuildState(StrEnum):
    QUEUED = "queued"
    BUILDING = "building"
    MEASURING = "measuring"
    DONE = "done"
    FAILED = "failed"


PENDING_BUILDS = frozenset({BuildState.QUEUED, BuildState.BUILDING, BuildState.MEASURING})


@dataclass(frozen=True)
class BuildProgress:
    """One variant's build, as last reported."""

    variant: str
    state: BuildState
    step: str = ""  # e.g. "fine-tune", "export", "calibrate", "accuracy", "latency"
    percent: float | None = None  # of the whole build of this variant, 0..100
    eta_s: float | None = None
    reason: str = ""  # why it failed

    @property
    def pending(self) -> bool:
        """Queued, building or measuring: not finished either way."""
        return self.state in PENDING_BUILDS

    def to_json(self) -> dict:
        return {
            "variant": self.variant, "state": self.state.value, "step": self.step,
            "percent": self.percent, "eta_s": self.eta_s, "reason": self.reason,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> BuildProgress:
        """From ``to_json``'s dict; ValueError (naming the field) for a state or number that is not one."""
        try:
            state = BuildState(data["state"])
        except ValueError:
            raise ValueError(
                f"state: {data['state']!r} is not one of {[s.value for s in BuildState]}"
            ) from None
        return cls(
            str(data["variant"]), state, str(data.get("step") or ""),
            _figure(data.get("percent"), "percent"), _figure(data.get("eta_s"), "eta_s"),
            str(data.get("reason") or ""),
        )  # fmt: skip


def _figure(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{field}: {value!r} is not a finite number")
    return float(value)


class Board:
    """What the board keeps: build progress per variant, numbered commands per role, each
    command's answers per member, and when each member last polled."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._progress: dict[str, BuildProgress] = {}
        self._seq = 0
        self._commands: deque[dict] = deque(maxlen=KEPT_COMMANDS)  # {"seq", "kind", "args", "to"}
        self._answers: dict[int, dict[str, dict]] = {}  # seq -> member -> result
        self._seen: dict[str, dict[str, float]] = {}  # role -> member -> clock time of its last poll

    # -- build progress (the coordinator writes, everyone reads) -------------------------------
    def report(self, progress: dict) -> None:
        """A variant's progress (``BuildProgress.to_json()``); the latest per variant wins."""
        parsed = BuildProgress.from_json(progress)
        self._progress[parsed.variant] = parsed

    def forget(self, variant: str) -> None:
        """A variant removed from the config: it is no longer built."""
        self._progress.pop(variant, None)

    def status(self) -> dict[str, dict]:
        """Every variant's progress, as ``BuildProgress.to_json()``, by name."""
        return {name: progress.to_json() for name, progress in self._progress.items()}

    # -- commands --------------------------------------------------------------------------------
    def seq(self) -> int:
        """The number of the last command posted (0: none yet)."""
        return self._seq

    def post(self, kind: str, args: dict | None = None, to: str = "replicas") -> int:
        """A command for every member of role ``to``; returns its number (1, 2, ...)."""
        self._seq += 1
        self._commands.append({"seq": self._seq, "kind": kind, "args": dict(args or {}), "to": to})
        self._answers[self._seq] = {}
        while len(self._answers) > KEPT_COMMANDS:
            del self._answers[next(iter(self._answers))]
        return self._seq

    def poll(self, member: str, after: int, role: str = "replicas") -> dict:
        """The build status and the commands for ``role`` numbered after ``after`` (-1: from
        now on, so a new member replays nothing); ``seq`` is the last number posted, where
        the member's next poll starts. Marks ``member`` as seen now."""
        now = self.clock()
        seen = self._seen.setdefault(role, {})
        seen[member] = now
        for name in [name for name, at in seen.items() if now - at > FORGET_MEMBER_S]:
            del seen[name]
        after = self._seq if after < 0 else after
        commands = [
            {"seq": c["seq"], "kind": c["kind"], "args": dict(c["args"])}
            for c in self._commands
            if c["seq"] > after and c["to"] == role
        ]
        return {"status": self.status(), "seq": self._seq, "commands": commands}

    def answer(self, member: str, seq: int, result: dict) -> None:
        """``member``'s result for command ``seq`` (dropped when the board no longer keeps it)."""
        if seq in self._answers:
            self._answers[seq][member] = dict(result)

    def answers(self, seq: int) -> dict[str, dict]:
        """The results for command ``seq`` so far, by member."""
        return dict(self._answers.get(seq, {}))

    def members(self, role: str = "replicas", within_s: float = 10.0) -> list[str]:
        """The members of ``role`` that polled within the last ``within_s`` seconds."""
        now = self.clock()
        return sorted(member for member, at in self._seen.get(role, {}).items() if now - at <= within_s)


def board_actor(create: bool = False):
    """The board's named actor handle; ``create``: start it when it does not exist (detached,
    no CPU reserved). None when Ray is not initialised, or when the board does not exist
    and ``create`` is False."""
    import ray

    if not ray.is_initialized():
        return None
    if create:
        actor = ray.remote(Board).options(
            name=BOARD_NAME, namespace=BOARD_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0
        )
        return actor.remote()
    try:
        return ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except ValueError:
        return None
