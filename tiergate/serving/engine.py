"""One variant's ONNX Runtime session behind a dynamic batcher, with live stats.

    engine = VariantEngine.load("int8", Path("model.onnx"), sha256, EngineSettings(threads=1))
    logits = await engine.infer(batch)  # (N, K); concurrent calls share ORT runs

Requests that wait while the variant's runs hold every run slot it may use (and, when
set, for ``batch_wait_timeout_s``) are stacked into one ``session.run`` of at most
``max_batch_size`` images; up to ``max_runs`` such batches run at once. The queue is
bounded: past ``max_queued`` waiting requests ``infer`` raises ``QueueFull`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tiergate.compression.cache import file_sha256
from tiergate.profiles.measure import measure_latency, open_session
from tiergate.profiles.policy import VariantProfile, service_time_ms

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The variant's queue is at its bound; the caller should shed load (429)."""


class InjectedFault(RuntimeError):
    """A failure injected on purpose (``fault_rate``), for chaos tests and drills."""


class VariantFailed(RuntimeError):
    """A variant's deployment failed to answer (its replica died, or its run raised)."""


_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def remote_reason(error: BaseException) -> str:
    """One line for logs and answers: a remote error's cause and message, without the
    traceback, pid, address and actor id that Ray puts in the text of its errors."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    lines = (_ANSI_COLOUR.sub("", line).strip() for line in str(error).splitlines())
    lines = [line for line in lines if line and "(pid=" not in line]  # Ray's "ray::Actor (pid=...)"
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed while it waited; it was dropped from the queue."""


class CorruptArtifact(RuntimeError):
    """The ONNX file's sha256 does not match the manifest: it is never loaded."""


@dataclass(frozen=True)
class EngineSettings:
    threads: int = 1
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.0
    max_queued: int = 256
    run_niceness: int = 0  # added to the nice value of the threads that run ORT
    # runs of this variant at once, within the run slots its process shares (without
    # shared run slots, one at a time)
    max_runs: int = 1


def _lower_priority(increment: int) -> None:
    """Raise this thread's nice value by ``increment`` (Linux: nice is per thread; the
    kernel caps it at 19; raising it needs no privilege)."""
    if increment > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))


class RunSlots:
    """What the engines of one process share.

    At most ``size`` ORT runs at once across them: more runs than cores time-slice the
    cores the event loop needs to read, refuse and answer requests.

    And when a batch may skip the ORT thread: handing a run to it and the answer back
    costs two cross-core wake-ups (measured here: ~0.45 ms of a 6 ms request at
    concurrency 1, ~1 ms of a 17 ms one). A batch runs on the event loop's own thread when
    ``busy()`` (the requests that run may hold up: in the replica, those inside the process
    plus one while more than one connection sends them) says it is alone, and it is
    expected to take at most ``inline_max_ms`` and at most ``spare_share`` of the tightest
    latency bound any request had in the last ``memory_s``. A request that arrived meanwhile
    would wait that long to be read, as on a single-threaded server: the share is the part
    of its bound that routing leaves spare (1 - ``serving.routing.latency_headroom``), so a ``fast``
    request is never held up behind a lone fp32 run while ``fast`` traffic is about. Under
    load ``busy()`` is above 1 and every run goes to the ORT threads.
    """

    def __init__(
        self,
        size: int,
        inline_max_ms: float = 0.0,
        busy: Callable[[], int] = lambda: 0,
        spare_share: float = 1.0,
        memory_s: float = 10.0,
    ) -> None:
        self.size, self.semaphore = size, asyncio.Semaphore(size)
        self.inline_max_ms, self.busy = inline_max_ms, busy
        self.spare_share, self.memory_s = spare_share, memory_s
        self.inline_runs = 0
        self._tightest_ms, self._tightest_at = math.inf, -math.inf

    def saw_bound(self, max_latency_ms: float | None) -> None:
        """A request routed with this latency bound (None: it has none)."""
        bound = math.inf if max_latency_ms is None else max_latency_ms
        now = time.monotonic()
        if bound <= self._tightest_ms or now - self._tightest_at > self.memory_s:
            self._tightest_ms, self._tightest_at = bound, now

    def tightest_bound_ms(self) -> float:
        """The tightest bound seen within ``memory_s`` (inf when none was)."""
        if time.monotonic() - self._tightest_at > self.memory_s:
            return math.inf
        return self._tightest_ms

    def inline(self, expected_ms: float) -> bool:
        longest = min(self.inline_max_ms, self.spare_share * self.tightest_bound_ms())
        return 0.0 < expected_ms <= longest and self.busy() <= 1


