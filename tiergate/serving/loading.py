"""Open a variant's ONNX file into an engine, timed in the process that will serve it.

    opener = EngineOpener(serving, input_shape, run_slots, on_batch=metrics.batch, on_change=registry.changed)
    engine = opener.open(entry)        # sha256 checked, then timed at batch 1 in this process
    opener.retime(engine, entry)       # again (an admin's re-profile)

Replicas start together; timing one variant while another replica times its own would
measure the contention, not the variant, so a file lock takes turns per machine.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiergate.profiles.menu import MenuEntry
from tiergate.serving.config import ServingConfig
from tiergate.serving.engines import EngineSettings, RemoteEngine, RunSlots, VariantEngine

log = logging.getLogger(__name__)


def concurrent_runs(serving: ServingConfig) -> int:
    """serving.batching.max_concurrent_runs, else the cores this process may use."""
    configured = serving.batching.max_concurrent_runs
    return configured if configured is not None else max(1, len(os.sched_getaffinity(0)))


def engine_settings(serving: ServingConfig) -> EngineSettings:
    batching = serving.batching
    return EngineSettings(
        threads=batching.threads_per_variant,
        max_batch_size=batching.max_batch_size,
        batch_wait_timeout_s=batching.batch_wait_timeout_s,
        max_queued=serving.admission.max_queued_per_variant,
        run_niceness=batching.run_niceness,
        max_runs=batching.max_runs_per_variant or concurrent_runs(serving),
    )


class EngineOpener:
    """Makes the in-process engines of one replica, all sharing its run slots."""

    def __init__(
        self,
        serving: ServingConfig,
        input_shape: tuple[int, int, int] | None,
        run_slots: RunSlots | None,
        on_batch: Callable[[str, int], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.serving, self.input_shape, self.run_slots = serving, input_shape, run_slots
        self.on_batch, self.on_change = on_batch, on_change
        self.settings = engine_settings(serving)

    def open(self, entry: MenuEntry) -> VariantEngine:
        """Load one variant (sha256 checked) and, unless switched off, time it here."""
        engine = VariantEngine.load(
            entry.name, Path(entry.path), entry.sha256, self.settings,
            run_slots=self.run_slots, on_batch=self.on_batch, on_change=self.on_change,
        )  # fmt: skip
        if self.serving.routing.profile_in_replica:
            self.retime(engine, entry)
        return engine

    def retime(self, engine: VariantEngine, entry: MenuEntry) -> None:
        """Time batch 1 in this process (threads, CPU share and neighbours as served) and
        scale the menu's profile at the other batch sizes by the same factor."""
        retime(engine, entry, self.input_shape, self.serving.routing.replica_profile_budget_s)


def retime(engine: VariantEngine, entry: MenuEntry, input_shape, budget_s: float) -> None:
    """Two passes at batch 1, the faster kept (a neighbour's start-up work can slow one),
    scaled onto the menu's batch sizes; routing then predicts from these timings. Runs in a
    worker thread, so it tells no one: the caller tells the live menu (``changed``) on
    the event loop."""
    if input_shape is None:
        return
    started = time.perf_counter()
    passes = []
    with _one_profiler_per_node():
        for _ in range(2):
            engine.profile(input_shape, (1,), budget_s)
            passes.append(engine.latency_p95_ms[1])
    factor = min(passes) / entry.p95_ms(1)
    engine.latency_p95_ms = {int(b): stats.p95 * factor for b, stats in entry.latency_ms.items()}
    engine.profile_s = time.perf_counter() - started
    log.info(
        "%s: timed in the serving replica in %.1f s: batch-1 p95 %.2f ms (%.2fx the menu's)",
        engine.name, engine.profile_s, engine.latency_p95_ms[1], factor,
    )  # fmt: skip


@contextmanager
def _one_profiler_per_node() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "tiergate-profile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


async def time_remote_variants(handles: Mapping[str, Any], serving: ServingConfig) -> dict[str, RemoteTiming]:
    """Each variant deployment's in-replica timing (per_variant topology), taken again one
    variant at a time once all are up (while replicas start, their imports and loads compete
    for the CPU); a variant whose deployment failed to start is left out."""
    started = {}
    for name, handle in handles.items():
        try:
            started[name] = await handle.latency.remote()
        except Exception as error:
            log.error("variant %s left out of the menu: its deployment failed: %s", name, error)
    timed = {}
    for name, latency in started.items():
        if serving.routing.profile_in_replica:
            latency = await handles[name].retime.remote()
        timed[name] = RemoteTiming(handles[name], latency)
    return timed


@dataclass(frozen=True)
class RemoteTiming:
    handle: Any  # a Ray Serve deployment handle with infer/latency/retime
    latency_p95_ms: dict[int, float]


def remote_engines(
    timed: Mapping[str, RemoteTiming], serving: ServingConfig, on_change: Callable[[], None]
) -> dict[str, RemoteEngine]:
    engines = {}
    for name, timing in timed.items():
        spec = serving.ray.variant_deployments.get(name)
        engines[name] = RemoteEngine(
            name, timing.handle, timing.latency_p95_ms, replicas=spec.replicas if spec is not None else 1,
            max_queued=serving.admission.max_queued_per_variant, timeout_s=serving.routing.variant_timeout_s,
            on_change=on_change,
        )  # fmt: skip
    return engines
