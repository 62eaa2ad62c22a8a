"""Measure variants (accuracy, fidelity, latency, size, FLOPs), rank them, and route
requests over them (the pure routing policy)."""

from tiergate.profiles.measure import count_params_and_flops, measure_latency, open_session, wilson_interval
from tiergate.profiles.menu import LatencyStats, Menu, MenuEntry, mark_pareto, plot_pareto, render_table
from tiergate.profiles.policy import (
    Constraints,
    Decision,
    LiveStats,
    Reason,
    UnknownVariant,
    VariantProfile,
    choose,
)
from tiergate.profiles.profiler import Candidate, ProfileConfig, profile_variants
from tiergate.profiles.tiers import RequestSlo, Tier, constraints_for, default_tiers

__all__ = [
    "Candidate",
    "Constraints",
    "Decision",
    "LatencyStats",
    "LiveStats",
    "Menu",
    "MenuEntry",
    "ProfileConfig",
    "Reason",
    "RequestSlo",
    "Tier",
    "UnknownVariant",
    "VariantProfile",
    "choose",
    "constraints_for",
    "count_params_and_flops",
    "default_tiers",
    "mark_pareto",
    "measure_latency",
    "open_session",
    "plot_pareto",
    "profile_variants",
    "render_table",
    "wilson_interval",
]  # fmt: skip
