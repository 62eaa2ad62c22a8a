"""A run's verdict against the stated criteria, the markdown table and the plot.

    row = summarize(result)     # reversals, return time, shares, attainment, accuracy
    print(table([row, ...]))
    plot([result, ...], Path("benchmarks/sim_autoscale.png"))

Criteria (each deployment, each run):
- no oscillation: its target replica count changes direction no more often than the load
  does (a step up and down: once; a sine: at each peak and trough);
- traffic returns: after the load rises, the preferred variant's share of the requests
  that arrive is back at ``RETURN_SHARE`` or more within ``RETURN_WITHIN_S`` and stays
  there until the load falls (step scenarios only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.benchmarks.simscale.metrics import counts_between, return_time_s, reversals
from tests.benchmarks.simscale.scenarios import Result, Sine, Step
from tiergate.profiles.policy import LiveStats, VariantProfile, predict_latency_ms

RETURN_SHARE = 0.90
RETURN_WITHIN_S = 120.0


@dataclass(frozen=True)
class Row:
    name: str
    reversals: dict[str, int]  # per deployment, over the whole run
    load_turns: int
    step: bool  # a step scenario (the return criterion applies)
    returned_s: float | None  # None: never, or not a step scenario
    preferred_share: float  # over the last 60 s of the high load (step) or the whole run (sine)
    peak_replicas: dict[str, int]
    attainment: float  # over the whole run
    effective_accuracy: float
    refused: int

    @property
    def steady(self) -> bool:
        return all(count <= self.load_turns for count in self.reversals.values())

    @property
    def returns(self) -> bool | None:
        if not self.step:
            return None
        return self.returned_s is not None and self.returned_s <= RETURN_WITHIN_S


def load_turns(load: Step | Sine, horizon_s: float) -> int:
    """How often the load changes direction within the run."""
    if isinstance(load, Step):
        return int(load.up_s < horizon_s) * int(load.down_s < horizon_s)
    return math.ceil(2 * horizon_s / load.period_s) - 1


def summarize(result: Result) -> Row:
    rec, scenario = result.recorder, result.scenario
    initial = scenario.initial_replicas
    counts = {
        name: [initial, *counts_between(rec.scalings[name], 0.0, scenario.horizon_s)] for name in rec.variants
    }
    shares, times = rec.share(result.preferred), rec.times()
    load = scenario.load
    if isinstance(load, Step):
        returned = return_time_s(shares, times, load.up_s, load.down_s, RETURN_SHARE)
        high = rec.window(load.down_s - 60.0, load.down_s)
    else:
        returned, high = None, slice(0, rec.bins)
    arrivals = np.array(rec.arrivals, float)
    return Row(
        name=scenario.name,
        reversals={name: reversals(series) for name, series in counts.items()},
        load_turns=load_turns(load, scenario.horizon_s),
        step=isinstance(load, Step),
        returned_s=returned,
        preferred_share=float(np.sum(np.array(rec.served[result.preferred])[high]) / np.sum(arrivals[high])),
        peak_replicas={name: max(series) for name, series in counts.items()},
        attainment=float(np.sum(rec.within) / np.sum(arrivals)),
        effective_accuracy=float(np.sum(rec.within_quality) / max(1, np.sum(rec.within))),
        refused=sum(sum(counts) for counts in rec.refusals.values()),
    )


def table(rows: list[Row], preferred: str) -> str:
    names = list(dict.fromkeys(name for row in rows for name in row.reversals))
    head = (
        f"| scenario | replica reversals ({'/'.join(names)}) / load turns | {preferred} share, "
        f"end of peak | back to {RETURN_SHARE:.0%} after | peak replicas | attainment | effective "
        "accuracy | refused | steady | returns |"
    )
    lines = [head, "|" + "---|" * 10]
    for row in rows:
        back = (
            "—" if row.returns is None else ("never" if row.returned_s is None else f"{row.returned_s:.0f} s")
        )
        turned = "/".join(str(row.reversals.get(n, "—")) for n in names)
        peaks = "/".join(str(row.peak_replicas.get(n, "—")) for n in names)
        lines.append(
            f"| {row.name} | {turned} / {row.load_turns} | {row.preferred_share:.1%} | {back} | {peaks} "
            f"| {row.attainment:.2%} | {row.effective_accuracy:.4f} | {row.refused} "
            f"| {'yes' if row.steady else '**no**'} | {_verdict(row.returns)} |"
        )
    return "\n".join(lines)


def _verdict(returns: bool | None) -> str:
    return "—" if returns is None else ("yes" if returns else "**no**")


def plot(results: list[Result], path: Path, columns: int = 4) -> None:
    """Per scenario, two panels: each variant's share of the requests (and the load, dotted),
    and each deployment's running replicas."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 * math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.8 * columns, 2.4 * rows), sharex=True, squeeze=False)
    for index, result in enumerate(results):
        row, column = 2 * (index // columns), index % columns
        _panels(result, axes[row][column], axes[row + 1][column])
    for index in range(len(results), rows // 2 * columns):
        row, column = 2 * (index // columns), index % columns
        axes[row][column].axis("off")
        axes[row + 1][column].axis("off")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panels(result: Result, share_ax, replica_ax) -> None:
    rec, times = result.recorder, result.recorder.times()
    for name in rec.variants:
        if max(rec.served[name]) == 0:
            continue
        share_ax.plot(times, rec.share(name), label=name)
        replica_ax.step(times, rec.replicas[name], where="post", label=name)
    load_ax = share_ax.twinx()
    load_ax.plot(times, [result.scenario.load.at(t - rec.bin_s / 2) for t in times], "k:", lw=1)
    load_ax.set_ylim(0, 3.2)
    load_ax.tick_params(labelsize=7)
    share_ax.set_title(result.scenario.name, fontsize=8)
    share_ax.set_ylim(-0.02, 1.02)
    replica_ax.set_ylim(0, max(20, *(max(rec.replicas[name]) for name in rec.variants)) * 1.1)
    share_ax.set_ylabel("share of requests", fontsize=7)
    replica_ax.set_ylabel("running replicas", fontsize=7)
    replica_ax.set_xlabel("time (s)", fontsize=7)
    for ax in (share_ax, replica_ax):
        ax.tick_params(labelsize=7)


def allowance_per_replica(profile: VariantProfile, aim_ms: float, overhead_ms: float, replicas: int) -> float:
    """Requests in flight per replica up to which routing still sends ``profile`` another:
    the count of in-flight values ``policy.predict_latency_ms`` keeps within ``aim_ms``."""
    fitting = 0
    while fitting < 1000 * replicas and aim_ms >= predict_latency_ms(
        profile, LiveStats(in_flight=fitting, replicas=replicas, overhead_ms=overhead_ms)
    ):
        fitting += 1
    return fitting / replicas
