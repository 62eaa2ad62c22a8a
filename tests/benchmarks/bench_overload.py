"""Benchmark: SLO attainment under overload, adaptive routing against static deployments.

An open-loop generator sends Poisson arrivals at a fixed offered rate (each request leaves
on schedule whether or not earlier ones have answered, so queueing shows up in the
latencies instead of slowing the sender) to one running gateway on 127.0.0.1, stepping
the rate from 0.5x to 3x of what the fp32 variant alone can carry. For the tier under
test it compares three ways of serving the same traffic:

  adaptive      {"tier": T}                     tiergate's routing
  static fp32   {"variant": "fp32"}             always the reference model
  static fast   {"variant": <fastest>}          always the fastest variant

and reports per step: SLO attainment (% of requests sent that were answered 200 within the
tier's max_latency_ms, timed by the client), effective accuracy (the accuracy of the
variants that served, weighted by traffic), goodput and errors.

    .venv/bin/python -m tests.benchmarks.bench_overload [--tier balanced] [--seconds 15] \\
        [--loads 0.5 1 2 3] [--plot benchmarks/overload.png] [--checkout DIR]

The client runs at the priority Ray gives its workers (nice 15), so that neither it nor
the gateway outranks the other on the shared cores, and the first 3 s after start-up
(0.5x load) are not measured. Needs a warm cache (`tiergate compress`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.benchmarks.bench_gateway import GATEWAY, start_gateway, stop_gateway
from tests.loadgen import Answer, open_loop

URL = f"http://127.0.0.1:{GATEWAY}"


@dataclass
class Step:
    mode: str
    load: float
    rate: float
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # answered 200, timed by the client
    gateway_ms: list[float] = field(default_factory=list)  # the same answers' latency_ms (gateway's view)
    variants: list[str] = field(default_factory=list)  # the same answers' serving variant
    statuses: dict[str, int] = field(default_factory=dict)
    served_by: dict[str, int] = field(default_factory=dict)


LATENCY = re.compile(rb'"latency_ms":\s*([0-9.eE+-]+)')


def record(step: Step, answers: list[Answer]) -> None:
    """Fold one step's answers (from ``tests.loadgen.open_loop``) into ``step``."""
    for answer in answers:
        step.sent += 1
        code = str(answer.status)
        step.statuses[code] = step.statuses.get(code, 0) + 1
        if answer.status == 200:
            step.latencies_ms.append(answer.latency_ms)
            step.gateway_ms.append(float(LATENCY.search(answer.body).group(1)))
            variant = answer.headers.get("x-tiergate-variant", "?")
            step.variants.append(variant)
            step.served_by[variant] = step.served_by.get(variant, 0) + 1


def summarize(step: Step, bound_ms: float, accuracy: dict[str, float], seconds: float) -> dict:
    within = sum(1 for ms in step.latencies_ms if ms <= bound_ms)
    served = sum(step.served_by.values())
    effective = (
        sum(accuracy.get(v, 0.0) * n for v, n in step.served_by.items()) / served if served else float("nan")
    )
    errors = step.sent - sum(n for s, n in step.statuses.items() if s == "200")
    return {
        "mode": step.mode, "load": step.load, "rate": step.rate, "sent": step.sent,
        "attainment": 100 * within / step.sent if step.sent else float("nan"),
        "gateway_attainment": 100 * sum(ms <= bound_ms for ms in step.gateway_ms) / max(1, step.sent),
        "effective_accuracy": 100 * effective, "goodput": within / seconds, "errors": errors,
        "p50": float(np.percentile(step.latencies_ms, 50)) if step.latencies_ms else float("nan"),
        "p99": float(np.percentile(step.latencies_ms, 99)) if step.latencies_ms else float("nan"),
        "served_by": dict(sorted(step.served_by.items(), key=lambda kv: -kv[1])),
        "statuses": step.statuses, "misses": misses(step, bound_ms),
    }  # fmt: skip


def misses(step: Step, bound_ms: float) -> dict[str, tuple[int, int]]:
    """Per serving variant, the answers past the bound by the client's clock and by the
    gateway's: where the client's count is the larger, the time went outside the gateway."""
    late: dict[str, tuple[int, int]] = {}
    for variant, client_ms, gateway_ms in zip(step.variants, step.latencies_ms, step.gateway_ms, strict=True):
        if client_ms > bound_ms or gateway_ms > bound_ms:
            by_client, by_gateway = late.get(variant, (0, 0))
            late[variant] = (by_client + (client_ms > bound_ms), by_gateway + (gateway_ms > bound_ms))
    return late


