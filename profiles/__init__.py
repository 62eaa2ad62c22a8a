"""Measure variants (accuracy, fidelity, latency, size, FLOPs) and rank them."""

from profiles.measure import count_params_and_flops, measure_latency, open_session, wilson_interval
from profiles.menu import LatencyStats, Menu, MenuEntry, mark_pareto, plot_pareto, render_table
from profiles.profiler import Candidate, ProfileConfig, profile_variants

__all__ = [
    "Candidate", "LatencyStats", "Menu", "MenuEntry", "ProfileConfig", "count_params_and_flops",
    "mark_pareto", "measure_latency", "open_session", "plot_pareto", "profile_variants",
    "render_table", "wilson_interval",
]  # fmt: skip
