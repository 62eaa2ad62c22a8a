"""Label feedback: late ground truth joined to the answers a replica served, which gives
live accuracy per variant and per tier.

    feedback = Feedback(serving.feedback, tiers, classes=10, on_item=metrics.feedback)
    feedback.served(request_id, trace, top1)   # the HTTP layer, once per answered inference request
    results = feedback.label([LabelItem("req-1", 3, "label")], may_label(grant))

A label is an int for a one-image request, or a list with one int per image, in the
request's order. Each item is accepted or refused as unknown, expired, duplicate or
forbidden; a label that is no class index, or a list that does not match the request's
images, refuses the whole call (``InvalidRequest`` naming the field) before any is taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from tiergate.profiles.tiers import Tier
from tiergate.serving.auth import Grant, Target
from tiergate.serving.config import FeedbackConfig
from tiergate.serving.errors import Conflict, Forbidden, InvalidRequest, echo
from tiergate.serving.quality.answers import Answer, AnswerStore, Found
from tiergate.serving.quality.sli import in_bound, latency_bounds
from tiergate.serving.trace import Trace

PINNED = "pinned"  # the routing reason of a request that named its variant


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    UNKNOWN = Found.UNKNOWN.value
    EXPIRED = Found.EXPIRED.value
    DUPLICATE = Found.DUPLICATE.value
    FORBIDDEN = "forbidden"  # the key may not use the tier (or the pin) that served it


@dataclass(frozen=True)
class LabelItem:
    request_id: str
    label: int | list[int]
    field: str  # where the label is in the body, for errors: "label", "items[3].label"


@dataclass(frozen=True)
class LabelResult:
    request_id: str
    outcome: Outcome
    variant: str | None = None  # the rest only when accepted
    tier: str | None = None
    labelled: int = 0  # images labelled
    correct: int = 0  # of them, predicted right


# per item: (outcome, the answer when accepted, images labelled, of them correct)
ItemSink = Callable[[Outcome, Answer | None, int, int], None]


def may_label(grant: Grant | None) -> Callable[[Answer], bool]:
    """Who may label an answer: with API keys on, only a key that may use what served it,
    its tier (or, for a pinned answer, pins); anyone with keys off."""

    def allowed(answer: Answer) -> bool:
        if grant is None:
            return True
        try:
            grant.authorize(Target(answer.tier, answer.variant if answer.pinned else None))
        except Forbidden:
            return False
        return True

    return allowed


class Feedback:
    def __init__(
        self,
        config: FeedbackConfig,
        tiers: Mapping[str, Tier],
        classes: int | None,
        clock: Callable[[], float] = time.monotonic,
        on_item: ItemSink | None = None,
    ) -> None:
        self.config, self.classes, self.on_item = config, classes, on_item
        self.store = AnswerStore(config.max_answers, config.retention_s, clock) if config.enabled else None
        self._bounds = latency_bounds(tiers)

    def served(self, request_id: str, trace: Trace, top1: Iterable[int]) -> None:
        """Keep an answered request's answer for a later label (the request path: O(1))."""
        store = self.store
        if store is None or trace.variant is None:
            return
        answer = Answer(
            store.now(), trace.variant, trace.tier, trace.reason == PINNED,
            in_bound(self._bounds, trace.tier, trace.latency_ms), tuple(top1),
        )  # fmt: skip
        store.add(request_id, answer)

    def label(self, items: Sequence[LabelItem], allowed: Callable[[Answer], bool]) -> list[LabelResult]:
        """Join each item's label to its answer; nothing is taken when any label is invalid."""
        if len(items) > self.config.max_items:
            raise InvalidRequest(
                f"items: {len(items)} labels exceed the limit of {self.config.max_items} "
                "(serving.feedback.max_items)",
                field="items",
            )
        store = self.store
        if store is None:
            raise Conflict("serving.feedback.enabled is false: no answers are kept to label")
        checked, seen = [], set()
        for item in items:
            labels = self._labels(item)
            found, answer = store.find(item.request_id)
            outcome = Outcome(found.value) if found is not Found.HELD else Outcome.ACCEPTED
            if answer is not None and not allowed(answer):
                outcome = Outcome.FORBIDDEN
            elif outcome is Outcome.ACCEPTED and item.request_id in seen:
                outcome = Outcome.DUPLICATE  # twice in this call
            if outcome is Outcome.ACCEPTED:
                _fits(item, labels, answer)
                seen.add(item.request_id)
            checked.append((item, labels, outcome, answer))
        return [self._take(item, labels, outcome, answer) for item, labels, outcome, answer in checked]

    def _labels(self, item: LabelItem) -> list[int]:
        """The item's labels as a list, each checked to be a class index."""
        labels = [item.label] if isinstance(item.label, int) else item.label
        for position, label in enumerate(labels):
            if label < 0 or (self.classes is not None and label >= self.classes):
                field = item.field if isinstance(item.label, int) else f"{item.field}[{position}]"
                top = f"0..{self.classes - 1}" if self.classes is not None else "0 or more"
                raise InvalidRequest(f"{field}: {label} is not a class index ({top})", field=field)
        return labels

    def _take(
        self, item: LabelItem, labels: list[int], outcome: Outcome, answer: Answer | None
    ) -> LabelResult:
        if outcome is not Outcome.ACCEPTED or answer is None:
            self._emit(outcome, None, 0, 0)
            return LabelResult(item.request_id, outcome)
        self.store.mark_labelled(item.request_id)
        correct = sum(predicted == label for predicted, label in zip(answer.top1, labels, strict=True))
        self._emit(outcome, answer, len(labels), correct)
        return LabelResult(item.request_id, outcome, answer.variant, answer.tier, len(labels), correct)

    def _emit(self, outcome: Outcome, answer: Answer | None, labelled: int, correct: int) -> None:
        if self.on_item is not None:
            self.on_item(outcome, answer, labelled, correct)


def _fits(item: LabelItem, labels: list[int], answer: Answer) -> None:
    """A label per image of the answered request, or ``InvalidRequest`` naming the field."""
    images = len(answer.top1)
    if len(labels) != images or (images > 1 and isinstance(item.label, int)):
        raise InvalidRequest(
            f"{item.field}: request {echo(item.request_id)} had {images} images; give a list of {images} "
            "labels, one per image in its order",
            field=item.field,
        )
