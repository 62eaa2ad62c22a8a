"""What the accuracy SLI counts as served within a tier's bound: the effective accuracy of
a tier (Model-Switching, Zhang et al. 2020) is the accuracy of its answers given within its
latency bound, a late or failed answer counting as wrong.

    bounds = latency_bounds(tiers)                  # once
    in_bound(bounds, trace.tier, trace.latency_ms)  # per answer
"""

from __future__ import annotations

from collections.abc import Mapping

from tiergate.profiles.tiers import Tier


def latency_bounds(tiers: Mapping[str, Tier]) -> dict[str, float]:
    """Each tier's latency bound, for the tiers that have one."""
    return {name: tier.max_latency_ms for name, tier in tiers.items() if tier.max_latency_ms is not None}


def in_bound(bounds: Mapping[str, float], tier: str | None, latency_ms: float | None) -> bool:
    """Whether an answer came within its tier's latency bound (always, for a tier without
    one or a pin without a tier). The tier's own bound: a request's narrower SLO is its own
    business, not the tier's promise."""
    bound = bounds.get(tier) if tier is not None else None
    return bound is None or (latency_ms is not None and latency_ms <= bound)
