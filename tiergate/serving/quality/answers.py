"""The answers a replica served, kept by request id so that a label arriving later can be
joined to what was served: which variant, under which tier, which top-1 class per image.

    store = AnswerStore(max_answers=50_000, retention_s=3600, clock=time.monotonic)
    store.add("req-1", Answer(store.now(), "int8", "fast", False, True, (3,)))   # per answer
    found, answer = store.find("req-1")     # Found.HELD, or UNKNOWN / EXPIRED / DUPLICATE
    store.mark_labelled("req-1")            # a second label for it is then a duplicate

Bounded by count and by age, oldest first. ``add`` is O(1) in the worst case (it evicts at
most ``EVICT_PER_ADD`` aged answers; ``find`` treats any older one still held as expired),
so the request path never pays for a backlog. Single-threaded: call it from the event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from typing import NamedTuple

EVICT_PER_ADD = 2  # aged answers one add may evict: steady traffic keeps up, a burst stays cheap


class Answer(NamedTuple):
    """One served answer, as feedback needs it (a small tuple per request)."""

    served_s: float  # the store's clock when it was served
    variant: str
    tier: str | None  # the tier it ran under (None: a pin without one)
    pinned: bool  # the request named its variant
    in_bound: bool  # answered within its tier's latency bound (no bound: true)
    top1: tuple[int, ...]  # the predicted class of each image, in the request's order
    labelled: bool = False


class Found(StrEnum):
    HELD = "held"  # held, not labelled yet
    UNKNOWN = "unknown"  # never served here (or under another replica)
    EXPIRED = "expired"  # served, but no longer held: past retention_s or pushed out by max_answers
    DUPLICATE = "duplicate"  # labelled already


class AnswerStore:
    def __init__(
        self, max_answers: int, retention_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_answers, self.retention_s, self.now = max_answers, retention_s, clock
        self._answers: OrderedDict[str, Answer] = OrderedDict()  # oldest first
        # ids of evicted answers, as many as answers are kept, so a late label hears "expired"
        self._evicted: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, request_id: str, answer: Answer) -> None:
        """Keep ``answer``; a request id seen before is now this answer (the newest wins)."""
        answers = self._answers
        answers.pop(request_id, None)  # a reused id moves to the end, as the newest
        self._evicted.pop(request_id, None)
        answers[request_id] = answer
        if len(answers) > self.max_answers:
            self._evict(next(iter(answers)))
        oldest_kept_s = answer.served_s - self.retention_s
        for _ in range(EVICT_PER_ADD):
            oldest = next(iter(answers))
            if answers[oldest].served_s >= oldest_kept_s:
                break
            self._evict(oldest)

    def find(self, request_id: str) -> tuple[Found, Answer | None]:
        """Whether ``request_id``'s answer can take a label, and the answer when it is held."""
        answer = self._answers.get(request_id)
        if answer is None:
            return (Found.EXPIRED if request_id in self._evicted else Found.UNKNOWN), None
        if self.now() - answer.served_s > self.retention_s:
            self._evict(request_id)
            return Found.EXPIRED, None
        return (Found.DUPLICATE if answer.labelled else Found.HELD), answer

    def mark_labelled(self, request_id: str) -> None:
        self._answers[request_id] = self._answers[request_id]._replace(labelled=True)

    def _evict(self, request_id: str) -> None:
        del self._answers[request_id]
        self._evicted[request_id] = None
        if len(self._evicted) > self.max_answers:
            self._evicted.popitem(last=False)
