"""A discrete-event loop: a heap of timed callbacks and the virtual clock they share.

    loop = EventLoop()
    loop.at(1.5, print, "hello")     # runs when the clock reaches 1.5 s
    loop.run(until=10.0)
    loop.now                         # 10.0

Events at the same time run in the order they were scheduled, so a run is a pure function
of what was scheduled (and of the seeded draws the callbacks make).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class EventLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, when: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` at clock time ``when`` (now, if ``when`` is past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, callback, args))

    def every(self, period_s: float, callback: Callable[[], Any], start: float = 0.0) -> None:
        """Run ``callback()`` at ``start`` and every ``period_s`` after it."""

        def tick() -> None:
            callback()
            self.at(self.now + period_s, tick)

        self.at(start, tick)

    def run(self, until: float) -> None:
        """Run every event due up to ``until``; the clock then reads ``until``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, callback, args = heapq.heappop(heap)
            self.now = when
            self.events_run += 1
            callback(*args)
        self.now = until

    def clock(self) -> float:
        """The clock as a function, for objects that take one (tiergate's LiveCounters)."""
        return self.now