@dataclass
class LiveCounters:
    in_flight: int = 0  # requests queued or running
    completed: int = 0
    failed: int = 0
    ewma_ms: float | None = None  # recent run latency
    hop_ms: float = 0.0  # recent cost of reaching the variant (0 in-process; the actor hop otherwise)
    slowdown_ewma: float = 1.0  # recent run time / profiled p95 at that batch size (contention shows here)
    slowdown_at: float = 0.0  # monotonic time of the last update
    batch_sizes: list[int] = field(default_factory=list)  # recent, bounded

    @property
    def slowdown(self) -> float:
        """The recent slowdown, relaxing toward 1 with a 2 s half-life when the variant gets
        no traffic (else a variant that was routed away from would never be tried again)."""
        idle_s = time.monotonic() - self.slowdown_at
        return 1.0 + (self.slowdown_ewma - 1.0) * 0.5 ** (idle_s / 2.0)

    def record_slowdown(self, ratio: float) -> None:
        self.slowdown_ewma = 0.9 * self.slowdown + 0.1 * min(ratio, 10.0)
        self.slowdown_at = time.monotonic()

    def record(self, elapsed_ms: float, batch_size: int) -> None:
        self.ewma_ms = elapsed_ms if self.ewma_ms is None else 0.8 * self.ewma_ms + 0.2 * elapsed_ms
        self.batch_sizes.append(batch_size)
        del self.batch_sizes[:-256]


@dataclass
class _Pending:
    x: np.ndarray
    future: asyncio.Future
    deadline: float | None = None  # time.monotonic()


