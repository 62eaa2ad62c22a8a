"""A metrics sink for tests: what the replica would report, kept in a list."""

from __future__ import annotations

from tiergate.serving.trace import Trace


class Statuses:
    """A metrics sink that keeps the status of each request, and each feedback item, it is told about."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.feedback_items: list[
            tuple[str, str | None, int, int]
        ] = []  # outcome, variant, labelled, correct

    def request(self, trace: Trace, status_code: int) -> None:
        self.statuses.append(status_code)

    def batch(self, variant: str, size: int) -> None:
        pass

    def feedback(self, outcome, answer, labelled: int, correct: int) -> None:
        self.feedback_items.append((str(outcome), answer.variant if answer else None, labelled, correct))
