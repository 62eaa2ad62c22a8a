"""The configuration of accuracy in production: label feedback's answer store and shadow
sampling with its demotions (``serving.feedback`` and ``serving.shadow``; the quality
package uses them, ``ServingConfig`` holds them).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FeedbackConfig(BaseModel):
    """Label feedback: the served answers each replica keeps for POST /v1/feedback to join
    late ground truth to (``tiergate.serving.quality``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="keep served answers and take labels on POST /v1/feedback")
    max_answers: int = Field(50_000, ge=1, description="answers kept per replica; past it the oldest go")
    retention_s: float = Field(3600.0, gt=0, description="an answer can be labelled for this long")
    max_items: int = Field(1000, ge=1, description="labels in one POST /v1/feedback; more: 422")


class ShadowConfig(BaseModel):
    """Shadow sampling: a share of answers re-run on the reference variant (fp32) off the
    request path, which gives each variant's live fidelity, and the automatic demotion and
    re-admission that follow from it (``tiergate.serving.quality.shadow``)."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(
        0.02, ge=0, le=1, description="share of answers shadowed, chosen by request id; 0: off"
    )
    # capacity: admission.ingress_max_in_flight with the HAProxy ingress, else admission.max_in_flight
    max_utilisation: float = Field(
        0.25, ge=0, le=1,
        description="shadow only while requests in flight are at most this share of the replica's capacity",
    )  # fmt: skip
    max_backlog_ms: float = Field(
        5.0, ge=0, description="shadow only while queued run time plus the event loop's lag is at most this"
    )
    max_pending: int = Field(4, ge=1, description="shadow runs queued at once; more are dropped (counted)")
    max_cpu_share: float = Field(
        0.02, gt=0, le=1, description="shadow runs take at most this share of one core; beyond it, skipped"
    )
    window_samples: int = Field(
        1000, ge=1, description="live fidelity counts each variant's last this many images"
    )
    window_s: float = Field(3600.0, gt=0, description="live fidelity counts no image older than this")
    min_samples: int = Field(
        100, ge=1, description="shadowed images a variant needs before it can be demoted"
    )
    demote_z: float = Field(
        3.29,
        gt=0,
        description="demote when the live interval at this z (3.29: 99.9%) is below the offline one",
    )
    readmit_samples: int = Field(
        200, ge=1, description="images compared since a demotion before the variant can be re-admitted"
    )
    timeout_s: float = Field(5.0, gt=0, description="a shadow run not answered this long is dropped")
