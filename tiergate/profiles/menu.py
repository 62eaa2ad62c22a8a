"""The menu: one measured entry per variant, the Pareto front, and its renderings
(a terminal table, a JSON manifest, a PNG chart).

    entries = mark_pareto(entries)
    print(render_table(entries))
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class LatencyStats(BaseModel):
    p50: float
    p95: float
    p99: float
    runs: int


class MenuEntry(BaseModel):
    """Everything measured about one variant (milliseconds, bytes, fractions in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    name: str
    recipe: list[str]
    path: str  # the ONNX file
    sha256: str
    accuracy: float | None  # top-1 on the test split; None without labels
    accuracy_ci95: tuple[float, float] | None
    fidelity: float  # top-1 agreement with fp32 on the test split
    test_samples: int
    latency_ms: dict[str, LatencyStats]  # keyed by batch size
    threads: int
    throughput_per_s: float  # images/s at the largest profiled batch, one stream
    speedup: float  # fp32 p50 / this p50 at batch 1, same run
    size_bytes: int
    params: int
    flops: int  # per image
    pareto: bool = False
    build_s: float
    cache_hit: bool
    details: dict[str, object] = Field(default_factory=dict)

    @property
    def quality(self) -> float:
        """What the menu ranks by: accuracy when labelled, else fidelity."""
        return self.accuracy if self.accuracy is not None else self.fidelity

    def p95_ms(self, batch_size: int = 1) -> float:
        return self.latency_ms[str(batch_size)].p95


class Menu(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    dataset: str
    labelled: bool
    quality_metric: str  # "accuracy" or "fidelity"
    classes: list[str] = Field(default_factory=list)  # label names, by output index
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) the variants take
    variants: list[MenuEntry]
    skipped: dict[str, str] = Field(default_factory=dict)  # name -> why it was not built

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2))

    @classmethod
    def read(cls, path: Path) -> Menu:
        return cls.model_validate(json.loads(path.read_text()))


def mark_pareto(entries: list[MenuEntry]) -> list[MenuEntry]:
    """Flag entries that no other entry beats on both quality and batch-1 p95 latency."""

    def dominated(entry: MenuEntry) -> bool:
        return any(
            other.quality >= entry.quality
            and other.p95_ms() <= entry.p95_ms()
            and (other.quality > entry.quality or other.p95_ms() < entry.p95_ms())
            for other in entries
        )

    return [entry.model_copy(update={"pareto": not dominated(entry)}) for entry in entries]


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
