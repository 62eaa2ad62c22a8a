"""Profile: where tiergate's CPU goes per request, stage by stage. Serves the default model,
drives one pinned variant with wrk at a closed-loop concurrency, and meanwhile samples the
serving replica with py-spy (every thread, Python frames) and the whole process tree's CPU
from /proc. Each sample is put in one stage by its innermost frame that names one, and a
stage's µs per answer is its share of the replica's samples times the replica's CPU per
answer; the other processes (HAProxy, Ray's) are listed by their own CPU.

    .venv/bin/python -m tests.benchmarks.profile_gateway [--variant distilled+int8] \
        [--concurrency 32] [--seconds 15] [--set FIELD=VALUE ...] [--flame out.txt]

Needs a warm cache, Debian's `wrk` and py-spy (the dev extra).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np

from tests.benchmarks.bench_gateway import GATEWAY, start_gateway, stop_gateway, wrk
from tests.benchmarks.cpu import TICK_S, cpu_used, tree_cpu

# (substring of a frame's file or function, stage); the innermost frame that matches one
# decides a sample's stage, so a numpy call inside routing counts as routing
STAGES: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "ORT run"),
    ("orjson", "JSON parse/serialise"),
    ("json/", "JSON parse/serialise"),
    ("pydantic", "pydantic (validate, serialise)"),
    ("prometheus_client", "metrics"),
    ("tiergate/serving/metrics", "metrics"),
    ("tiergate/serving/trace", "metrics"),
    ("tiergate/serving/engines", "batcher, run slots, engine"),
    ("concurrent/futures", "batcher, run slots, engine"),
    ("tiergate/serving/gateway", "routing"),
    ("tiergate/profiles", "routing"),
    ("tiergate/serving/menu_view", "routing"),
    ("tiergate/serving/shedding", "routing"),
    ("tiergate/serving/inputs", "decode inputs"),
    ("tiergate/serving/predictions", "answer (top-k)"),
    ("tiergate/serving/http", "tiergate HTTP layer (middleware, routes)"),
    ("tiergate/serving/frontdoor", "tiergate front door (admission)"),
    ("tiergate/serving/admission", "tiergate front door (admission)"),
    ("tiergate/", "tiergate, other"),
    ("fastapi", "FastAPI/Starlette"),
    ("starlette", "FastAPI/Starlette"),
    ("uvicorn", "uvicorn/httptools (HTTP server)"),
    ("httptools", "uvicorn/httptools (HTTP server)"),
    ("ray/serve", "Ray Serve (direct ingress, replica wrapper)"),
    ("ray/", "Ray, other (core worker, metrics)"),
    ("asyncio", "event loop (asyncio/uvloop)"),
    ("uvloop", "event loop (asyncio/uvloop)"),
    ("threading", "uvloop C code (sockets, callbacks)"),  # the loop thread with no Python frame inside
)


def stage_of(stack: list[str]) -> str:
    """The stage of one sampled stack (frames outermost first)."""
    for frame in reversed(stack):
        for needle, stage in STAGES:
            if needle in frame:
                return stage
    return "other"


def replica_pid(root: int) -> int:
    replicas = [pid for pid, (name, _) in tree_cpu(root).items() if name == "ray::ServeReplica"]
    if len(replicas) != 1:
        sys.exit(f"expected one serving replica, found {len(replicas)}")
    return replicas[0]


def thread_cpu(pid: int) -> dict[int, float]:
    """{thread id: CPU seconds} of every thread of ``pid``."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) * TICK_S
    return seconds


def record(pid: int, seconds: int, out: Path) -> None:
    """py-spy's raw stacks of every thread of ``pid`` for ``seconds``, sampled without pausing it."""
    spy = str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
               "--threads", "--nonblocking", "--format", "raw", "--output", str(out)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def stages(raw: Path) -> tuple[dict[int, str], dict[int, Counter]]:
    """Thread names, and each thread's samples by stage, from py-spy's raw ``--threads`` output
    (each stack starts with ``thread (TID): NAME``)."""
    names: dict[int, str] = {}
    counts: dict[int, Counter] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        match = re.match(r"thread \((\d+)\): (.*)", thread)
        if match and frames:
            tid = int(match.group(1))
            names[tid] = match.group(2)
            counts[tid][stage_of(frames)] += int(count)
    return names, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="distilled+int8")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--set", action="append", default=[], help="config override for the gateway")
    parser.add_argument("--flame", help="keep py-spy's raw stacks here")
    args = parser.parse_args()
    gateway = start_gateway(args.set)
    try:
        base = f"http://127.0.0.1:{GATEWAY}"
        shape = httpx.get(f"{base}/v2/models/fp32").json()["inputs"][0]["shape"][1:]
        body = {"inputs": np.random.default_rng(0).random(shape).round(4).tolist(), "variant": args.variant}
        wrk(f"{base}/v1/predict", body, args.concurrency, 3)  # warm-up
        replica = replica_pid(gateway.pid)
        raw = Path(args.flame or tempfile.mktemp(suffix=".txt"))
        before, threads_before = tree_cpu(gateway.pid), thread_cpu(replica)
        sampler = threading.Thread(target=record, args=(replica, args.seconds - 2, raw))
        sampler.start()
        cell = wrk(f"{base}/v1/predict", body, args.concurrency, args.seconds)
        sampler.join()
        used, threads_after = cpu_used(before, tree_cpu(gateway.pid)), thread_cpu(replica)
    finally:
        stop_gateway(gateway)
    threads = {tid: s - threads_before.get(tid, 0.0) for tid, s in threads_after.items()}
    report(args, cell, used, threads, *stages(raw))


def report(
    args: argparse.Namespace, cell: dict, used: dict[str, float], threads: dict[int, float],
    names: dict[int, str], counts: dict[int, Counter],
) -> None:  # fmt: skip
    """The event loop's thread by stage (its CPU split by its samples' shares), the replica's
    other threads by name, then the other processes."""
    answers = max(cell["ok"], 1)
    print(f"{args.variant} pinned, {args.concurrency} connections, {args.seconds} s: "
          f"{cell['ok_per_s']:.0f} 2xx/s, {cell['errors']} errors; "
          f"{1e6 * sum(used.values()) / answers:.0f} µs CPU per answer in all\n")  # fmt: skip
    loop = max(counts, key=lambda tid: sum(counts[tid].values()))
    loop_us, samples = 1e6 * threads.get(loop, 0.0) / answers, sum(counts[loop].values())
    print("| where | µs CPU per answer | share |\n|---|---|---|")
    print(f"| replica, event-loop thread ({names[loop]}) | {loop_us:.0f} | |")
    for stage, count in counts[loop].most_common():
        print(f"| &nbsp;&nbsp;{stage} | {loop_us * count / samples:.0f} | {100 * count / samples:.1f}% |")
    others: Counter = Counter()
    for tid, seconds in threads.items():
        if tid != loop:
            others[re.sub(r"_\d+$", "_N", names.get(tid, "unnamed (native)"))] += 1e6 * seconds / answers
    for name, us in others.most_common():
        if us >= 1:
            print(f"| replica, thread {name} | {us:.0f} | |")
    for name, seconds in sorted(used.items(), key=lambda kv: -kv[1]):
        if name != "ray::ServeReplica" and 1e6 * seconds / answers >= 1:
            print(f"| process {name} | {1e6 * seconds / answers:.0f} | |")


if __name__ == "__main__":
    main()
