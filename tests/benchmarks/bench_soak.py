"""Benchmark: the long reliability runs, against `tiergate serve` on 127.0.0.1.

soak   The capacity of the whole gateway is measured first (wrk, closed loop, 32
       connections on the tier: the answers per second it sustains, on a gateway started
       with shedding and HAProxy's queue timeout off, so that it serves all it can). Then,
       on a gateway started with the given config, an open-loop Poisson load of --factor
       (5) times that is offered for --seconds (60). Reported: requests sent and answered
       by status, the slowest answer against the deadline
       (serving.admission.request_timeout_s), latency of served and of refused requests
       (from each request's scheduled send time), the in-bound goodput against the
       capacity, the RSS of every process before, at peak and after, and how long after
       the load stops a request is served again within the tier's bound.
kill   The per_variant topology under an open-loop load of --kill-load (0.5) times the
       capacity, measured the same way; a third of the way in, the process of the
       replica serving most of the tier's traffic is killed (SIGKILL). Reported: requests
       by status (the target is none failed: each has a feasible alternative), how many
       were retried, and when the variant came back on the menu after re-profiling.

    .venv/bin/python -m tests.benchmarks.bench_soak [--runs soak kill] [--seconds 60]

The client runs on uvloop and keeps at most 1024 connections open (as a load balancer in front would); an
arrival that finds them all busy waits, and that wait counts in its latency.

Needs a warm cache (`tiergate compress`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import numpy as np
import uvloop

from tests.benchmarks.bench_gateway import GATEWAY, start_gateway, stop_gateway, wrk
from tests.benchmarks.bench_startup import tree_rss_mb
from tests.loadgen import Answer, open_loop

URL = f"http://127.0.0.1:{GATEWAY}"


def request_body(tier: str) -> dict:
    shape = httpx.get(f"{URL}/v2/models/fp32").json()["inputs"][0]["shape"][1:]
    return {"inputs": np.random.default_rng(0).random(shape).round(4).tolist(), "tier": tier}


def capacity(body: dict, seconds: int = 10) -> float:
    """Answers 200 per second in a closed loop of 32 connections, after 3 s of the same
    load to warm up (the first seconds after start-up run slower and vary)."""
    wrk(f"{URL}/v1/predict", body, 32, 3)
    measured = wrk(f"{URL}/v1/predict", body, 32, seconds)
    return measured["rps"] - measured["errors"] / seconds


def run_load(body: dict, rate: float, seconds: float) -> tuple[list[Answer], float]:
    """(answers, seconds over which they were sent): a sender that falls behind its
    schedule shows as a lower achieved rate."""
    load = open_loop(GATEWAY, json.dumps(body).encode(), rate, seconds, timeout_s=30, max_connections=1024)
    answers = uvloop.run(load)  # a client 2-3x cheaper than asyncio's own loop: it shares the 2 cores
    return answers, max(a.sent_at_s for a in answers)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    p50, p99 = np.percentile(values, [50, 99])
    return f"{p50:.1f} / {p99:.1f} / {max(values):.1f}"


NO_SHEDDING = "serving.admission.late_grace=null"
NO_INGRESS_QUEUE = "serving.admission.ingress_max_in_flight=0"


def serving_capacity(overrides: list[str], tier: str) -> float:
    """What the gateway can carry: ``capacity`` on a gateway that serves every request it
    admits (shedding off, and no queue timeout in HAProxy). With shedding on, 32
    connections in a closed loop keep queues long enough that most requests are refused
    as late, and the answers 200/s measured would be what the gateway chooses to serve,
    not what it can."""
    gateway = start_gateway([*overrides, NO_SHEDDING, NO_INGRESS_QUEUE])
    try:
        return capacity(request_body(tier))
    finally:
        stop_gateway(gateway)


def soak(args: argparse.Namespace) -> None:
    carried = serving_capacity(args.set, args.tier)
    rate = args.factor * carried
    gateway = start_gateway(args.set)
    try:
        tiers = httpx.get(f"{URL}/v1/tiers").json()
        bound_ms = tiers[args.tier]["max_latency_ms"]
        body = request_body(args.tier)
        wrk(f"{URL}/v1/predict", body, 32, 3)  # the same warm-up as the capacity's
        time.sleep(2)
        rss_before = tree_rss_mb(gateway.pid)
        peak, done = [rss_before], threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                try:
                    peak[0] = max(peak[0], tree_rss_mb(gateway.pid))
                except OSError:  # /proc unreadable for a moment (out of file descriptors)
                    continue

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            answers, sent_s = run_load(body, rate, args.seconds)
        finally:
            done.set()
            sampler.join()
        load_ended = time.monotonic()
        recovered_s = None
        with httpx.Client(base_url=URL, timeout=10) as client:
            while time.monotonic() - load_ended < 60:
                response = client.post("/v1/predict", json=body)
                if response.status_code == 200 and response.json()["slo_met"]:  # by the gateway's clock
                    recovered_s = time.monotonic() - load_ended
                    break
                time.sleep(0.05)
        time.sleep(5)
        rss_after = tree_rss_mb(gateway.pid)
    finally:
        stop_gateway(gateway)
    statuses = Counter(a.status for a in answers)
    reasons = Counter(
        _reason(a.body) for a in answers if a.status not in (200,) and isinstance(a.status, int)
    )
    served = [a.latency_ms for a in answers if a.status == 200]
    refused = [a.latency_ms for a in answers if a.status in (429, 503)]
    within = sum(ms <= bound_ms for ms in served)
    deadline_ms = 1000 * args.request_timeout_s
    slowest = max((a for a in answers if a.status == 200), key=lambda a: a.latency_ms, default=None)
    slowest_gateway_ms = json.loads(slowest.body)["latency_ms"] if slowest is not None else float("nan")
    print(f"\n### soak: {args.factor:g}x capacity for {args.seconds:g} s, "
          f"tier {args.tier} (bound {bound_ms} ms)\n")  # fmt: skip
    print("| measure | value |\n|---|---|")
    rows = {
        "capacity (closed loop, 32 connections, answers 200/s)": f"{carried:.0f}",
        "offered rate (target / achieved by the sender)": f"{rate:.0f} / {len(answers) / sent_s:.0f} req/s",
        "requests sent": len(answers),
        "answered, by status": ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)),
        "refusals, by reason": ", ".join(f"{k}: {v}" for k, v in reasons.most_common()),
        "no answer (client timeout, reset)": sum(n for k, n in statuses.items() if not isinstance(k, int)),
        "served 200 (within the bound)": f"{len(served)} ({within}), {len(served) / args.seconds:.0f}/s",
        "in-bound goodput (200s within the bound per s) / capacity": (
            f"{within / args.seconds:.0f}/s = {100 * within / args.seconds / carried:.0f}%"
        ),
        "latency ms of 200s: p50 / p99 / max": percentiles(served),
        "slowest 200: client's clock / gateway's (from routing)": (
            f"{slowest.latency_ms:.0f} / {slowest_gateway_ms:.0f} ms" if slowest is not None else "none"
        ),
        "latency ms of 429/503s: p50 / p99 / max": percentiles(refused),
        "client's lateness ms at send: p50 / p99 / max": percentiles([a.late_ms for a in answers]),
        "slowest answer / deadline": f"{max(a.latency_ms for a in answers):.0f} ms / {deadline_ms:.0f} ms",
        "RSS MB before / peak / 5 s after": f"{rss_before:.0f} / {peak[0]:.0f} / {rss_after:.0f}",
        "served in bound (gateway's clock) after the load": f"{recovered_s:.2f} s" if recovered_s else "no",
    }  # fmt: skip
    for label, value in rows.items():
        print(f"| {label} | {value} |")


def _reason(body: bytes) -> str:
    """The kind of refusal: the error's text up to its first colon-separated detail."""
    try:
        answer = json.loads(body)
        message = answer["error"]
    except (ValueError, KeyError, TypeError):
        return body[:40].decode("latin-1", "replace")
    if answer.get("reason") == "shed":
        return "shed (would be late for the bound)"
    kind = message.split(":")[0]
    return "queue cannot meet the deadline" if "deadline" in message and kind == "overloaded" else kind


