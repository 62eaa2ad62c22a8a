"""Live fidelity: how often a variant's top-1 agreed with the reference variant's (fp32) on
the images shadow sampling compared, over a sliding window per variant, with its Wilson
interval.

    live = LiveFidelity(window_samples=1000, window_s=3600, clock=time.monotonic)
    live.add("int8", agreed=7, compared=8)      # one shadowed request of 8 images
    figures = live.of("int8")                   # Fidelity(compared=8, agreed=7)
    figures.interval()                          # Wilson 95%: (0.53, 0.98)

The window holds each variant's last ``window_samples`` images, none older than
``window_s`` (by the injected clock). Single-threaded: call it from the event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from tiergate.profiles.measure import wilson_interval

Z95 = 1.96


class Fidelity(NamedTuple):
    """A variant's comparisons in the window: images compared, and of them agreed."""

    compared: int
    agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def interval(self, z: float = Z95) -> tuple[float, float]:
        """Wilson score interval (95% by default); (0, 1) with nothing compared."""
        return wilson_interval(self.agreed, self.compared, z)


class Window:
    """One variant's last ``max_samples`` comparisons (one per image), none older than ``max_age_s``."""

    def __init__(self, max_samples: int, max_age_s: float, clock: Callable[[], float]) -> None:
        self.max_samples, self.max_age_s, self.clock = max_samples, max_age_s, clock
        self._samples: deque[tuple[float, bool]] = deque()  # (clock time, agreed), oldest first
        self._agreed = 0

    def add(self, agreed: int, compared: int) -> None:
        now = self.clock()
        for position in range(compared):
            self._samples.append((now, position < agreed))
            self._agreed += position < agreed
        while len(self._samples) > self.max_samples:
            self._drop()
        self._expire(now)

    def figures(self) -> Fidelity:
        self._expire(self.clock())
        return Fidelity(len(self._samples), self._agreed)

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0][0] > self.max_age_s:
            self._drop()

    def _drop(self) -> None:
        _, agreed = self._samples.popleft()
        self._agreed -= agreed


class LiveFidelity:
    """A ``Window`` per variant, made on its first comparison."""

    def __init__(
        self, window_samples: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_samples, self.window_s, self.clock = window_samples, window_s, clock
        self._windows: dict[str, Window] = {}

    def add(self, variant: str, agreed: int, compared: int) -> Fidelity:
        """Count one comparison of ``compared`` images; the variant's figures after it."""
        window = self._windows.get(variant)
        if window is None:
            window = self._windows[variant] = Window(self.window_samples, self.window_s, self.clock)
        window.add(agreed, compared)
        return window.figures()

    def of(self, variant: str) -> Fidelity:
        window = self._windows.get(variant)
        return window.figures() if window is not None else Fidelity(0, 0)

    def reset(self, variant: str) -> None:
        """Forget the variant's comparisons (at a demotion: re-admission counts from then)."""
        self._windows.pop(variant, None)
