"""What a simulation run records, per time bin, and the criteria that judge it.

    recorder = Recorder(["fp32", "int8"], bound_ms=60.0, bin_s=10.0, horizon_s=480.0)
    recorder.answered(arrived=12.3, variant="fp32", latency_ms=21.0, quality=0.928)
    recorder.share("fp32")        # per bin: the variant's share of the requests that arrived
    reversals([10, 12, 15, 15, 13, 14])    # 2: up, then down, then up again

Requests count in the bin they arrived in, so a bin's figures are complete once its
requests are answered (the last bin's may not be at the horizon).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


class Recorder:
    def __init__(self, variants: list[str], bound_ms: float, bin_s: float, horizon_s: float) -> None:
        self.variants, self.bound_ms, self.bin_s = variants, bound_ms, bin_s
        self.bins = math.ceil(horizon_s / bin_s)
        self.arrivals = [0] * self.bins
        self.served = {name: [0] * self.bins for name in variants}
        self.within = [0] * self.bins  # answered within the tier's bound
        self.within_quality = [0.0] * self.bins  # sum of the serving variant's accuracy over those
        self.refusals: dict[str, list[int]] = {}
        self.replicas = {name: [0] * self.bins for name in variants}  # routable, at the bin's end
        self.scalings: dict[str, list[tuple[float, int]]] = {name: [] for name in variants}

    def _bin(self, t: float) -> int:
        return min(int(t / self.bin_s), self.bins - 1)

    def arrived(self, t: float) -> None:
        self.arrivals[self._bin(t)] += 1

    def refused(self, arrived: float, why: str) -> None:
        counts = self.refusals.setdefault(why, [0] * self.bins)
        counts[self._bin(arrived)] += 1

    def answered(self, arrived: float, variant: str, latency_ms: float, quality: float) -> None:
        index = self._bin(arrived)
        self.served[variant][index] += 1
        if latency_ms <= self.bound_ms:
            self.within[index] += 1
            self.within_quality[index] += quality

    def scaled(self, t: float, variant: str, replicas: int) -> None:
        self.scalings[variant].append((t, replicas))

    def snapshot(self, t: float, running: dict[str, int]) -> None:
        """The replica counts at ``t``, the end of a bin."""
        index = self._bin(t - 1e-9)
        for name, count in running.items():
            self.replicas[name][index] = count

    def times(self) -> np.ndarray:
        """Each bin's end, in seconds."""
        return (np.arange(self.bins) + 1) * self.bin_s

    def share(self, variant: str) -> np.ndarray:
        return _ratio(np.array(self.served[variant], float), np.array(self.arrivals, float))

    def attainment(self) -> np.ndarray:
        return _ratio(np.array(self.within, float), np.array(self.arrivals, float))

    def effective_accuracy(self) -> np.ndarray:
        """Per bin, the mean offline accuracy of the answers given within the bound."""
        return _ratio(np.array(self.within_quality), np.array(self.within, float))

    def window(self, start_s: float, end_s: float) -> slice:
        """The bins wholly inside [start_s, end_s)."""
        return slice(math.ceil(start_s / self.bin_s), int(end_s / self.bin_s))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def reversals(counts: list[int]) -> int:
    """How often a replica count changes direction (up then down, or down then up)."""
    steps = [b - a for a, b in itertools.pairwise(counts) if b != a]
    return sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))


def counts_between(scalings: list[tuple[float, int]], start_s: float, end_s: float) -> list[int]:
    """The target replica counts set in [start_s, end_s), in order."""
    return [count for t, count in scalings if start_s <= t < end_s]


def return_time_s(
    shares: np.ndarray, times: np.ndarray, start_s: float, end_s: float, floor: float
) -> float | None:
    """Seconds from ``start_s`` to the end of the first bin from which ``shares`` stays at or
    above ``floor`` in every bin that ends by ``end_s``; None if it never does."""
    inside = (times > start_s) & (times <= end_s)
    ends, values = times[inside], shares[inside]
    for index in range(len(values)):
        if np.all(values[index:] >= floor):
            return float(ends[index] - start_s)
    return None
