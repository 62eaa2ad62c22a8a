"""Accuracy seen in production: the answers a replica served, kept for late labels
(``answers``), label feedback joined to them (``feedback``), and what the effective-accuracy
SLI counts as served within a tier's bound (``sli``). Free of HTTP and Ray.

    feedback = Feedback(serving.feedback, tiers, classes=10, on_item=metrics.feedback)
    feedback.served(request_id, trace, top1)
    feedback.label([LabelItem("req-1", 3, "label")], may_label(grant))
"""

from tiergate.serving.quality.answers import Answer, AnswerStore, Found
from tiergate.serving.quality.feedback import Feedback, LabelItem, LabelResult, Outcome, may_label
from tiergate.serving.quality.sli import in_bound, latency_bounds

__all__ = [
    "Answer",
    "AnswerStore",
    "Feedback",
    "Found",
    "LabelItem",
    "LabelResult",
    "Outcome",
    "in_bound",
    "latency_bounds",
    "may_label",
]