class VariantEngine:
    def __init__(self, name: str, session: ort.InferenceSession, settings: EngineSettings) -> None:
        self.name, self.session, self.settings = name, session, settings
        self.input_name = session.get_inputs()[0].name
        self.stats = LiveCounters()
        self.replicas = 1
        self.latency_p95_ms = None  # set by profile(): p95 per batch size, timed where it serves
        self.profile_s: float | None = None
        self.on_batch: Callable[[str, int], None] | None = None  # e.g. Metrics.batch
        self.on_change: Callable[[], None] | None = None  # the gateway refreshes its catalog
        self.fault_rate = 0.0  # fraction of runs that raise InjectedFault (chaos testing only)
        self.fault_delay_s = 0.0  # extra seconds every run takes (chaos testing only)
        self._unfaulted_p95_ms: dict[int, float] | None = None
        self.available = True  # in-process: always (a RemoteEngine goes down with its replica)
        self._chaos = random.Random(0)
        self._pending: list[_Pending] = []
        self._workers: set[asyncio.Task] = set()  # each takes batches and runs them, one at a time
        self._idle_workers: set[asyncio.Task] = set()  # of those, the ones not in a run now
        # runs yield the CPU to the event loop (run_niceness): under overload the loop must
        # keep reading, refusing and answering requests; a run can wait a little
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, settings.max_runs),
            thread_name_prefix=f"ort-{name}",
            initializer=_lower_priority,
            initargs=(settings.run_niceness,),
        )
        self._running: list[int] = []  # the images of each batch in ORT now
        self.run_slots: RunSlots | None = None  # shared by the process's engines (set by their owner)

    @classmethod
    def load(cls, name: str, path: Path, sha256: str, settings: EngineSettings) -> VariantEngine:
        """Check the file against its manifest hash, then open it in ORT."""
        actual = file_sha256(path)
        if actual != sha256:
            raise CorruptArtifact(f"{name}: {path} has sha256 {actual[:12]}, manifest says {sha256[:12]}")
        return cls(name, open_session(path, threads=settings.threads), settings)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Synchronous inference on one batch, bypassing the batcher (profiling, checks)."""
        if self.fault_rate and self._chaos.random() < self.fault_rate:
            raise InjectedFault(f"{self.name}: injected fault (fault_rate {self.fault_rate})")
        if self.fault_delay_s:
            time.sleep(self.fault_delay_s)
        return self.session.run(None, {self.input_name: x})[0]

    def inject_fault(self, rate: float, delay_s: float = 0.0) -> None:
        """Chaos: ``rate`` of runs fail, and every run takes ``delay_s`` longer, with the
        profile routing uses slowed to match (as a re-profile on slower hardware would)."""
        if self._unfaulted_p95_ms is None:
            self._unfaulted_p95_ms = dict(self.latency_p95_ms or {})
        slowed = {b: ms + 1000 * delay_s for b, ms in self._unfaulted_p95_ms.items()}
        self.latency_p95_ms = slowed or None
        self.fault_rate, self.fault_delay_s = rate, delay_s
        if self.on_change is not None:
            self.on_change()

    def profile(self, input_shape: tuple[int, ...], batch_sizes: tuple[int, ...], budget_s: float) -> None:
        """Time this session in the process, thread count and CPU share that will serve it,
        before any traffic: p95 ms per batch size, which routing then uses."""
        started = time.perf_counter()
        sample = np.random.default_rng(0).standard_normal((1, *input_shape), dtype=np.float32)
        measured = measure_latency(
            self.session, sample, batch_sizes, warmup_runs=2, min_runs=5, budget_s=budget_s
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
        pending = _Pending(x, loop.create_future(), deadline)
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

    def _expire(self, pending: _Pending) -> None:
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
        ``max_runs`` at a time (a batch is never split across runs), plus a batch running
        now, at the profiled speed scaled by the recent slowdown."""
        queued = self._images_pending() + images
        running = self._run_ms(min(queued, self.settings.max_batch_size)) if self._running else 0.0
        return self._batches_ms(queued, at_once=self.max_runs) + running

    def queued_work_ms(self) -> float:
        """Run time still ahead on this variant: its waiting images in full batches plus the
        batches running now, at the profiled speed scaled by the slowdown. A running batch
        counts whole, not what is left of it: a new run shares the cores with it to the end
        (measured at 2x load, counting what is left missed the bound 2-3x as often)."""
        running = sum(self._run_ms(images) for images in self._running)
        return self._batches_ms(self._images_pending()) + running

    def _batches_ms(self, images: int, at_once: int = 1) -> float:
        """Run time for ``images`` in full batches (the last as long as a full one), run
        ``at_once`` at a time."""
        largest = self.settings.max_batch_size
        rounds = math.ceil(math.ceil(images / largest) / at_once)
        return rounds * self._run_ms(min(images, largest)) if images else 0.0

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

    async def _run_batch(self, batch: list[_Pending], loop: asyncio.AbstractEventLoop) -> None:
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

    def _take_batch(self) -> list[_Pending]:
        """The oldest requests whose images fit in one batch. A request that was cancelled
        (its client left) is skipped, and one that could no longer finish by its deadline
        is answered ``DeadlineExceeded`` now instead of taking a run whose answer would come
        too late (under overload, running those would leave no run for anyone else)."""
        taken, images = [], 0
        now, run_s = time.monotonic(), self._run_ms(1) / 1000
        while self._pending and (
            not taken or images + len(self._pending[0].x) <= self.settings.max_batch_size
        ):
            request = self._pending.pop(0)
            if request.future.done():
                continue
            if request.deadline is not None and request.deadline - now < run_s:
                request.future.set_exception(
                    DeadlineExceeded(f"{self.name}: it could no longer be answered by its deadline")
                )
                continue
            taken.append(request)
            images += len(request.x)
        return taken

    def _run_ms(self, batch_size: int) -> float:
        """Expected ms of one run of ``batch_size`` now: profiled, times the recent slowdown
        (0 before profiling)."""
        if self._profile is None:
            return 0.0
        return service_time_ms(self._profile, batch_size) * self.stats.slowdown

    def close(self) -> None:
        for worker in list(self._workers):
            worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


