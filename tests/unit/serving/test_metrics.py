"""What the metrics module decides, as pure logic: Ray's metrics stand in as recorders (the
export itself is proven end to end against a real Prometheus in
tests/integration/test_prometheus.py)."""

from __future__ import annotations

import pytest

from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.metrics import LATENCY_BUCKETS_MS, Metrics, latency_boundaries, slo_outcome
from tiergate.serving.quality import Answer, Outcome
from tiergate.serving.trace import Trace


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


class Recorder:
    """Stands in for one Ray metric: what was added to (or set on) it, by tags."""

    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}

    def inc(self, value: float, tags: dict[str, str]) -> None:
        key = tuple(sorted(tags.items()))
        self.values[key] = self.values.get(key, 0.0) + value

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.values[tuple(sorted(tags.items()))] = value


ACCURACY_TIERS = {"fast": Tier(max_latency_ms=5.0, max_accuracy_drop=0.1), "open": Tier()}


@pytest.fixture(scope="module")
def registry(tiny_menu):
    return replica_for(tiny_menu, ACCURACY_TIERS, variants=["fp32", "int8"]).registry


def _recording(registry) -> Metrics:
    metrics = Metrics(ACCURACY_TIERS, registry)
    for name in (
        "in_bound_accuracy",
        "labelled",
        "correct",
        "feedback_items",
        "tier_objective",
        "tier_floor",
    ):
        setattr(metrics, name, Recorder())
    metrics.describe()
    return metrics


def test_in_bound_answers_add_their_variants_offline_accuracy(registry):
    """Two served fast requests within 5 ms and one late add int8's offline accuracy twice;
    a 503 and a request without a tier add nothing."""
    metrics = _recording(registry)
    int8 = registry.get("int8").quality
    for latency_ms, code, tier in ((1.0, 200, "fast"), (4.0, 200, "fast"), (9.0, 200, "fast"),
                                   (1.0, 503, "fast"), (1.0, 200, None)):  # fmt: skip
        metrics.request(
            Trace(tier=tier, variant="int8", reason="best", latency_ms=latency_ms, slo_met=True), code
        )
    metrics.flush()
    assert metrics.in_bound_accuracy.values == {
        (("tier", "fast"), ("variant", "int8")): pytest.approx(2 * int8)
    }


def test_in_bound_answers_add_the_live_estimate_where_lower(tiny_menu):
    """With shadowing holding int8 to a live estimate below its menu accuracy, an in-bound
    answer adds the estimate, not the menu's figure."""
    registry = replica_for(tiny_menu, ACCURACY_TIERS, variants=["fp32", "int8"]).registry
    lower = registry.get("int8").quality - 0.05
    registry.estimate("int8", lower)
    metrics = _recording(registry)
    metrics.request(Trace(tier="fast", variant="int8", reason="best", latency_ms=1.0, slo_met=True), 200)
    metrics.flush()
    assert metrics.in_bound_accuracy.values == {(("tier", "fast"), ("variant", "int8")): pytest.approx(lower)}


def test_feedback_counts_labelled_and_correct_by_bound_and_items_by_outcome(registry):
    """Feedback items become labelled/correct images per tier, variant and bound, and one
    item count per outcome; a zero correct count is never added (Ray refuses 0)."""
    metrics = _recording(registry)
    in_time, late = (Answer(0.0, "int8", "fast", False, bound, (1, 2)) for bound in (True, False))
    metrics.feedback(Outcome.ACCEPTED, in_time, 2, 1)
    metrics.feedback(Outcome.ACCEPTED, late, 2, 0)
    metrics.feedback(Outcome.UNKNOWN, None, 0, 0)
    metrics.flush()
    tags = (("bound", "met"), ("tier", "fast"), ("variant", "int8"))
    late_tags = (("bound", "missed"), ("tier", "fast"), ("variant", "int8"))
    assert metrics.labelled.values == {tags: 2, late_tags: 2}
    assert metrics.correct.values == {tags: 1}
    assert metrics.feedback_items.values == {(("outcome", "accepted"),): 2, (("outcome", "unknown"),): 1}


def test_accuracy_objective_gauge_is_the_floor_times_the_slo_target(registry):
    """fast's floor is fp32's accuracy - 0.1 and its objective that x 0.99; a tier without
    a floor has neither."""
    metrics = _recording(registry)
    metrics.flush()
    fp32 = registry.get("fp32").quality
    assert metrics.tier_floor.values == {(("tier", "fast"),): pytest.approx(fp32 - 0.1)}
    assert metrics.tier_objective.values == {(("tier", "fast"),): pytest.approx((fp32 - 0.1) * 0.99)}