async def measure(args: argparse.Namespace) -> list[dict]:
    async with httpx.AsyncClient(base_url=URL, timeout=args.timeout) as client:
        tiers = (await client.get("/v1/tiers")).json()
        variants = (await client.get("/v1/variants")).json()["variants"]
        shape = (await client.get("/v2/models/fp32")).json()["inputs"][0]["shape"][1:]
        bound_ms = tiers[args.tier]["max_latency_ms"]
        accuracy = {v["name"]: v["accuracy"] for v in variants}
        serving_p95 = {v["name"]: v["live"]["serving_p95_ms"]["1"] for v in variants}
        fastest = min(serving_p95, key=serving_p95.get)
        p50 = {v["name"]: v["latency_ms"]["1"]["p50"] for v in variants}
        # one image at a time, back to back: what fp32 alone carries (or a fixed unit, so that
        # two checkouts with menus timed apart get the same offered rates)
        capacity = args.unit_rps or 1000 / p50["fp32"]
        print(f"tier {args.tier}: bound {bound_ms} ms; fp32 capacity ~{capacity:.0f} req/s "
              f"(1000 / its batch-1 p50); fastest variant {fastest}", flush=True)  # fmt: skip
        image = np.random.default_rng(0).random(shape).round(4).tolist()
        modes = {
            "adaptive": {"inputs": image, "tier": args.tier},
            "static fp32": {"inputs": image, "variant": "fp32"},
            f"static {fastest}": {"inputs": image, "variant": fastest},
        }
        if args.warmup:  # the first fraction of a second after start-up runs slow (not measured)
            await open_loop(GATEWAY, json.dumps(modes["adaptive"]).encode(), capacity / 2, args.warmup,
                            args.timeout, seed=1)  # fmt: skip
        rows = []
        for load in args.loads:
            for mode, body in modes.items():
                if args.modes and mode.split()[0] not in args.modes:
                    continue
                step = Step(mode, load, capacity * load)
                answers = await open_loop(GATEWAY, json.dumps(body).encode(), step.rate, args.seconds,
                                          args.timeout, seed=int(load * 100))  # fmt: skip
                record(step, answers)
                row = summarize(step, bound_ms, accuracy, args.seconds)
                rows.append(row)
                print(_row(row), flush=True)
                if row["misses"]:
                    late = ", ".join(f"{v} {c} ({g})" for v, (c, g) in row["misses"].items())
                    print(f"<!-- past the bound, client (gateway) clock: {late} -->", flush=True)
                await asyncio.sleep(args.pause)
        return rows


def _row(r: dict) -> str:
    total = max(1, sum(r["served_by"].values()))
    served = ", ".join(f"{v} {100 * n / total:.0f}%" for v, n in r["served_by"].items())
    cells = [
        f"{r['load']:.1f}x ({r['rate']:.0f}/s)", r["mode"], r["sent"],
        f"{r['attainment']:.1f} ({r['gateway_attainment']:.1f})",
        f"{r['effective_accuracy']:.2f}", f"{r['goodput']:.0f}",
        f"{r['errors']} {({k: v for k, v in r['statuses'].items() if k != '200'})}" if r["errors"] else 0,
        f"{r['p50']:.1f} / {r['p99']:.1f}", served,
    ]  # fmt: skip
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def plot(rows: list[dict], tier: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        loads = [r["load"] for r in mine]
        left.plot(loads, [r["attainment"] for r in mine], marker="o", label=mode)
        right.plot(loads, [r["effective_accuracy"] for r in mine], marker="o", label=mode)
    left.set(xlabel="offered load (x fp32 capacity)", ylabel="% within the tier's bound",
             title=f"SLO attainment, tier {tier}")  # fmt: skip
    right.set(xlabel="offered load (x fp32 capacity)", ylabel="accuracy %", title="effective accuracy")
    left.legend()
    left.grid(alpha=0.3)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="balanced")
    parser.add_argument("--loads", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per load step and mode")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of 0.5x load after start-up, not measured")  # fmt: skip
    parser.add_argument("--pause", type=float, default=2.0, help="idle seconds between steps")
    parser.add_argument("--timeout", type=float, default=10.0, help="client timeout per request")
    parser.add_argument("--modes", nargs="+", choices=["adaptive", "static"], help="default: all")
    parser.add_argument("--plot", help="PNG of attainment and effective accuracy against load")
    parser.add_argument("--set", action="append", default=[], help="config override for the gateway")
    parser.add_argument("--unit-rps", type=float,
                        help="req/s of load 1x (default: 1000 / fp32's batch-1 p50 in the menu)")  # fmt: skip
    parser.add_argument("--checkout", type=Path,
                        help="serve this checkout's code from its own .venv (default: this one)")  # fmt: skip
    args = parser.parse_args()
    gateway = start_gateway(args.set, checkout=args.checkout)
    try:
        print("| offered load | serving | sent | attainment % client (gateway) | effective accuracy % | "
              "goodput/s | errors | "
              "client p50 / p99 ms | served by |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|", flush=True)
        rows = asyncio.run(measure(args))
    finally:
        stop_gateway(gateway)
    if args.plot:
        plot(rows, args.tier, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
