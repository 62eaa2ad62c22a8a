"""One variant's ONNX Runtime session, run in this process behind a dynamic batcher.

    engine = VariantEngine.load("int8", Path("model.onnx"), sha256, settings, run_slots=slots)
    logits = await engine.infer(batch, deadline)  # (N, K); concurrent calls share ORT runs

Requests that wait while the variant's runs hold every run slot it may use (and, when
set, for ``batch_wait_timeout_s``) are stacked into one ``session.run`` of at most
``max_batch_size`` images; up to ``max_runs`` such batches run at once. The queue is
bounded: past ``max_queued`` waiting requests ``infer`` raises ``QueueFull`` at once.
``EngineSettings`` has no defaults: they live in the serving config (``ServingConfig``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tiergate.profiles.measure import measure_latency, open_session
from tiergate.profiles.policy import VariantProfile, batches_ms, service_time_ms
from tiergate.serving.engines.batching import Pending, take_batch
from tiergate.serving.engines.errors import CorruptArtifact, DeadlineExceeded, QueueFull, VariantFailed
from tiergate.serving.engines.run_slots import RunSlots
from tiergate.serving.engines.stats import LiveCounters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    threads: int  # ORT intra-op threads
    max_batch_size: int  # images per ORT run
    batch_wait_timeout_s: float  # extra wait for a batch to fill
    max_queued: int  # waiting requests; past it QueueFull
    run_niceness: int  # added to the nice value of the threads that run ORT
    # runs of this variant at once, within the run slots its process shares (without
    # shared run slots, one at a time)
    max_runs: int


def _lower_priority(increment: int) -> None:
    """Raise this thread's nice value by ``increment`` (Linux: nice is per thread; the
    kernel caps it at 19; raising it needs no privilege)."""
    if increment > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))


PROFILE_PAUSE_S = 0.0005  # between timed runs in a serving process (measure_latency's pause_s)


class VariantEngine:
    """A variant served in this process (an ``Engine``). ``run_slots``: shared by the
    process's engines (None: runs one at a time, none inline); ``on_batch(name, images)``
    after each run (e.g. ``Metrics.batch``); ``on_change()`` for whoever changes the
    engine's profile from outside on the event loop (fault injection in tests); the
    replica's re-timing tells the live menu itself."""

    local = True  # runs in this process, in its run slots
    reprofiles = 0  # never goes off the menu, so never comes back re-timed

    def __init__(
        self,
        name: str,
        session: ort.InferenceSession,
        settings: EngineSettings,
        *,
        run_slots: RunSlots | None = None,
        on_batch: Callable[[str, int], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.session, self.settings = name, session, settings
        self.run_slots, self.on_batch, self.on_change = run_slots, on_batch, on_change
        self.input_name = session.get_inputs()[0].name
        self.stats = LiveCounters()
        self.replicas = 1
        self.latency_p95_ms = None  # set by profile(): p95 per batch size, timed where it serves
        self.profile_s: float | None = None
        self.available = True  # in-process: always (a RemoteEngine goes down with its replica)
        self._pending: list[Pending] = []
        self._workers: set[asyncio.Task] = set()  # each takes batches and runs them, one at a time
        self._idle_workers: set[asyncio.Task] = set()  # of those, the ones not in a run now
        # runs yield the CPU to the event loop (run_niceness): under overload the loop must
        # keep reading, refusing and answering requests; a run can wait a little
        self._closed = False
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, settings.max_runs),
            thread_name_prefix=f"ort-{name}",
            initializer=_lower_priority,
            initargs=(settings.run_niceness,),
        )
        self._running: list[int] = []  # the images of each batch in ORT now
        self._run_ms_of = self._run_ms  # bound once: handed to batches_ms on every request

    @classmethod
    def load(cls, name: str, path: Path, sha256: str, settings: EngineSettings, **wiring) -> VariantEngine:
        """Check the file against its manifest hash, then open it in ORT; ``wiring``: the
        constructor's keyword arguments. The bytes hashed are the bytes opened, so the file
        cannot be swapped between the check and the load."""
        model = path.read_bytes()
        actual = hashlib.sha256(model).hexdigest()
        if actual != sha256:
            raise CorruptArtifact(f"{name}: {path} has sha256 {actual[:12]}, manifest says {sha256[:12]}")
        return cls(name, open_session(model, threads=settings.threads), settings, **wiring)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Synchronous inference on one batch, bypassing the batcher (profiling, checks)."""
        return self.session.run(None, {self.input_name: x})[0]

    def profile(self, input_shape: tuple[int, ...], batch_sizes: tuple[int, ...], budget_s: float) -> None:
        """Time this session in the process, thread count and CPU share that will serve it,
        before any traffic: p95 ms per batch size, which routing then uses."""
        started = time.perf_counter()
        sample = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
        measured = measure_latency(  # paused between runs: the event loop serves meanwhile
            self.session,
            sample,
            batch_sizes,
            warmup_runs=2,
            min_runs=5,
            budget_s=budget_s,
            pause_s=PROFILE_PAUSE_S,
        )
        self.latency_p95_ms = {b: stats.p95 for b, stats in measured.items()}
        self.profile_s = time.perf_counter() - started

    @property
    def latency_p95_ms(self) -> dict[int, float] | None:
        return self._latency_p95_ms

    @latency_p95_ms.setter
    def latency_p95_ms(self, value: dict[int, float] | None) -> None:
        self._latency_p95_ms = value
        self._profile = VariantProfile(self.name, 0.0, value) if value else None

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """Logits for ``x`` (N, C, H, W), batched with concurrent callers. With a
        ``deadline`` (``time.monotonic()``), a request the queue cannot finish in time is
        refused at once (``QueueFull``), and one still waiting at its deadline is dropped
        from the queue (``DeadlineExceeded``)."""
        if len(self._pending) >= self.settings.max_queued:
            raise QueueFull(f"{self.name}: {len(self._pending)} requests queued")
        if deadline is not None:
            left_ms = (deadline - time.monotonic()) * 1000
            wait_ms = self.expected_wait_ms(len(x))
            if wait_ms > left_ms:
                raise QueueFull(
                    f"{self.name}: the queue ({len(self._pending)} requests) needs about {wait_ms:.0f} ms, "
                    f"past the request's deadline ({max(0.0, left_ms):.0f} ms left)"
                )
        loop = asyncio.get_running_loop()
        pending = Pending(x, loop.create_future(), deadline)
        self._pending.append(pending)
        self.stats.in_flight += 1
        self._add_worker(loop)
        # at the deadline the future fails (the batcher skips answered futures): a timer
        # handle per request, cheaper than wrapping the wait in asyncio.wait_for
        # (call_later: a loop's own clock need not be time.monotonic(); uvloop's is not)
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire, pending)
        try:
            return await pending.future
        finally:
            self.stats.in_flight -= 1
            if timer is not None:
                timer.cancel()

    def _expire(self, pending: Pending) -> None:
        if not pending.future.done():
            pending.future.set_exception(
                DeadlineExceeded(f"{self.name}: the deadline passed while the request was queued")
            )

    @property
    def max_runs(self) -> int:
        """Batches of this variant that may run at once: ``settings.max_runs`` within the
        process's run slots; one at a time where there are none (a variant's own replica)."""
        if self.run_slots is None:
            return 1
        return max(1, min(self.settings.max_runs, self.run_slots.size))

    def expected_wait_ms(self, images: int = 1) -> float:
        """Until ``images`` more would be answered: the queued images in full batches, run
        ``max_runs`` at a time, plus a batch running now, at the profiled speed scaled by
        the recent slowdown."""
        queued = self._images_pending() + images
        largest = self.settings.max_batch_size
        running = self._run_ms(min(queued, largest)) if self._running else 0.0
        return batches_ms(queued, largest, self.max_runs, self._run_ms_of) + running

    def queued_work_ms(self) -> float:
        """Run time still ahead on this variant: its waiting images in full batches plus the
        batches running now, at the profiled speed scaled by the slowdown. A running batch
        counts whole, not what is left of it: a new run shares the cores with it to the end
        (counting what is left predicted too little, BENCHMARKS.md)."""
        running = sum(self._run_ms(images) for images in self._running)
        return batches_ms(self._images_pending(), self.settings.max_batch_size, 1, self._run_ms_of) + running

    def _add_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start a worker for the waiting requests when every worker there is runs a batch
        and fewer than ``max_runs`` are: a busy variant takes the free cores instead of
        queueing behind its own run."""
        # a worker cancelled before its first step (its loop ended, or close()) never ran
        # its own clean-up
        self._workers = {worker for worker in self._workers if not worker.done()}
        self._idle_workers &= self._workers
        if self._pending and not self._idle_workers and len(self._workers) < self.max_runs:
            worker = loop.create_task(self._work())
            self._workers.add(worker)
            self._idle_workers.add(worker)  # idle from now: requests until it starts need no other

    async def _work(self) -> None:
        """Take batches and run them, each in a run slot (a core) of the process, while
        requests wait; then end."""
        loop, me = asyncio.get_running_loop(), asyncio.current_task()
        try:
            while self._pending:
                # Requests that arrive while a batch runs form the next batch on their own; an
                # extra wait only pays under steady load, so it is opt-in (0 by default).
                deadline = loop.time() + self.settings.batch_wait_timeout_s
                while self._images_pending() < self.settings.max_batch_size and loop.time() < deadline:
                    await asyncio.sleep(min(0.0005, max(0.0, deadline - loop.time())))
                async with self.run_slots.semaphore if self.run_slots else contextlib.nullcontext():
                    batch = self._take_batch()
                    if not batch:  # taken by another worker, or every one passed its deadline
                        continue
                    self._idle_workers.discard(me)
                    self._add_worker(loop)  # for the requests this batch left waiting
                    try:
                        await self._run_batch(batch, loop)
                    finally:
                        self._idle_workers.add(me)
        finally:
            self._idle_workers.discard(me)
            self._workers.discard(me)

    async def _run_batch(self, batch: list[Pending], loop: asyncio.AbstractEventLoop) -> None:
        """Run one batch (taken by ``_take_batch`` as it got its run slot) and answer each
        request in it, whatever happens: no caller is left waiting. The slowdown counts the
        run alone: the wait for a run slot is the gateway's shared-wait estimate
        (``Gateway.live``)."""
        images = sum(len(p.x) for p in batch)
        self._running.append(images)
        try:
            stacked = np.concatenate([p.x for p in batch]) if len(batch) > 1 else batch[0].x
            started = time.perf_counter()
            if self.run_slots is not None and self.run_slots.inline(self._run_ms(images)):
                self.run_slots.inline_runs += 1
                logits = self.run(stacked)
            else:
                logits = await loop.run_in_executor(self._executor, self.run, stacked)
            ran_ms = (time.perf_counter() - started) * 1000
            offset = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(logits[offset : offset + len(p.x)])
                offset += len(p.x)
        except Exception as error:  # ORT errors go to every caller in the batch
            self.stats.failed += len(batch)
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        finally:
            self._running.remove(images)
            for p in batch:  # cancelled mid-run (the engine closed)
                if not p.future.done():
                    p.future.set_exception(VariantFailed(f"{self.name}: the engine closed during the run"))
        self.stats.completed += len(batch)
        try:
            self._record_run(ran_ms, images)
        except Exception:  # a metrics hook must not take the worker (and the queue) with it
            log.exception("%s: recording a run failed", self.name)

    def _record_run(self, ran_ms: float, images: int) -> None:
        self.stats.record(ran_ms, images)
        if self._profile is not None:
            self.stats.record_slowdown(ran_ms / service_time_ms(self._profile, images))
        if self.on_batch is not None:
            self.on_batch(self.name, images)

    def _images_pending(self) -> int:
        return sum(len(p.x) for p in self._pending)

    def _take_batch(self) -> list[Pending]:
        """The oldest requests whose images fit in one batch (``take_batch``)."""
        return take_batch(self._pending, self.settings.max_batch_size, self._run_ms(1) / 1000, self.name)

    def _run_ms(self, batch_size: int) -> float:
        """Expected ms of one run of ``batch_size`` now: profiled, times the recent slowdown
        (0 before profiling)."""
        if self._profile is None:
            return 0.0
        return service_time_ms(self._profile, batch_size) * self.stats.slowdown

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop: running batches are cancelled and every queued request is answered
        ``VariantFailed`` at once (the gateway retries it elsewhere), none left waiting."""
        self._closed = True
        for worker in list(self._workers):
            worker.cancel()
        for pending in self._pending:
            if not pending.future.done():
                pending.future.set_exception(VariantFailed(f"{self.name}: the engine closed"))
        self._pending.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