def replica_pid(variant: str) -> int:
    """The process of the Serve replica that runs ``variant`` (per_variant topology)."""
    title = f"ServeReplica:tiergate:variant-{variant.replace('+', '-')}"
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    pids = [int(line.split()[0]) for line in out.splitlines()[1:] if title in line and "ray::" in line]
    if len(pids) != 1:
        sys.exit(f"expected one replica process titled {title}, found {pids}")
    return pids[0]


def kill(args: argparse.Namespace) -> None:
    # shedding off: this run is about a replica's loss, and its load is a share of capacity
    gateway = start_gateway(["serving.ray.topology=per_variant", *args.set, NO_SHEDDING])
    try:
        body = request_body(args.tier)
        carried = capacity(body)
        rate = args.kill_load * carried
        warmup, _ = run_load(body, rate, 3)  # which variant carries the tier at this load
        chosen = Counter(a.headers.get("x-tiergate-variant") for a in warmup if a.status == 200).most_common(
            1
        )[0][0]
        time.sleep(2)
        killed_at: list[float] = []

        def killer() -> None:
            time.sleep(args.kill_seconds / 3)
            os.kill(replica_pid(chosen), signal.SIGKILL)
            killed_at.append(time.monotonic())

        thread = threading.Thread(target=killer)
        load_started = time.monotonic()
        thread.start()
        answers, _ = run_load(body, rate, args.kill_seconds)
        thread.join()
        back_s = None
        while time.monotonic() - killed_at[0] < 120:
            rows = httpx.get(f"{URL}/v1/variants").json()["variants"]
            live = next(v for v in rows if v["name"] == chosen)["live"]
            if live["available"] and live["reprofiles"] >= 1:
                back_s = time.monotonic() - killed_at[0]
                break
            time.sleep(0.5)
    finally:
        stop_gateway(gateway)
    statuses = Counter(a.status for a in answers)
    retried = sum(b'"retried_from":"' in a.body for a in answers)
    kill_s = killed_at[0] - load_started
    after = [a for a in answers if a.sent_at_s >= kill_s]
    served_by = Counter(a.headers.get("x-tiergate-variant", "?") for a in after if a.status == 200)
    print(f"\n### kill: {chosen}'s replica process killed {kill_s:.1f} s into {args.kill_seconds:g} s "
          f"at {args.kill_load:g}x capacity ({rate:.0f} req/s), per_variant, tier {args.tier}\n")  # fmt: skip
    print("| measure | value |\n|---|---|")
    rows = {
        "requests sent": len(answers),
        "answered, by status": ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)),
        "failed (not 200)": sum(n for k, n in statuses.items() if k != 200),
        "retried on another variant (retried_from set)": retried,
        "served by, after the kill": ", ".join(f"{k}: {v}" for k, v in served_by.most_common()),
        f"{chosen} back on the menu, re-timed, after the kill": f"{back_s:.1f} s" if back_s else "no",
    }
    for label, value in rows.items():
        print(f"| {label} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=["soak", "kill"], default=["soak", "kill"])
    parser.add_argument("--tier", default="balanced")
    parser.add_argument("--factor", type=float, default=5.0, help="soak: offered load, x capacity")
    parser.add_argument("--seconds", type=float, default=60.0, help="soak: seconds of overload")
    parser.add_argument("--kill-load", type=float, default=0.5, help="kill: offered load, x capacity")
    parser.add_argument("--kill-seconds", type=float, default=30.0)
    parser.add_argument(
        "--request-timeout-s", type=float, default=2.0, help="serving.admission.request_timeout_s"
    )
    parser.add_argument("--set", action="append", default=[], help="config override for the gateway")
    args = parser.parse_args()
    args.set = [f"serving.admission.request_timeout_s={args.request_timeout_s}", *args.set]
    if "soak" in args.runs:
        soak(args)
    if "kill" in args.runs:
        kill(args)


if __name__ == "__main__":
    main()