class RemoteEngine:
    """A variant served by its own Ray Serve deployment (``topology: per_variant``), seen
    through a deployment handle with the same interface as ``VariantEngine``.

    The handle's ``infer`` returns ``(logits, ms spent in the replica)``; the rest of the
    round trip is the hop, tracked so routing can add it to its latency prediction.

    A call that fails (a dead replica, an error, no answer in time) takes the variant off
    the menu (``available`` false) until a background probe has re-timed it on a live
    replica: the variant comes back with the latency of the replica that now serves it.
    """

    def __init__(
        self, name: str, handle, latency_p95_ms: dict[int, float], replicas: int, max_queued: int,
        timeout_s: float = 5.0,
    ):  # fmt: skip
        self.name, self.handle, self.replicas, self.max_queued = name, handle, replicas, max_queued
        self.timeout_s = timeout_s
        self.latency_p95_ms = latency_p95_ms
        self.stats = LiveCounters()
        self.available = True
        self.reprofiles = 0  # times the variant came back after a failure
        self.on_change: Callable[[], None] | None = None  # the gateway refreshes its catalog
        self._probe: asyncio.Task | None = None

    async def infer(self, x: np.ndarray, deadline: float | None = None) -> np.ndarray:
        from ray.serve.exceptions import BackPressureError

        if self.stats.in_flight >= self.max_queued:
            raise QueueFull(f"{self.name}: {self.stats.in_flight} requests in flight")
        timeout_s = self.timeout_s
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, deadline - time.monotonic()))
        self.stats.in_flight += 1
        started = time.perf_counter()
        response = self.handle.infer.remote(x, timeout_s)
        try:
            logits, served_ms = await asyncio.wait_for(response, timeout_s)
        except TimeoutError:
            response.cancel()  # wait_for only stops waiting; the replica would still run it
            if timeout_s < self.timeout_s:
                raise DeadlineExceeded(f"{self.name}: the deadline passed before an answer") from None
            self._failed(f"no answer within {self.timeout_s} s")
            raise TimeoutError(f"{self.name}: no answer within {self.timeout_s} s") from None
        except BackPressureError as error:
            raise QueueFull(f"{self.name}: {error}") from None
        except (QueueFull, DeadlineExceeded) as error:
            # raised in the replica: Ray re-raises a RayTaskError that is also the cause's type,
            # whose text is the replica's traceback; pass on the cause's own message
            cause = getattr(error, "cause", error)
            raise type(cause)(str(cause)) from None
        except Exception as error:
            reason = remote_reason(error)
            self._failed(reason)
            raise VariantFailed(f"{self.name}: {reason}") from error
        finally:
            self.stats.in_flight -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.hop_ms = 0.9 * self.stats.hop_ms + 0.1 * max(0.0, elapsed_ms - served_ms)
        self.stats.record(served_ms, len(x))
        self.stats.completed += 1
        return logits

    def _failed(self, why: str) -> None:
        self.stats.failed += 1
        if not self.available:
            return
        log.warning("variant %s off the menu until a live replica re-times it: %s", self.name, why)
        self.available = False
        if self.on_change is not None:
            self.on_change()
        # a fresh context: the probe's log lines belong to no request
        self._probe = asyncio.get_running_loop().create_task(
            self._return_when_retimed(), context=contextvars.Context()
        )

    async def _return_when_retimed(self, every_s: float = 0.5) -> None:
        """Ask the deployment to time the variant again until a replica answers (Serve
        restarts a dead one meanwhile); then put the variant back with that timing."""
        attempt = 0
        while True:
            attempt += 1
            try:
                latency = await asyncio.wait_for(self.handle.retime.remote(), self.timeout_s + 10)
            except Exception as error:
                if attempt % 10 == 1:
                    reason = remote_reason(error)
                    log.info("variant %s: re-timing attempt %d failed: %s", self.name, attempt, reason)
                await asyncio.sleep(every_s)
                continue
            self.latency_p95_ms = {int(b): ms for b, ms in latency.items()}
            self.available, self.reprofiles = True, self.reprofiles + 1
            self.stats.slowdown_ewma = 1.0
            log.warning("variant %s back on the menu, re-timed: batch-1 p95 %.2f ms",
                        self.name, self.latency_p95_ms[1])  # fmt: skip
            if self.on_change is not None:
                self.on_change()
            return

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
