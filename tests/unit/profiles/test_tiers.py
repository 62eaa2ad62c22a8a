from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiergate.profiles.tiers import RequestSlo, Tier, constraints_for, default_tiers


def test_relative_floor_follows_the_reference():
    """max_accuracy_drop turns into an absolute floor below the fp32 accuracy."""
    constraints = constraints_for(Tier(max_latency_ms=10, max_accuracy_drop=0.01), reference_quality=0.93)
    assert constraints.min_accuracy == pytest.approx(0.92) and constraints.max_latency_ms == 10


def test_tier_refuses_two_floors():
    """A tier with both an absolute and a relative floor is a config error."""
    with pytest.raises(ValueError, match="not both"):
        Tier(min_accuracy=0.9, max_accuracy_drop=0.01)


@pytest.mark.parametrize("field", [{"max_latency_ms": -1}, {"min_accuracy": 1.5}, {"min_accuracy": -0.1}])
def test_malformed_request_slo_is_refused(field):
    """Negative latency and accuracy outside [0, 1] are validation errors."""
    with pytest.raises(ValueError):
        RequestSlo(**field)


@given(
    st.sampled_from(sorted(default_tiers())),
    st.none() | st.floats(0.01, 1000),
    st.none() | st.floats(0, 1),
)
def test_request_can_narrow_but_never_widen_its_tier(name, latency, accuracy):
    """The combined bound is never looser than the tier's nor than the request's."""
    tier = default_tiers()[name]
    combined = constraints_for(tier, 0.93, RequestSlo(max_latency_ms=latency, min_accuracy=accuracy))
    assert combined.max_latency_ms <= tier.max_latency_ms
    if latency is not None:
        assert combined.max_latency_ms <= latency
    assert combined.min_accuracy >= tier.floor(0.93)
    if accuracy is not None:
        assert combined.min_accuracy >= accuracy


def test_accuracy_objective_defaults_to_the_floor_times_the_slo_target():
    """Without accuracy_objective a tier's objective is its floor x slo_target (none without
    a floor); a configured one wins."""
    assert Tier(max_accuracy_drop=0.03, slo_target=0.99).objective(0.93) == pytest.approx(0.9 * 0.99)
    assert Tier(min_accuracy=0.8, slo_target=0.95).objective(0.93) == pytest.approx(0.76)
    assert Tier(max_latency_ms=5).objective(0.93) is None
    assert Tier(min_accuracy=0.8, accuracy_objective=0.85).objective(0.93) == 0.85
