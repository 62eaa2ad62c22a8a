"""Benchmark: what the gateway costs per request. tiergate against a fair bare server on the
same ONNX file, side by side in one run: wrk on 127.0.0.1, each variant pinned, closed loop
at each concurrency, several alternating rounds.

    .venv/bin/python -m tests.benchmarks.bench_gateway [--variants distilled+int8 int8 fp32] \
        [--tiers fast] [--concurrency 1 32] [--rounds 3] [--duration 8] [--config F] \
        [--setup serving.replicas=2 --setup ...] [--checkout DIR]

The bare server (tests/benchmarks/bare_server.py) is Starlette on uvicorn with as many
worker processes as the machine has cores, orjson, one ORT thread per worker, at the
priority Ray gives tiergate's replicas. Throughput counts 2xx answers only; errors are
reported beside it. CPU per answer is the CPU time of each server's whole process tree
(tiergate: the CLI, Ray's processes, HAProxy and the replicas) over the cell, divided by
its 2xx answers; the load generator is outside both. Every round is printed, then the
medians, then tiergate's CPU per answer by process.

Each ``--setup`` (comma-separated config overrides) starts its own gateway. ``--checkout
DIR`` serves another checkout's code from its own ``.venv`` (the bare server stays this
one's), so a before/after comparison runs the same harness on both. Needs a warm
cache (run `tiergate compress` first) and Debian's `wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.benchmarks.cpu import cpu_used, tree_cpu

GATEWAY, BARE = 8000, 8100
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]  -- level-2 brackets: the JSON itself contains "]]"
"""


def wait_ready(url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"not ready after {timeout_s} s: {url}")


def checkout_python(checkout: Path | None) -> str:
    """The interpreter that runs ``checkout``'s tiergate: its own ``.venv`` (default: this one)."""
    return str(checkout / ".venv" / "bin" / "python") if checkout else sys.executable


def start_gateway(
    overrides: list[str], config: str | None = None, checkout: Path | None = None
) -> subprocess.Popen:
    """`tiergate serve` with ``overrides``, once ready; ``checkout``: serve another checkout's
    code, from its own ``.venv`` (for before/after runs). Its replicas run at nice 0 (the
    RAY_worker_niceness flag tiergate sets), as this process and its load generator do."""
    command = [checkout_python(checkout), "-m", "tiergate.cli", "serve",
               *(["--config", config] if config else []),
               *(f"--set={item}" for item in overrides)]  # fmt: skip
    gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=checkout)
    wait_ready(f"http://127.0.0.1:{GATEWAY}/readyz", timeout_s=600)
    return gateway


def stop_gateway(gateway: subprocess.Popen) -> None:
    gateway.send_signal(signal.SIGINT)
    gateway.wait(180)


