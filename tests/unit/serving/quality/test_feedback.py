"""Label feedback joined to served answers (pure logic over a real answer store): which
labels are taken, what each refusal is named, who may label what, and what is counted."""

from __future__ import annotations

import pytest

from tests.support.metrics import Statuses
from tiergate.profiles.tiers import Tier
from tiergate.serving.auth import Grant
from tiergate.serving.config import FeedbackConfig
from tiergate.serving.errors import Conflict, InvalidRequest
from tiergate.serving.quality import Feedback, LabelItem, Outcome, may_label
from tiergate.serving.trace import Trace

TIERS = {"fast": Tier(max_latency_ms=5.0), "accurate": Tier()}
ANYONE = may_label(None)


def _feedback(sink: Statuses | None = None, **config) -> Feedback:
    return Feedback(FeedbackConfig(**config), TIERS, classes=10, on_item=sink.feedback if sink else None)


def _served(feedback: Feedback, request_id: str, top1, tier="fast", variant="int8", latency_ms=1.0, **trace):
    trace = Trace(tier=tier, variant=variant, reason=trace.pop("reason", "best"), latency_ms=latency_ms)
    feedback.served(request_id, trace, top1)


def test_labels_are_joined_to_the_answer_and_counted_right_or_wrong():
    """A batch answer labelled per image counts its correct images; the sink sees the item."""
    sink = Statuses()
    feedback = _feedback(sink)
    _served(feedback, "r1", [3, 7, 1])
    (result,) = feedback.label([LabelItem("r1", [3, 2, 1], "label")], ANYONE)
    assert (result.outcome, result.variant, result.tier, result.labelled, result.correct) == (
        Outcome.ACCEPTED, "int8", "fast", 3, 2,
    )  # fmt: skip
    assert sink.feedback_items == [("accepted", "int8", 3, 2)]


def test_each_refusal_is_named_and_counted():
    """Unknown, duplicate (already labelled, or twice in one call) and expired items are named."""
    sink = Statuses()
    feedback = _feedback(sink, max_answers=1)
    _served(feedback, "old", [1])
    _served(feedback, "r1", [1])  # pushes "old" out
    results = feedback.label(
        [LabelItem("nope", 1, "items[0].label"), LabelItem("r1", 1, "items[1].label"),
         LabelItem("r1", 1, "items[2].label"), LabelItem("old", 1, "items[3].label")],
        ANYONE,
    )  # fmt: skip
    assert [r.outcome for r in results] == ["unknown", "accepted", "duplicate", "expired"]
    assert feedback.label([LabelItem("r1", 1, "label")], ANYONE)[0].outcome is Outcome.DUPLICATE
    assert [item[0] for item in sink.feedback_items] == [
        "unknown", "accepted", "duplicate", "expired", "duplicate",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "field"),
    [(10, "items[1].label"), ([1, 12], "items[1].label[1]"), ([1], "items[1].label"), (1, "items[1].label")],
)
def test_invalid_labels_refuse_the_whole_call_naming_the_field(label, field):
    """A label that is no class index, or labels that do not match the request's two images,
    are InvalidRequest naming the field, and no item of the call is taken."""
    feedback = _feedback()
    _served(feedback, "one", [4])
    _served(feedback, "two", [1, 2])
    with pytest.raises(InvalidRequest) as raised:
        feedback.label(
            [LabelItem("one", 4, "items[0].label"), LabelItem("two", label, "items[1].label")], ANYONE
        )
    assert raised.value.field == field
    assert feedback.label([LabelItem("one", 4, "label")], ANYONE)[0].outcome is Outcome.ACCEPTED


def test_only_a_key_that_may_use_the_serving_tier_may_label():
    """A [fast] key labels a fast answer; an [accurate] key is forbidden, and so is any
    tier-limited key for a pinned answer, which only an all-tier key may label."""
    feedback = _feedback()
    _served(feedback, "f", [1])
    _served(feedback, "pin", [1], tier="accurate", reason="pinned")
    fast = Grant("fast", frozenset({"fast"}), None, 1)
    accurate, everything = Grant("acc", frozenset({"accurate"}), None, 1), Grant("all", None, None, 1)
    assert feedback.label([LabelItem("f", 1, "label")], may_label(accurate))[0].outcome is Outcome.FORBIDDEN
    assert feedback.label([LabelItem("f", 1, "label")], may_label(fast))[0].outcome is Outcome.ACCEPTED
    assert feedback.label([LabelItem("pin", 1, "label")], may_label(accurate))[0].outcome is Outcome.FORBIDDEN
    assert (
        feedback.label([LabelItem("pin", 1, "label")], may_label(everything))[0].outcome is Outcome.ACCEPTED
    )


def test_an_answer_is_in_bound_by_its_tiers_latency_bound():
    """in_bound: within the tier's max_latency_ms (fast: 5 ms); a tier without a bound: always."""
    feedback = _feedback()
    _served(feedback, "quick", [1], latency_ms=4.9)
    _served(feedback, "late", [1], latency_ms=5.1)
    _served(feedback, "unbounded", [1], tier="accurate", latency_ms=500.0)
    assert [feedback.store.find(r)[1].in_bound for r in ("quick", "late", "unbounded")] == [True, False, True]


def test_too_many_items_and_feedback_off_are_refused():
    """More items than max_items is InvalidRequest on items; with feedback off, Conflict."""
    with pytest.raises(InvalidRequest) as raised:
        _feedback(max_items=1).label([LabelItem("a", 1, "x"), LabelItem("b", 1, "y")], ANYONE)
    assert raised.value.field == "items"
    off = _feedback(enabled=False)
    _served(off, "r1", [1])
    with pytest.raises(Conflict):
        off.label([LabelItem("r1", 1, "label")], ANYONE)
