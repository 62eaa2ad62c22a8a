"""The ORT runs one process's in-process engines may make at once, and when a run may
stay on the event loop's thread.

    slots = RunSlots(os.cpu_count(), inline_max_ms=25.0, busy=lambda: requests_inside)
    engine = VariantEngine(name, session, settings, run_slots=slots)  # every engine, one slots

The gateway tells it each request's latency bound (``saw_bound``); the clock is
injectable, so tests can move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class RunSlots:
    """What the engines of one process share.

    At most ``size`` ORT runs at once across them: more runs than cores time-slice the
    cores the event loop needs to read, refuse and answer requests.

    And when a batch may skip the ORT thread: handing a run to it and the answer back
    costs two cross-core wake-ups (BENCHMARKS.md). A batch runs on the event loop's own
    thread when ``busy()`` (the requests that run may hold up: in the replica, those inside
    the process plus one while more than one connection sends them) says it is alone, and
    it is expected to take at most ``inline_max_ms`` and at most ``spare_share`` of the
    tightest latency bound any request had in the last ``memory_s``. A request that arrived
    meanwhile would wait that long to be read, as on a single-threaded server: the share is
    the part of its bound that routing leaves spare (1 - ``serving.routing.latency_headroom``), so a
    ``fast`` request is never held up behind a lone fp32 run while ``fast`` traffic is
    about. Under load ``busy()`` is above 1 and every run goes to the ORT threads.
    """

    def __init__(
        self,
        size: int,
        inline_max_ms: float = 0.0,
        busy: Callable[[], int] = lambda: 0,
        spare_share: float = 1.0,
        memory_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size, self.semaphore = size, asyncio.Semaphore(size)
        self.inline_max_ms, self.busy = inline_max_ms, busy
        self.spare_share, self.memory_s = spare_share, memory_s
        self.inline_runs = 0
        self._clock = clock
        self._tightest_ms, self._tightest_at = math.inf, -math.inf

    def saw_bound(self, max_latency_ms: float | None) -> None:
        """A request routed with this latency bound (None: it has none)."""
        bound = math.inf if max_latency_ms is None else max_latency_ms
        now = self._clock()
        if bound <= self._tightest_ms or now - self._tightest_at > self.memory_s:
            self._tightest_ms, self._tightest_at = bound, now

    def tightest_bound_ms(self) -> float:
        """The tightest bound seen within ``memory_s`` (inf when none was)."""
        if self._clock() - self._tightest_at > self.memory_s:
            return math.inf
        return self._tightest_ms

    def inline(self, expected_ms: float) -> bool:
        """Whether a run expected to take ``expected_ms`` may run on the event loop's thread."""
        longest = min(self.inline_max_ms, self.spare_share * self.tightest_bound_ms())
        return 0.0 < expected_ms <= longest and self.busy() <= 1
