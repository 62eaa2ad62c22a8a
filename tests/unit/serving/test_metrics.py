"""What the metrics module decides, as pure logic (the export itself is proven end to end
against a real Prometheus in tests/integration/test_prometheus.py)."""

from __future__ import annotations

import pytest

from tiergate.profiles.tiers import Tier
from tiergate.serving.metrics import LATENCY_BUCKETS_MS, latency_boundaries, slo_outcome


def test_latency_buckets_hold_every_tier_bound_exactly():
    """Each tier's max_latency_ms is a bucket boundary, alongside the defaults, sorted."""
    tiers = {"fast": Tier(max_latency_ms=4.2), "balanced": Tier(max_latency_ms=15.0), "any": Tier()}
    bounds = latency_boundaries(tiers)
    assert 4.2 in bounds and 15.0 in bounds and bounds == sorted(set(bounds))
    assert set(map(float, LATENCY_BUCKETS_MS)) <= set(bounds)


@pytest.mark.parametrize(
    ("code", "slo_met", "shed", "outcome"),
    [(200, True, False, "met"), (200, False, False, "missed"), (429, None, False, "missed"),
     (503, None, False, "missed"), (422, None, True, "missed"), (422, None, False, None),
     (404, None, False, None), (413, None, False, None)],
)  # fmt: skip
def test_slo_outcome_counts_service_failures_not_client_errors(code, slo_met, shed, outcome):
    """Served requests count by their SLO flag; 429, 5xx and strict requests shed for latency
    are misses; other client errors do not count."""
    assert slo_outcome(code, slo_met, shed) == outcome
