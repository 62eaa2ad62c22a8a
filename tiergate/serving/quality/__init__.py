"""Accuracy seen in production: the answers a replica served, kept for late labels
(``answers``), label feedback joined to them (``feedback``), what the effective-accuracy
SLI counts as served within a tier's bound (``sli``), and shadow sampling (``shadow``): live
fidelity to fp32 (``fidelity``) on spare capacity (``spare``), with automatic demotion and
re-admission (``demotion``). Free of HTTP and Ray.

    feedback = Feedback(serving.feedback, tiers, classes=10, on_item=metrics.feedback)
    feedback.served(request_id, trace, top1)
    feedback.label([LabelItem("req-1", 3, "label")], may_label(grant))
    shadow = Shadow.build(serving, registry, spare.busy, floor, metrics)
    shadow.offer(request_id, trace, top1)
"""

from tiergate.serving.quality.answers import Answer, AnswerStore, Found
from tiergate.serving.quality.demotion import DEMOTED, READMITTED, Demoter, Offline
from tiergate.serving.quality.feedback import Feedback, LabelItem, LabelResult, Outcome, may_label
from tiergate.serving.quality.fidelity import Fidelity, LiveFidelity
from tiergate.serving.quality.shadow import Shadow, sampled
from tiergate.serving.quality.sli import in_bound, latency_bounds
from tiergate.serving.quality.spare import SpareCapacity, loosest_floor

__all__ = [
    "DEMOTED",
    "READMITTED",
    "Answer",
    "AnswerStore",
    "Demoter",
    "Feedback",
    "Fidelity",
    "Found",
    "LabelItem",
    "LabelResult",
    "LiveFidelity",
    "Offline",
    "Outcome",
    "Shadow",
    "SpareCapacity",
    "in_bound",
    "latency_bounds",
    "loosest_floor",
    "may_label",
    "sampled",
]
