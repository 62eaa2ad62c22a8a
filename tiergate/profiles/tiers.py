"""Quality tiers: named SLOs that requests pick instead of spelling out their own.

    tiers = {"fast": Tier(max_latency_ms=2), "accurate": Tier(max_accuracy_drop=0.005)}
    constraints_for(tiers["fast"], reference_quality=0.928, request=RequestSlo(max_latency_ms=1))

A tier's floor is absolute (``min_accuracy``) or relative to the fp32 reference
(``max_accuracy_drop``); a request may narrow its tier, never widen it. Beside its latency
objective (``slo_target``), a tier has an accuracy objective (``objective``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiergate.profiles.policy import Constraints


class Tier(BaseModel):
    """One tier's SLO: a latency bound and an accuracy floor, either may be absent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_latency_ms: float | None = Field(None, gt=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="below the fp32 reference")
    slo_target: float = Field(0.99, gt=0, lt=1, description="fraction of requests that must meet it")
    accuracy_objective: float | None = Field(
        None, gt=0, lt=1, description="target effective accuracy; default: the floor x slo_target"
    )

    @model_validator(mode="after")
    def _one_floor(self) -> Tier:
        if self.min_accuracy is not None and self.max_accuracy_drop is not None:
            raise ValueError("set min_accuracy or max_accuracy_drop, not both")
        return self

    def floor(self, reference_quality: float) -> float | None:
        """The absolute accuracy floor, given the fp32 reference's accuracy."""
        if self.max_accuracy_drop is not None:
            return reference_quality - self.max_accuracy_drop
        return self.min_accuracy

    def objective(self, reference_quality: float) -> float | None:
        """The effective accuracy the tier must keep (the accuracy of its answers served
        within its bound, a late or failed one counting as wrong): ``accuracy_objective``,
        else what a tier gives that answers exactly ``slo_target`` of its requests in time,
        each from a variant exactly at its floor. None for a tier without a floor."""
        if self.accuracy_objective is not None:
            return self.accuracy_objective
        floor = self.floor(reference_quality)
        return None if floor is None else floor * self.slo_target


MAX_LATENCY_MS = 86_400_000.0  # one day: the longest latency bound or deadline a request may give


class RequestSlo(BaseModel):
    """A request's own SLO, which narrows its tier's: JSON numbers only (no strings or
    booleans), finite and bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    max_latency_ms: float | None = Field(None, gt=0, le=MAX_LATENCY_MS, allow_inf_nan=False)
    min_accuracy: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)


def default_tiers() -> dict[str, Tier]:
    return {
        "fast": Tier(max_latency_ms=5.0, max_accuracy_drop=0.03),
        "balanced": Tier(max_latency_ms=15.0, max_accuracy_drop=0.01),
        "accurate": Tier(max_latency_ms=60.0, max_accuracy_drop=0.001),
    }


def constraints_for(
    tier: Tier,
    reference_quality: float,
    request: RequestSlo | None = None,
    variant: str | None = None,
    strict: bool = False,
) -> Constraints:
    """The policy's constraints: the tier's SLO, narrowed by the request's own."""
    latency, floor = tier.max_latency_ms, tier.floor(reference_quality)
    if request is not None:
        if request.max_latency_ms is not None:
            latency = request.max_latency_ms if latency is None else min(latency, request.max_latency_ms)
        if request.min_accuracy is not None:
            floor = request.min_accuracy if floor is None else max(floor, request.min_accuracy)
    return Constraints(max_latency_ms=latency, min_accuracy=floor, variant=variant, strict=strict)