def wrk(url: str, body: dict, connections: int, duration_s: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % json.dumps(body))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", script.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    os.unlink(script.name)

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(errors.group(1)) if errors else 0
    requests, value, unit = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", out).groups()
    seconds = float(value) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[unit]
    return {
        "p50": ms("50%"), "p99": ms("99%"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "ok_per_s": (int(requests) - errors) / seconds,
        "ok": int(requests) - errors, "requests": int(requests), "errors": errors,
    }  # fmt: skip


@dataclass
class Side:
    """One server under load: where to send, what to send, whose CPU to count."""

    url: str
    body: dict
    pid: int

    def measure(self, connections: int, duration_s: int) -> dict:
        before = tree_cpu(self.pid)
        cell = wrk(self.url, self.body, connections, duration_s)
        by_process = cpu_used(before, tree_cpu(self.pid))
        answers = max(cell["ok"], 1)
        cell["cpu_ms"] = 1000 * sum(by_process.values()) / answers
        cell["cpu_us_by_process"] = {name: 1e6 * s / answers for name, s in by_process.items()}
        return cell


@dataclass
class Cell:
    """Every round of one (setup, target, concurrency) on both sides."""

    label: str
    target: str
    variant: str
    in_ort_ms: float
    connections: int
    rounds: list[tuple[dict, dict]] = field(default_factory=list)


def row(cell: Cell, ours: dict, bare: dict, round_label: str) -> str:
    errors = f"{ours['errors']} / {bare['errors']}"
    cells = [
        cell.label, cell.target, f"{cell.variant} ({cell.in_ort_ms:.2f} ms in ORT)", cell.connections,
        round_label, f"{ours['ok_per_s']:.0f}", f"{bare['ok_per_s']:.0f}",
        f"{ours['ok_per_s'] / max(bare['ok_per_s'], 1e-9):.2f}",
        f"{ours['p50']:.2f} / {ours['p99']:.2f}", f"{bare['p50']:.2f} / {bare['p99']:.2f}",
        f"{ours['p50'] - bare['p50']:+.2f}", f"{ours['cpu_ms']:.2f}", f"{bare['cpu_ms']:.2f}", errors,
    ]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


HEADER = (
    "| setup | target | variant | concurrency | round | tiergate 2xx/s | bare 2xx/s | ratio | "
    "tiergate p50 / p99 ms | bare p50 / p99 ms | p50 gap ms | tiergate CPU ms/answer | "
    "bare CPU ms/answer | non-2xx (tiergate / bare) |\n|" + "---|" * 14
)


def median_row(cell: Cell) -> str:
    """The medians over the rounds; the ratio and the gap are medians of per-round pairs."""
    ours = {k: float(np.median([r[0][k] for r in cell.rounds])) for k in ("ok_per_s", "p50", "p99", "cpu_ms")}
    bare = {k: float(np.median([r[1][k] for r in cell.rounds])) for k in ("ok_per_s", "p50", "p99", "cpu_ms")}
    ours["errors"] = sum(r[0]["errors"] for r in cell.rounds)
    bare["errors"] = sum(r[1]["errors"] for r in cell.rounds)
    text = row(cell, ours, bare, f"median of {len(cell.rounds)}")
    ratio = np.median([r[0]["ok_per_s"] / max(r[1]["ok_per_s"], 1e-9) for r in cell.rounds])
    gap = np.median([r[0]["p50"] - r[1]["p50"] for r in cell.rounds])
    parts = text.split(" | ")
    parts[7], parts[10] = f"**{ratio:.2f}**", f"**{gap:+.2f}**"
    return " | ".join(parts)


def breakdown(cells: list[Cell]) -> None:
    """tiergate's CPU per answer by process (median over rounds), at each cell's load."""
    print("\n| setup | target | concurrency | tiergate CPU µs/answer by process (median over rounds) |")
    print("|---|---|---|---|")
    for cell in cells:
        names: dict[str, list[float]] = defaultdict(list)
        for ours, _ in cell.rounds:
            for name, us in ours["cpu_us_by_process"].items():
                names[name].append(us)
        medians = {n: float(np.median(v + [0.0] * (len(cell.rounds) - len(v)))) for n, v in names.items()}
        ranked = sorted(medians.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {us:.0f}" for name, us in ranked if us >= 5)
        print(f"| {cell.label} | {cell.target} | {cell.connections} | {shown} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=["distilled+int8", "int8", "fp32"],
                        help="variants to pin, one per target")  # fmt: skip
    parser.add_argument("--tiers", nargs="*", default=[],
                        help="tiers to route by (the bare server serves the tier's variant)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; every one is printed")
    parser.add_argument("--duration", type=int, default=8, help="seconds per cell")
    parser.add_argument("--bare-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--config", help="tiergate config for the gateway (default: the shipped one)")
    parser.add_argument("--checkout", type=Path,
                        help="serve this checkout's code from its own .venv (default: this one)")  # fmt: skip
    parser.add_argument("--setup", action="append", default=[],
                        help="comma-separated FIELD=VALUE overrides for one gateway; repeatable")  # fmt: skip
    args = parser.parse_args()
    print(f"bare: {args.bare_workers} uvicorn workers; {args.rounds} rounds of {args.duration} s cells\n")
    print(HEADER, flush=True)
    cells: list[Cell] = []
    for setup in args.setup or [""]:
        overrides = [item.strip() for item in setup.split(",") if item.strip()]
        cells += run_setup(args, overrides)
    print("\n" + HEADER)
    for cell in cells:
        print(median_row(cell))
    breakdown(cells)


def run_setup(args: argparse.Namespace, overrides: list[str]) -> list[Cell]:
    label = ", ".join(item.removeprefix("serving.") for item in overrides) or "defaults"
    gateway = start_gateway(overrides, args.config, args.checkout)
    try:
        base = f"http://127.0.0.1:{GATEWAY}"
        tiers = httpx.get(f"{base}/v1/tiers").json()
        variants = {v["name"]: v for v in httpx.get(f"{base}/v1/variants").json()["variants"]}
        menu = subprocess.run([checkout_python(args.checkout), "-m", "tiergate.cli", "compress", "--json",
                               *(["--config", args.config] if args.config else [])],
                              capture_output=True, text=True, check=True,
                              cwd=args.checkout).stdout  # fmt: skip
        paths = {v["name"]: v["path"] for v in json.loads(menu)["variants"]}
        shape = httpx.get(f"{base}/v2/models/fp32").json()["inputs"][0]["shape"][1:]
        image = np.random.default_rng(0).random(shape).round(4).tolist()
        targets = [(f"{v} (pinned)", v, {"variant": v}) for v in args.variants]
        targets += [(f"{t} tier", tiers[t]["variant"], {"tier": t}) for t in args.tiers]
        cells = []
        for target, variant, routing in targets:
            in_ort = variants[variant]["latency_ms"]["1"]["p50"]
            cells += measure_target(args, label, target, variant, in_ort, paths[variant],
                                    Side(f"{base}/v1/predict", {"inputs": image, **routing}, gateway.pid),
                                    {"inputs": image})  # fmt: skip
        return cells
    finally:
        stopped = time.monotonic()
        stop_gateway(gateway)
        print(f"<!-- {label}: gateway stopped in {time.monotonic() - stopped:.0f} s -->", flush=True)


def measure_target(
    args: argparse.Namespace, label: str, target: str, variant: str, in_ort_ms: float, path: str,
    ours: Side, bare_body: dict,
) -> list[Cell]:  # fmt: skip
    """Every round of every concurrency for one target, the bare server on ``path`` beside it;
    odd rounds measure the bare server first."""
    command = [sys.executable, "-m", "tests.benchmarks.bare_server", path, "--port", str(BARE),
               "--workers", str(args.bare_workers)]  # fmt: skip
    bare_server = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_ready(f"http://127.0.0.1:{BARE}/readyz")
        bare = Side(f"http://127.0.0.1:{BARE}/predict", bare_body, bare_server.pid)
        cells = [Cell(label, target, variant, in_ort_ms, c) for c in args.concurrency]
        for round_number in range(1, args.rounds + 1):
            for cell in cells:
                first, second = (ours, bare) if round_number % 2 else (bare, ours)
                results = {id(first): first.measure(cell.connections, args.duration)}
                results[id(second)] = second.measure(cell.connections, args.duration)
                cell.rounds.append((results[id(ours)], results[id(bare)]))
                print(row(cell, *cell.rounds[-1], str(round_number)), flush=True)
        return cells
    finally:
        bare_server.send_signal(signal.SIGINT)
        bare_server.wait(30)


if __name__ == "__main__":
    main()
