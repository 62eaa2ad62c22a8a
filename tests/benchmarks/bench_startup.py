"""Benchmark: time from `tiergate serve` to a 200 on /readyz, and the memory (RSS summed over
every process it started: Ray's GCS, raylet, workers, replicas, HAProxy) at idle and under
load (wrk, 16 connections on the balanced tier).

    .venv/bin/python -m tests.benchmarks.bench_startup [--runs 3] [--cold] [--checkout DIR]

Warm (default): the cache holds every variant, as on any start after the first. --cold
starts from an empty cache directory (minutes: every variant is built and measured).
``--checkout DIR`` starts the gateway of another checkout (its ``.venv``), for a
before/after comparison in one run. The serving replica's own RSS is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.benchmarks.bench_gateway import GATEWAY, wait_ready, wrk


def tree_rss_mb(root: int, only: str | None = None) -> float:
    """Resident memory of ``root`` and all its descendants, from /proc; with ``only``, of
    those whose command line contains it."""
    children: dict[int, list[int]] = {}
    rss_kb: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        rss_kb[int(entry.name)] = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
        )
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if only is None or only in commands.get(pid, ""):
            total += rss_kb.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total / 1024


def one_run(extra: list[str], env: dict[str, str], checkout: Path | None = None) -> dict:
    python = str(checkout / ".venv" / "bin" / "python") if checkout else sys.executable
    started = time.monotonic()
    gateway = subprocess.Popen([python, "-m", "tiergate.cli", "serve", *extra], env=env, cwd=checkout,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{GATEWAY}/readyz", timeout_s=1800)
        ready_s = time.monotonic() - started
        time.sleep(10)
        idle_mb = tree_rss_mb(gateway.pid)
        replica_mb = tree_rss_mb(gateway.pid, only="ServeReplica:tiergate:Ingress")
        peak = [0.0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak[0] = max(peak[0], tree_rss_mb(gateway.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        image = [[[0.5] * 28] * 28]
        load = wrk(f"http://127.0.0.1:{GATEWAY}/v1/predict", {"inputs": image, "tier": "balanced"}, 16, 10)
        done.set()
        sampler.join()
        return {
            "ready_s": ready_s, "idle_rss_mb": idle_mb, "replica_rss_mb": replica_mb,
            "load_rss_mb": peak[0], "load_rps": load["rps"],
            "load_ok_rps": load["rps"] * (1 - load["errors"] / max(1, load["requests"])),
        }  # fmt: skip
    finally:
        stopping = time.monotonic()
        gateway.send_signal(signal.SIGINT)
        gateway.wait(180)
        print(f"  (stopped in {time.monotonic() - stopping:.0f} s)", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="empty cache: build and measure everything")
    parser.add_argument("--checkout", type=Path, help="serve from this checkout's .venv (default: this one)")
    args = parser.parse_args()
    runs = []
    for _ in range(args.runs):
        env = dict(os.environ)
        if args.cold:
            env["TIERGATE_CACHE_DIR"] = tempfile.mkdtemp(prefix="tiergate-cold-")
        runs.append(one_run([], env, args.checkout))
        print(json.dumps(runs[-1]), flush=True)
    print("| start | runs | time to ready s (median) | idle RSS MB (median) | replica RSS MB (median) "
          "| RSS under load MB (max) | req/s | 2xx/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {'cold' if args.cold else 'warm'} | {len(runs)} "
          f"| {statistics.median(r['ready_s'] for r in runs):.1f} "
          f"| {statistics.median(r['idle_rss_mb'] for r in runs):.0f} "
          f"| {statistics.median(r['replica_rss_mb'] for r in runs):.0f} "
          f"| {max(r['load_rss_mb'] for r in runs):.0f} "
          f"| {statistics.median(r['load_rps'] for r in runs):.0f} "
          f"| {statistics.median(r['load_ok_rps'] for r in runs):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
