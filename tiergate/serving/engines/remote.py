"""A variant served by its own Ray Serve deployment (``topology: per_variant``), seen
through a deployment handle as an ``Engine``, like an in-process variant.

    engine = RemoteEngine("int8", handle, latency_p95_ms, replicas=2, max_queued=256, on_change=changes)
    logits = await engine.infer(batch, deadline)

The handle's ``infer`` returns ``(logits, ms spent in the replica)``; the rest of the
round trip is the hop, tracked so routing can add it to its latency prediction.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable

import numpy as np

from tiergate.serving.engines.errors import DeadlineExceeded, QueueFull, VariantFailed, remote_reason
from tiergate.serving.engines.stats import LiveCounters

log = logging.getLogger(__name__)


class RemoteEngine:
    """A call that fails (a dead replica, an error, no answer in time) takes the variant off
    the menu (``available`` false) until a background probe has re-timed it on a live
    replica: the variant comes back with the latency of the replica that now serves it, and
    ``on_change()`` is called both times (the gateway refreshes its catalog)."""

    local = False  # runs in its own deployment's replicas
    profile_s = None  # timed in its replica, not here

    def __init__(
        self, name: str, handle, latency_p95_ms: dict[int, float], replicas: int, max_queued: int,
        timeout_s: float = 5.0, *, on_change: Callable[[], None] | None = None,
    ):  # fmt: skip
        self.name, self.handle, self.replicas, self.max_queued = name, handle, replicas, max_queued
        self.timeout_s = timeout_s
        self.latency_p95_ms = latency_p95_ms
        self.on_change = on_change
        self.stats = LiveCounters()
        self.available = True
        self.reprofiles = 0  # times the variant came back after a failure
        self._probe: asyncio.Task | None = None
        self.closed = False

    def queued_work_ms(self) -> float:
        """0.0: the variant's queue is in its own replicas, not in this process's run slots."""
        return 0.0

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
        self.stats.record_hop(max(0.0, elapsed_ms - served_ms))
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
            self.stats.reset_slowdown()
            log.warning("variant %s back on the menu, re-timed: batch-1 p95 %.2f ms",
                        self.name, self.latency_p95_ms[1])  # fmt: skip
            if self.on_change is not None:
                self.on_change()
            return

    async def retime(self, force: bool = False) -> None:
        """Ask the variant's deployment to time it again (an admin's re-profile: ``force``)."""
        latency = await self.handle.retime.remote(force=force)
        self.latency_p95_ms = {int(b): ms for b, ms in latency.items()}
        if self.on_change is not None:
            self.on_change()

    def close(self) -> None:
        self.closed = True
        if self._probe is not None:
            self._probe.cancel()
