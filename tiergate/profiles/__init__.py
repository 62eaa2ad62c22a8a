"""Measure variants (accuracy, fidelity, latency, size, FLOPs), rank them, and decide
where a request goes (the pure routing policy, no Ray or HTTP inside).

    decision = choose(catalog, constraints_for(tier, reference_quality), live, batch_size=1)

Names resolve lazily: the serving replica imports ``policy``, ``tiers`` and ``menu``
without the profiler's ONNX and training-side dependencies.
"""

from tiergate._lazy import lazy_exports

_EXPORTS = {
    "count_params_and_flops": ".graph",
    **dict.fromkeys(["measure_latency", "open_session", "wilson_interval"], ".measure"),
    **dict.fromkeys(["LatencyStats", "Menu", "MenuEntry", "mark_pareto"], ".menu"),
    **dict.fromkeys(["plot_pareto", "render_table"], ".report"),
    **dict.fromkeys(
        ["Constraints", "Decision", "LiveStats", "Reason", "UnknownVariant", "VariantProfile", "choose"],
        ".policy",
    ),
    **dict.fromkeys(
        [
            "Candidate",
            "Measurement",
            "MeasurementStore",
            "ProfileConfig",
            "measure_candidate",
            "menu_entries",
            "profile_variants",
        ],
        ".profiler",
    ),
    **dict.fromkeys(["RequestSlo", "Tier", "constraints_for", "default_tiers"], ".tiers"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
