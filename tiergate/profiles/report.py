"""The menu for people: a fixed-width terminal table and a PNG chart of quality against
latency (matplotlib, imported only here).

    print(render_table(menu))
    plot_pareto(menu, Path("pareto.png"))
"""

from __future__ import annotations

from pathlib import Path

from tiergate.profiles.menu import Menu


def render_table(menu: Menu) -> str:
    """A fixed-width table of the menu for the terminal."""
    quality = "acc %" if menu.labelled else "fid %"
    header = (f"{'variant':<16}{quality:>7}{'ci95':>14}{'fid %':>7}{'p50 ms':>8}{'p95 ms':>8}"
              f"{'x fp32':>7}{'img/s@32':>9}{'MB':>7}{'MFLOPs':>8}{'build s':>8}  pareto")  # fmt: skip
    lines = [header, "-" * len(header)]
    for e in menu.variants:
        low, high = e.accuracy_ci95 or (e.fidelity, e.fidelity)
        b1 = e.latency_ms["1"]
        lines.append(
            f"{e.name:<16}{100 * e.quality:>7.2f}{f'{100 * low:.1f}-{100 * high:.1f}':>14}"
            f"{100 * e.fidelity:>7.2f}{b1.p50:>8.2f}{b1.p95:>8.2f}{e.speedup:>7.1f}"
            f"{e.throughput_per_s:>9.0f}{e.size_bytes / 1e6:>7.2f}{e.flops / 1e6:>8.1f}"
            f"{e.build_s:>8.1f}{'  *' if e.pareto else ''}{'  (cached)' if e.cache_hit else ''}"
        )
    gap = menu.variants[0].details.get("max_abs_logit_diff") if menu.variants else None
    if isinstance(gap, float):
        lines.append(f"fp32 export check: max |torch - ONNX Runtime| logit difference {gap:.2e}")
    for name, reason in menu.skipped.items():
        lines.append(f"{name:<16}skipped: {reason}")
    if not menu.labelled:
        lines.append("no labels in the data: quality is fidelity (agreement with fp32), not accuracy")
    return "\n".join(lines)


def plot_pareto(menu: Menu, path: Path) -> None:
    """Quality against batch-1 p95 latency, one labelled point per variant, front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for e in menu.variants:
        y = 100 * e.quality
        low, high = e.accuracy_ci95 or (e.quality, e.quality)
        ax.errorbar(e.p95_ms(), y, yerr=[[y - 100 * low], [100 * high - y]],
                    fmt="o", color="tab:red" if e.pareto else "tab:grey", capsize=3)  # fmt: skip
        ax.annotate(e.name, (e.p95_ms(), y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = sorted((e for e in menu.variants if e.pareto), key=lambda e: e.p95_ms())
    ax.plot([e.p95_ms() for e in front], [100 * e.quality for e in front], "--", color="tab:red",
            label="Pareto front")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency, batch 1 (ms, log scale)")
    ax.set_ylabel(f"{menu.quality_metric} on the test split (%)")
    ax.set_title(f"{menu.model} on {menu.dataset}: variant menu")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
