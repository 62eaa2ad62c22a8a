"""Benchmark: cold and warm `tiergate compress` on the embedded default, and the menu
against the issue's bars. Prints Markdown for BENCHMARKS.md.

    .venv/bin/python -m tests.benchmarks.bench_menu [--config F] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# variant -> (minimum speed-up over fp32 at batch 1, maximum accuracy drop in points)
BARS = {"int8": (3, 0.5), "pruned": (3, 1.0), "distilled": (10, 3.0), "pruned+int8": (8, 1.5)}


def run_compress(config: Path | None, cache: Path) -> tuple[dict, float]:
    command = [sys.executable, "-m", "tiergate.cli", "compress", "--json", "--cache-dir", str(cache)]
    if config is not None:
        command += ["--config", str(config)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"compress failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout), elapsed


def render(menu: dict, cold_s: float, warm_s: float) -> str:
    fp32 = menu["variants"][0]
    lines = [
        f"cold `tiergate compress`: **{cold_s:.0f} s** (bar <= 300 s); "
        f"warm: **{warm_s:.1f} s** (bar <= 15 s)",
        "",
        "| variant | accuracy % (95% CI) | drop (pts) | p50 ms b1 | p95 ms b1 | speed-up | "
        "img/s b32 | size MB | MFLOPs | params | build s | Pareto | bar |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in menu["variants"]:
        drop = 100 * (fp32["accuracy"] - v["accuracy"])
        speedup = fp32["latency_ms"]["1"]["p50"] / v["latency_ms"]["1"]["p50"]
        low, high = v["accuracy_ci95"]
        bar = ""
        if v["name"] in BARS:
            min_speedup, max_drop = BARS[v["name"]]
            ok = speedup >= min_speedup and drop <= max_drop
            bar = f"{'met' if ok else 'MISSED'} (>= {min_speedup}x, <= {max_drop} pts)"
        elif v["name"] == "fp32":
            bar = f"{'met' if v['accuracy'] >= 0.92 else 'MISSED'} (>= 92%)"
        lines.append(
            f"| {v['name']} | {100 * v['accuracy']:.2f} ({100 * low:.1f}-{100 * high:.1f}) | {drop:+.2f} "
            f"| {v['latency_ms']['1']['p50']:.3f} | {v['latency_ms']['1']['p95']:.3f} | {speedup:.1f}x "
            f"| {v['throughput_per_s']:.0f} | {v['size_bytes'] / 1e6:.2f} | {v['flops'] / 1e6:.1f} "
            f"| {v['params'] / 1e6:.2f}M | {v['build_s']:.0f} | {'yes' if v['pareto'] else ''} | {bar} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--keep", type=Path, help="copy manifest.json and pareto.png here")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="tiergate-bench-"))
    try:
        menu, cold_s = run_compress(args.config, cache)
        warm, warm_s = run_compress(args.config, cache)
        assert all(v["cache_hit"] for v in warm["variants"]), "warm run rebuilt something"
        print(render(menu, cold_s, warm_s))
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            folder = cache / menu["model"]
            shutil.copy(folder / "pareto.png", args.keep / "pareto.png")
            (args.keep / "menu.json").write_text(json.dumps(menu, indent=2))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
