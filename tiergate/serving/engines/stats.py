"""What an engine has seen lately, for routing, metrics and /v1/variants.

``Ewma`` is the one exponentially weighted average the serving code keeps (run latency,
the actor hop, the slowdown against the profile, the gateway's own overhead):

    hop = Ewma(0.1, initial=0.0)
    hop.update(2.5)  # 0.9 * previous + 0.1 * 2.5
    hop.value

``LiveCounters`` are one engine's counters; its clock is injectable, so tests can move
time instead of sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Ewma:
    """An exponentially weighted moving average: each ``update`` keeps ``1 - sample_weight``
    of the value and adds ``sample_weight`` of the sample. With no ``initial`` value the
    first sample is taken as it is (``value`` is None until then)."""

    __slots__ = ("_keep", "sample_weight", "value")

    def __init__(self, sample_weight: float, initial: float | None = None) -> None:
        if not 0.0 < sample_weight <= 1.0:
            raise ValueError(f"sample_weight must be in (0, 1], got {sample_weight}")
        self.sample_weight, self._keep = sample_weight, 1.0 - sample_weight
        self.value = initial

    def update(self, sample: float) -> float:
        value = self.value
        self.value = sample if value is None else self._keep * value + self.sample_weight * sample
        return self.value


class LiveCounters:
    """One engine's live counters: requests in flight, answered and failed, recent run
    latency and batch sizes, the cost of reaching the variant, and its slowdown."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_flight = 0  # requests queued or running
        self.completed = 0
        self.failed = 0
        self.batch_sizes: list[int] = []  # recent, bounded
        self._clock = clock
        self._run_ms = Ewma(0.2)  # recent run latency
        # recent cost of reaching the variant (0 in-process; the actor hop otherwise)
        self._hop_ms = Ewma(0.1, initial=0.0)
        # recent run time / profiled p95 at that batch size (contention shows here)
        self._slowdown = Ewma(0.1, initial=1.0)
        self._slowdown_at = 0.0  # clock time of the last update

    @property
    def ewma_ms(self) -> float | None:
        """Recent run latency (None before the first run)."""
        return self._run_ms.value

    @property
    def hop_ms(self) -> float:
        return self._hop_ms.value

    @property
    def slowdown(self) -> float:
        """The recent slowdown, relaxing toward 1 with a 2 s half-life when the variant gets
        no traffic (else a variant that was routed away from would never be tried again)."""
        idle_s = self._clock() - self._slowdown_at
        return 1.0 + (self._slowdown.value - 1.0) * 0.5 ** (idle_s / 2.0)

    def record_slowdown(self, ratio: float) -> None:
        self._slowdown.value = self.slowdown  # relaxed to now, then the sample
        self._slowdown.update(min(ratio, 10.0))
        self._slowdown_at = self._clock()

    def reset_slowdown(self) -> None:
        """Forget the slowdown (the variant was re-timed)."""
        self._slowdown.value = 1.0

    def record(self, elapsed_ms: float, batch_size: int) -> None:
        self._run_ms.update(elapsed_ms)
        self.batch_sizes.append(batch_size)
        del self.batch_sizes[:-256]

    def record_hop(self, hop_ms: float) -> None:
        self._hop_ms.update(hop_ms)
