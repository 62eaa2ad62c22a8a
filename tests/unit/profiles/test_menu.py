from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tiergate.profiles import LatencyStats, Menu, MenuEntry, mark_pareto, render_table


def _entry(name: str, quality: float, p95: float, labelled: bool = True) -> MenuEntry:
    stats = LatencyStats(p50=p95 * 0.8, p95=p95, p99=p95 * 1.1, runs=30)
    return MenuEntry(
        name=name, recipe=[] if name == "fp32" else name.split("+"), path=f"/x/{name}.onnx",
        sha256="0" * 64, accuracy=quality if labelled else None,
        accuracy_ci95=(quality - 0.01, quality + 0.01) if labelled else None,
        fidelity=quality, test_samples=1000, latency_ms={"1": stats}, threads=1,
        throughput_per_s=1000 / p95, speedup=1.0, size_bytes=1000, params=10, flops=100,
        build_s=1.0, cache_hit=False,
    )  # fmt: skip


points = st.lists(st.tuples(st.floats(0, 1), st.floats(0.01, 100)), min_size=1, max_size=12)


@given(points)
def test_pareto_front_is_exactly_the_undominated_set(values):
    """No front member is dominated, and every entry off the front is dominated by one on it."""
    entries = mark_pareto([_entry(f"v{i}", q, p) for i, (q, p) in enumerate(values)])
    front = [e for e in entries if e.pareto]
    assert front, "a non-empty menu always has a front"

    def beats(a, b):
        return a.quality >= b.quality and a.p95_ms() <= b.p95_ms() and (
            a.quality > b.quality or a.p95_ms() < b.p95_ms())  # fmt: skip

    for entry in entries:
        dominated = any(beats(other, entry) for other in entries)
        assert entry.pareto == (not dominated)


def test_table_lists_variants_skips_and_the_fidelity_note():
    """The printed menu names every variant, each skipped one with its reason, and says
    when quality is fidelity rather than accuracy."""
    menu = Menu(model="m", dataset="npz", labelled=False, quality_metric="fidelity",
                variants=mark_pareto([_entry("fp32", 1.0, 5.0, False), _entry("int8", 0.98, 1.0, False)]),
                skipped={"pruned": "ValueError: cannot prune"})  # fmt: skip
    table = render_table(menu)
    assert "fp32" in table and "int8" in table
    assert "pruned" in table and "cannot prune" in table
    assert "quality is fidelity" in table
