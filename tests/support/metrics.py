"""A metrics sink for tests: what the replica would report, kept in a list."""

from __future__ import annotations

from tiergate.serving.trace import Trace


class Statuses:
    """A metrics sink that keeps the status of each request, each feedback item and each shadow
    outcome and demotion it is told about."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.feedback_items: list[
            tuple[str, str | None, int, int]
        ] = []  # outcome, variant, labelled, correct
        self.shadow_outcomes: list[tuple[str, str, int, int]] = []  # variant, outcome, compared, agreed
        self.demotions: list[tuple[str, str]] = []  # variant, demoted | readmitted

    def request(self, trace: Trace, status_code: int) -> None:
        self.statuses.append(status_code)

    def batch(self, variant: str, size: int) -> None:
        pass

    def feedback(self, outcome, answer, labelled: int, correct: int) -> None:
        self.feedback_items.append((str(outcome), answer.variant if answer else None, labelled, correct))

    def shadow(self, variant: str, outcome: str, compared: int, agreed: int) -> None:
        self.shadow_outcomes.append((variant, outcome, compared, agreed))

    def demotion(self, variant: str, change: str) -> None:
        self.demotions.append((variant, change))
