"""The routing policy, as pure logic: examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tiergate.profiles.policy import (
    Constraints,
    LiveStats,
    Reason,
    UnknownVariant,
    VariantProfile,
    choose,
    predict_latency_ms,
    service_time_ms,
)

CATALOG = [
    VariantProfile("fp32", 0.928, {1: 8.9, 8: 60.0, 32: 260.0}),
    VariantProfile("int8", 0.927, {1: 2.9, 8: 20.0, 32: 85.0}),
    VariantProfile("pruned+int8", 0.920, {1: 0.8, 8: 5.0, 32: 18.0}),
    VariantProfile("distilled+int8", 0.909, {1: 0.2, 8: 1.2, 32: 4.5}),
]


def test_most_accurate_variant_within_budget_wins():
    """With idle queues, a 5 ms budget picks int8: fp32 is too slow, int8 is the most accurate left."""
    decision = choose(CATALOG, Constraints(max_latency_ms=5.0))
    assert (decision.variant, decision.reason, decision.slo_met) == ("int8", Reason.BEST, True)


def test_queue_on_the_best_variant_degrades_to_the_next():
    """Requests in flight on int8 push the pick to pruned+int8, and the reason says so."""
    decision = choose(CATALOG, Constraints(max_latency_ms=5.0), {"int8": LiveStats(in_flight=4)})
    assert (decision.variant, decision.reason) == ("pruned+int8", Reason.DEGRADED)
    assert "int8 would be" in decision.explanation


def test_nothing_fits_falls_back_to_the_fastest_meeting_the_floor():
    """A 0.1 ms budget nobody meets is served by the fastest variant above the floor."""
    decision = choose(CATALOG, Constraints(max_latency_ms=0.1, min_accuracy=0.915))
    assert (decision.variant, decision.reason, decision.slo_met) == ("pruned+int8", Reason.FALLBACK, False)


def test_strict_request_is_refused_when_nothing_fits():
    """With strict set, the same impossible budget is a rejection, not a fallback."""
    decision = choose(CATALOG, Constraints(max_latency_ms=0.1, strict=True))
    assert decision.variant is None and decision.reason == Reason.REJECTED


def test_a_fallback_that_load_makes_late_is_shed():
    """Queues that push even the fastest variant past shed_after_ms refuse the request (SHED)."""
    busy = {p.name: LiveStats(shared_wait_ms=30.0) for p in CATALOG}
    decision = choose(CATALOG, Constraints(max_latency_ms=7.5, shed_after_ms=22.5), busy)
    assert (decision.variant, decision.reason) == (None, Reason.SHED)
    assert "past the 22.5 ms" in decision.explanation


def test_time_already_waited_counts_toward_shedding():
    """With work in flight, a request that waited 23 ms of a 22.5 ms allowance before routing is shed."""
    busy = {"fp32": LiveStats(in_flight=1)}
    decision = choose(CATALOG, Constraints(max_latency_ms=-15.5, shed_after_ms=22.5, waited_ms=23.0), busy)
    assert (decision.variant, decision.reason) == (None, Reason.SHED)


def test_a_late_request_at_no_load_is_answered_not_shed():
    """With nothing in flight or queued, a request a pause made late falls back: refusing relieves nothing."""
    decision = choose(CATALOG, Constraints(max_latency_ms=-15.5, shed_after_ms=22.5, waited_ms=23.0))
    assert (decision.variant, decision.reason) == ("distilled+int8", Reason.FALLBACK)


def test_a_fallback_within_the_shed_limit_is_still_served():
    """A wait that misses the aim but stays under shed_after_ms is a fallback, as before."""
    busy = {p.name: LiveStats(shared_wait_ms=10.0) for p in CATALOG}
    decision = choose(CATALOG, Constraints(max_latency_ms=7.5, shed_after_ms=22.5), busy)
    assert (decision.variant, decision.reason) == ("distilled+int8", Reason.FALLBACK)


def test_a_bound_no_variant_meets_at_rest_falls_back_instead_of_shedding():
    """When the fastest variant misses shed_after_ms even idle, the menu (not load) is why: fallback."""
    decision = choose(CATALOG, Constraints(max_latency_ms=0.05, shed_after_ms=0.1))
    assert (decision.variant, decision.reason) == ("distilled+int8", Reason.FALLBACK)


def test_floor_no_variant_meets_names_the_best_accuracy():
    """A floor above every variant is rejected with the best accuracy on offer."""
    decision = choose(CATALOG, Constraints(min_accuracy=0.99))
    assert decision.reason == Reason.REJECTED and "0.9280" in decision.explanation


def test_unknown_pin_raises():
    """Pinning a name that is not in the catalog is an error for the caller to map to 404."""
    with pytest.raises(UnknownVariant):
        choose(CATALOG, Constraints(variant="sparse"))


def test_batching_and_queueing_in_the_prediction():
    """Latency at batch 4 interpolates between profiled sizes; each batch ahead adds one service time."""
    fp32 = CATALOG[0]
    assert service_time_ms(fp32, 4) == pytest.approx(8.9 + (60.0 - 8.9) * 3 / 7)
    assert service_time_ms(fp32, 64) == pytest.approx(520.0)
    assert predict_latency_ms(fp32, LiveStats(in_flight=3, replicas=1)) == pytest.approx(4 * 8.9)
    assert predict_latency_ms(fp32, LiveStats(in_flight=3, replicas=3)) == pytest.approx(2 * 8.9)


profiles = st.lists(
    st.builds(
        VariantProfile,
        name=st.text("abcdefgh", min_size=1, max_size=4),
        quality=st.floats(0, 1),
        latency_ms=st.builds(lambda b1, slope: {1: b1, 8: b1 * slope}, st.floats(0.01, 50), st.floats(1, 8)),
        ready=st.booleans(),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda p: p.name,
)
loads = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), st.builds(LiveStats, st.integers(0, 50)))
budgets = st.none() | st.floats(0.01, 500)
floors = st.none() | st.floats(0, 1)


@given(profiles, loads, budgets, floors)
def test_choice_meets_the_floor_whenever_any_ready_variant_does(catalog, live, budget, floor):
    """If some ready variant meets the accuracy floor, the pick is ready and meets it too."""
    decision = choose(catalog, Constraints(max_latency_ms=budget, min_accuracy=floor), live)
    meets = [p for p in catalog if p.ready and (floor is None or p.quality >= floor)]
    if meets:
        picked = next(p for p in catalog if p.name == decision.variant)
        assert picked.ready and (floor is None or picked.quality >= floor)
    else:
        assert decision.variant is None and decision.reason == Reason.REJECTED


@given(profiles, loads, st.floats(0.01, 500), st.floats(0.01, 500), floors)
def test_tighter_budget_never_buys_more_accuracy_or_a_slower_feasible_pick(catalog, live, a, b, floor):
    """Tightening max_latency_ms never raises the pick's accuracy, and a pick that fits the
    tighter budget is never predicted slower than the budget allows."""
    tight, loose = min(a, b), max(a, b)
    narrow = choose(catalog, Constraints(max_latency_ms=tight, min_accuracy=floor), live)
    wide = choose(catalog, Constraints(max_latency_ms=loose, min_accuracy=floor), live)
    quality = {p.name: p.quality for p in catalog}
    if narrow.reason in (Reason.BEST, Reason.DEGRADED):
        assert narrow.predicted_latency_ms <= tight
        assert quality[narrow.variant] <= quality[wide.variant]


@given(profiles, loads, budgets, floors, st.data())
def test_pins_are_honoured_and_unready_variants_never_chosen(catalog, live, budget, floor, data):
    """A pinned ready variant is served as pinned; a pinned unready one is refused; an
    unpinned choice is never a variant that is not ready."""
    pinned = data.draw(st.sampled_from(catalog))
    decision = choose(
        catalog, Constraints(max_latency_ms=budget, min_accuracy=floor, variant=pinned.name), live
    )
    if pinned.ready:
        assert (decision.variant, decision.reason) == (pinned.name, Reason.PINNED)
    else:
        assert decision.variant is None and decision.reason == Reason.REJECTED
    free = choose(catalog, Constraints(max_latency_ms=budget, min_accuracy=floor), live)
    ready = {p.name for p in catalog if p.ready}
    assert free.variant is None or free.variant in ready


def test_measured_overhead_counts_against_the_budget():
    """The gateway's own overhead is part of the prediction, so a variant that fits on model
    time alone but not end to end is passed over for a faster one."""
    int8 = CATALOG[1]
    assert predict_latency_ms(int8, LiveStats(overhead_ms=1.5)) == pytest.approx(int8.latency_ms[1] + 1.5)
    budget = int8.latency_ms[1] + 1.0
    assert choose(CATALOG, Constraints(max_latency_ms=budget)).variant == "int8"
    live = {p.name: LiveStats(overhead_ms=1.5) for p in CATALOG}
    slower_pick = choose(CATALOG, Constraints(max_latency_ms=budget), live)
    assert slower_pick.variant != "int8" and slower_pick.reason == Reason.BEST


def test_recent_slowdown_scales_the_service_time():
    """A variant running 2x slower than profiled is predicted at twice its service time, so a
    budget it fitted at idle can push the pick to a faster variant."""
    int8 = CATALOG[1]
    assert predict_latency_ms(int8, LiveStats(slowdown=2.0)) == pytest.approx(2 * int8.latency_ms[1])
    budget = int8.latency_ms[1] * 1.5
    assert choose(CATALOG, Constraints(max_latency_ms=budget)).variant == "int8"
    slowed = choose(CATALOG, Constraints(max_latency_ms=budget), {"int8": LiveStats(slowdown=2.0)})
    assert slowed.variant == "pruned+int8"


def test_a_shared_wait_keeps_requests_off_idle_variants_on_the_same_cores():
    """With int8's runs queued, counting each variant's own queue sends the next request to
    the idle but slower pruned; counting the wait they share (one replica's cores) sends it
    to pruned+int8, the one that still fits after that wait."""
    catalog = [*CATALOG[:2], VariantProfile("pruned", 0.924, {1: 4.0}), *CATALOG[2:]]
    int8 = catalog[1]
    assert predict_latency_ms(int8, LiveStats(in_flight=9, shared_wait_ms=3.0)) == pytest.approx(2.9 + 3.0)
    budget = Constraints(max_latency_ms=8.0)
    own_queues = {"int8": LiveStats(in_flight=2)}
    assert choose(catalog, budget, own_queues).variant == "pruned"
    shared = {p.name: LiveStats(in_flight=2 if p.name == "int8" else 0, shared_wait_ms=5.8) for p in catalog}
    decision = choose(catalog, budget, shared)
    assert (decision.variant, decision.reason) == ("pruned+int8", Reason.DEGRADED)
