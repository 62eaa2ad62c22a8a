"""Benchmark: end-to-end latency and throughput per tier through tiergate, against a bare
uvicorn + ORT server on the same ONNX file, side by side in one run (wrk on 127.0.0.1).

    .venv/bin/python -m tests.benchmarks.bench_gateway [--duration 10] [--concurrency 1 16] [--repeat 1] \
        [--pin] [--config F] \
        [--setup serving.ray.ingress=proxy --setup serving.ray.topology=per_variant ...]

Each ``--setup`` (comma-separated config overrides) starts its own gateway; the bare server
is measured right beside it for every tier and concurrency.

Needs a warm cache (run `tiergate compress` first) and Debian's `wrk`.
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

import httpx
import numpy as np

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


RAY_WORKER_NICENESS = 15  # Ray's default worker_niceness: the replicas and HAProxy run at it


def start_gateway(overrides: list[str]) -> subprocess.Popen:
    """The gateway; then this process (the load: wrk and the sender) drops to the priority
    Ray gives its workers (nice 15), so that, sharing the cores, neither side outranks the
    other: at nice 0 the load generator would take the CPU first, as no remote client can."""
    command = [sys.executable, "-m", "tiergate.cli", "serve", *(f"--set={item}" for item in overrides)]
    gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(f"http://127.0.0.1:{GATEWAY}/readyz", timeout_s=600)
    os.nice(max(0, RAY_WORKER_NICENESS - os.nice(0)))
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
    return {
        "p50": ms("50%"), "p99": ms("99%"),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": int(errors.group(1)) if errors else 0,
    }  # fmt: skip


def _median(runs: list[dict]) -> dict:
    """Each figure's median over repeated runs (errors: their sum)."""
    return {key: float(np.median([r[key] for r in runs])) for key in ("p50", "p99", "rps")} | {
        "errors": sum(r["errors"] for r in runs)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tiers", nargs="+", default=["fast", "accurate"])
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each pair this many times, alternating, and report medians "
                        "(the p50 gap is the median of the per-pair gaps)")  # fmt: skip
    parser.add_argument("--config", help="tiergate config for the gateway (default: the shipped one)")
    parser.add_argument("--pin", action="store_true",
                        help="pin each tier's variant in the request, beside the tier whose bound it "
                        "is held to (same model on both sides, no load-adaptive routing)")  # fmt: skip
    parser.add_argument("--setup", action="append", default=[],
                        help="comma-separated FIELD=VALUE overrides for one gateway run; repeatable "
                        "(default: one run with the config as it is)")  # fmt: skip
    args = parser.parse_args()
    print("| setup | tier | variant | concurrency | tiergate p50 / p99 ms | bare p50 / p99 ms | "
          "tiergate req/s | bare req/s | throughput ratio | p50 gap ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for setup in args.setup or [""]:
        overrides = [item.strip() for item in setup.split(",") if item.strip()]
        run_setup(args, overrides)


def run_setup(args: argparse.Namespace, overrides: list[str]) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tiergate.cli", "serve",
               *(["--config", args.config] if args.config else []),
               *(f"--set={item}" for item in overrides)]  # fmt: skip
    label = ", ".join(item.removeprefix("serving.") for item in overrides) or "defaults"
    gateway = subprocess.Popen(command, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{GATEWAY}/readyz")
        tiers = httpx.get(f"http://127.0.0.1:{GATEWAY}/v1/tiers").json()
        variants = {
            v["name"]: v for v in httpx.get(f"http://127.0.0.1:{GATEWAY}/v1/variants").json()["variants"]
        }
        menu = subprocess.run([sys.executable, "-m", "tiergate.cli", "compress", "--json",
                               *(["--config", args.config] if args.config else [])],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        paths = {v["name"]: v["path"] for v in json.loads(menu)["variants"]}
        shape = httpx.get(f"http://127.0.0.1:{GATEWAY}/v2/models/fp32").json()["inputs"][0]["shape"][1:]
        image = np.random.default_rng(0).random(shape).round(4).tolist()
        for tier in args.tiers:
            variant = tiers[tier]["variant"]
            bare = subprocess.Popen([sys.executable, "-m", "tests.benchmarks.bare_server", paths[variant],
                                     "--port", str(BARE)], env=env)  # fmt: skip
            try:
                wait_ready(f"http://127.0.0.1:{BARE}/docs")
                for connections in args.concurrency:
                    routing = {"tier": tier, "variant": variant} if args.pin else {"tier": tier}
                    ours_body, bare_body = {"inputs": image, **routing}, {"inputs": image}
                    pairs = [
                        (wrk(f"http://127.0.0.1:{GATEWAY}/v1/predict", ours_body, connections, args.duration),
                         wrk(f"http://127.0.0.1:{BARE}/predict", bare_body, connections, args.duration))
                        for _ in range(args.repeat)
                    ]  # fmt: skip
                    ours, theirs = _median([p[0] for p in pairs]), _median([p[1] for p in pairs])
                    gap = float(np.median([p[0]["p50"] - p[1]["p50"] for p in pairs]))
                    in_ort = variants[variant]["latency_ms"]["1"]["p50"]
                    errors = ours["errors"] + theirs["errors"]
                    row = [
                        label, f"{tier} (pinned)" if args.pin else tier,
                        f"{variant} ({in_ort:.2f} ms in ORT)", connections,
                        f"{ours['p50']:.2f} / {ours['p99']:.2f}",
                        f"{theirs['p50']:.2f} / {theirs['p99']:.2f}",
                        f"{ours['rps']:.0f}", f"{theirs['rps']:.0f}", f"{ours['rps'] / theirs['rps']:.2f}",
                        f"{gap:+.2f}" + (f" (non-2xx: {errors})" if errors else ""),
                    ]  # fmt: skip
                    print("| " + " | ".join(str(cell) for cell in row) + " |", flush=True)
            finally:
                bare.send_signal(signal.SIGINT)
                bare.wait(30)
    finally:
        stopped = time.monotonic()
        gateway.send_signal(signal.SIGINT)
        gateway.wait(180)
        print(f"<!-- {label}: gateway stopped in {time.monotonic() - stopped:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
