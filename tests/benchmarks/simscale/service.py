"""A variant's batch run times, drawn from its measured latency distribution.

    times = ServiceTimes.of(entry, max_batch_size=32)   # entry: a tiergate MenuEntry
    times.sample_ms(batch_size=4, rng=rng)

Each batch size's run time is lognormal with the manifest's p50 as its median and its p95
as its 95th percentile (sigma = ln(p95 / p50) / 1.645); sizes between the profiled ones
take tiergate's own interpolation (``policy.service_time_ms``) of both.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tiergate.profiles.menu import MenuEntry
from tiergate.profiles.policy import VariantProfile, service_time_ms

Z95 = 1.6449  # standard normal 95th percentile


@dataclass(frozen=True)
class ServiceTimes:
    median_ms: tuple[float, ...]  # by batch size (index 0: batch size 1)
    sigma: tuple[float, ...]

    @classmethod
    def of(cls, entry: MenuEntry, max_batch_size: int) -> ServiceTimes:
        p50 = VariantProfile(entry.name, 0.0, {int(b): s.p50 for b, s in entry.latency_ms.items()})
        p95 = VariantProfile(entry.name, 0.0, {int(b): s.p95 for b, s in entry.latency_ms.items()})
        medians, sigmas = [], []
        for batch in range(1, max_batch_size + 1):
            median, high = service_time_ms(p50, batch), service_time_ms(p95, batch)
            medians.append(median)
            sigmas.append(math.log(max(high / median, 1.0)) / Z95)
        return cls(tuple(medians), tuple(sigmas))

    def sample_ms(self, batch_size: int, rng: random.Random) -> float:
        index = batch_size - 1
        return self.median_ms[index] * math.exp(self.sigma[index] * rng.gauss(0.0, 1.0))
