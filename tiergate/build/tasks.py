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
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tiergate import settings
from tiergate.build.menu import candidate_of
from tiergate.compression import (
    Builder,
    DataConfig,
    Splits,
    VariantSpec,
    load_base,
    load_splits,
    parse_variants,
)
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


def submit(job: Job, board: Any | None) -> Any:
    """``job`` as a Ray task (its ref): the CPUs it declares, no retry (a failed or killed
    build skips its variant), in a worker that starts at the build's priority, so its
    start-up (Python, Ray, torch) as well as the build yields to the serving replicas."""
    import ray

    live = job.config.compress.live
    task = ray.remote(max_retries=0)(run_job).options(
        num_cpus=live.task_cpus, name=f"build-{job.variant}",
        runtime_env={"py_executable": f"nice -n {live.niceness} {sys.executable}",
                     "env_vars": {"PYTHONPATH": driver_path()}},
    )  # fmt: skip
    return task.remote(job, board)


def driver_path() -> str:
    """The import path build workers get: the driver's working folder first (where
    ``--model package.module:factory`` is found when the CLI ran from a project folder),
    then the driver's own ``$PYTHONPATH``."""
    return os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)


def failure_reason(error: BaseException) -> str:
    """One line for the log, the board and the manifest's ``skipped``."""
    cause = getattr(error, "cause", None)
    if cause is not None:  # a RayTaskError wraps what the build raised
        error = cause
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def task_threads(config: AppConfig) -> int:
    """``compress.live.threads``, else every core of the node the task runs on: at the
    build's niceness, the threads beyond its declared CPUs run on what serving leaves idle."""
    threads = config.compress.live.threads
    return threads if threads is not None else max(1, len(os.sched_getaffinity(0)))


@lru_cache(maxsize=2)
def _splits(data: str) -> Splits:
    """The data's splits, loaded once per build worker (tasks reuse their worker)."""
    return load_splits(DataConfig.model_validate_json(data))


def run_job(job: Job, board: Any | None) -> Measurement:
    """The task's body: the variant's measurement (its artifact built first if need be)."""
    config = job.config
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    threads = task_threads(config)
    import torch

    torch.set_num_threads(threads)
    reporter = Reporter(board, job.variant)
    reporter.state(BuildState.BUILDING, "loading data")
    splits = _splits(config.data.model_dump_json())
    sealer = Sealer(settings.menu_key())
    builder = Builder(config.model, splits, load_base(config.model, splits), config.compress.cache_dir,
                      config.compress.finetune_samples, sealer, scratch=job.scratch)  # fmt: skip
    spec = spec_named(config, job.variant)
    with observed(reporter.observe):
        artifact = builder.artifact(spec.steps, spec.name, fresh=job.force)
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

    def __init__(
        self,
        board: Any | None,
        variant: str,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.board, self.variant, self.every_s, self.clock = board, variant, every_s, clock
        self._sent = -math.inf

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
        now = self.clock()
        if self.board is None or (not force and now - self._sent < self.every_s):
            return
        self._sent = now
        try:
            self.board.report.remote(progress.to_json())
        except Exception as error:  # progress is for people; the build goes on without it
            log.warning("build progress not reported: %s", error)


def absolute_paths(config: AppConfig) -> AppConfig:
    """``config`` with its cache, weights and data paths absolute: build tasks may run in
    another working folder, or on another node (where the cache must be shared)."""
    compress = config.compress.model_copy(update={"cache_dir": Path(config.compress.cache_dir).resolve()})
    model = config.model.model_copy(
        update={k: Path(v).resolve() for k in ("path", "weights") if (v := getattr(config.model, k, None))}
    )
    data = config.data.model_copy(
        update={"path": Path(config.data.path).resolve()} if config.data.path else {}
    )
    return config.model_copy(update={"compress": compress, "model": model, "data": data})


def remove_stale_scratch(artifacts: Path, older_than_s: float = 3600.0) -> None:
    """Build folders (``.build-*``) an hour old or more: left by a build that was killed
    with its coordinator."""
    now = time.time()
    for folder in artifacts.glob(".build-*") if artifacts.is_dir() else ():
        try:
            if now - folder.stat().st_mtime >= older_than_s:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed %s, left by a build that did not finish", folder)
        except OSError:
            continue
