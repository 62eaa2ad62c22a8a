"""What one build task does, in a Ray worker of its own: build one variant (or take it
from the cache) and measure it, telling the board how far it is.

    measurement = run_job(Job(config, "int8", scratch=cache / "artifacts" / ".build-int8-1a2b"), board)

The task's worker runs at a low priority from its start (``nice``, ``compress.live``) and
the task limits its threads, so the serving replicas keep their core.
It writes only into ``job.scratch`` until the artifact is complete; the cache then takes
it in one rename.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate import settings
from tiergate.build.menu import candidate_of
from tiergate.compression import Builder, VariantSpec, load_base, load_splits, parse_variants
from tiergate.compression.integrity import Sealer
from tiergate.compression.progress import observed
from tiergate.config import AppConfig
from tiergate.profiles import Measurement, MeasurementStore, measure_candidate
from tiergate.serving.board import BuildProgress, BuildState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    config: AppConfig  # every path in it absolute: the task may run on another node
    variant: str
    scratch: Path  # where the build writes until the cache takes the artifact
    samples: int | None = None  # a quick estimate on this many test images; None: all
    force: bool = False  # build and measure again even though the cache has it


def task_threads(config: AppConfig) -> int:
    live = config.compress.live
    return live.threads if live.threads is not None else max(1, int(live.task_cpus))


def run_job(job: Job, board: Any | None) -> Measurement:
    """The task's body: the variant's measurement (its artifact built first if need be)."""
    config = job.config
    threads = task_threads(config)
    import torch

    torch.set_num_threads(threads)
    reporter = Reporter(board, job.variant)
    reporter.state(BuildState.BUILDING, "loading data")
    splits = load_splits(config.data)
    sealer = Sealer(settings.menu_key())
    builder = Builder(config.model, splits, load_base(config.model, splits), config.compress.cache_dir,
                      config.compress.finetune_samples, sealer, scratch=job.scratch)  # fmt: skip
    spec = spec_named(config, job.variant)
    if job.force:
        shutil.rmtree(builder.cache.root / builder.key(spec.steps)[:32], ignore_errors=True)
    with observed(reporter.observe):
        artifact = builder.artifact(spec.steps, spec.name)
    reporter.state(BuildState.MEASURING, "accuracy and latency", percent=90.0)
    store = MeasurementStore(Path(config.compress.cache_dir) / "profiles", sealer)
    return measure_candidate(
        candidate_of(spec, artifact), splits, config.profile, store, reprofile=job.force,
        samples=job.samples, eval_threads=threads,
    )  # fmt: skip


def spec_named(config: AppConfig, name: str) -> VariantSpec:
    specs = {spec.name: spec for spec in parse_variants(config.compress.variants, config.compress.recipes)}
    if name not in specs:
        raise KeyError(f"{name}: not in compress.variants ({', '.join(specs)})")
    return specs[name]


class Reporter:
    """Tells the board how one variant's build goes, at most once a second."""

    def __init__(self, board: Any | None, variant: str, every_s: float = 1.0) -> None:
        self.board, self.variant, self.every_s = board, variant, every_s
        self._sent = 0.0

    def state(self, state: BuildState, step: str, percent: float | None = None) -> None:
        self._send(BuildProgress(self.variant, state, step, percent), force=True)

    def observe(self, step: str, done: float, total: float | None, rate: float | None) -> None:
        """A progress bar moved (``tiergate.compression.progress.observed``): building takes
        the first 90% of the variant's progress, measuring the rest."""
        if not total:
            return
        eta = (total - done) / rate if rate else None
        self._send(BuildProgress(self.variant, BuildState.BUILDING, step, 90.0 * done / total, eta))

    def _send(self, progress: BuildProgress, force: bool = False) -> None:
        now = time.monotonic()
        if self.board is None or (not force and now - self._sent < self.every_s):
            return
        self._sent = now
        try:
            self.board.report.remote(progress.to_json())
        except Exception as error:  # progress is for people; the build goes on without it
            log.warning("build progress not reported: %s", error)
