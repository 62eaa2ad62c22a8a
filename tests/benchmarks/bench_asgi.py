"""Benchmark: tiergate's own CPU per request, in-process: the HTTP app a replica serves
(``create_app``: middleware, routes, validation, routing, batcher, engine, metrics) driven
with raw ASGI calls on one uvloop event loop, no sockets, Ray or HAProxy. The event loop's
thread CPU per answer is what a replica's loop spends on tiergate's code; the process CPU
adds the ORT run threads. For quick before/after comparisons of the hot path.

    .venv/bin/python -m tests.benchmarks.bench_asgi [--variant distilled+int8 | --tier fast] \
        [--requests 20000] [--concurrency 32] [--rounds 3] [--set FIELD=VALUE ...]

A closed loop in one process outruns the loop-lag check (serving.admission.max_loop_lag_ms):
pass ``--set serving.admission.max_loop_lag_ms=100000`` for figures without its refusals.

Needs a warm cache (`tiergate compress`).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
import orjson
import uvloop
import yaml

from tiergate.application import replica_spec
from tiergate.build import menu_files
from tiergate.config import load_config
from tiergate.profiles.menu import Menu
from tiergate.serving.http import create_app
from tiergate.serving.metrics import Metrics
from tiergate.serving.replica import Replica


def request_scope(path: str, body: bytes) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip


async def one(app, path: str, body: bytes, reasons: dict[int, bytes]) -> int:
    """One request through the app; its status (the first answer of each other status in ``reasons``)."""
    status = 0
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the answer is on its way

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif status != 200:
            reasons.setdefault(status, message.get("body", b"")[:200])

    await app(request_scope(path, body), receive, send)
    return status


async def drive(app, path: str, body: bytes, requests: int, concurrency: int) -> dict:
    statuses: dict[int, int] = {}
    reasons: dict[int, bytes] = {}
    left = requests

    async def worker():
        nonlocal left
        while left > 0:
            left -= 1
            status = await one(app, path, body, reasons)
            await asyncio.sleep(0)  # a client's next request comes in a later loop turn, as off a socket
            statuses[status] = statuses.get(status, 0) + 1

    started, loop_cpu, cpu = time.perf_counter(), time.thread_time(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "seconds": time.perf_counter() - started, "loop_cpu_s": time.thread_time() - loop_cpu,
        "cpu_s": time.process_time() - cpu, "statuses": statuses, "reasons": reasons,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="distilled+int8")
    parser.add_argument("--tier", help="route by this tier instead of pinning --variant")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="config override (FIELD=VALUE)")
    args = parser.parse_args()
    overrides = {field: yaml.safe_load(value) for field, value in (item.split("=", 1) for item in args.set)}
    config = load_config(None, overrides)
    menu = Menu.read(menu_files(config).manifest)
    spec = replica_spec(config, menu)
    image = np.random.default_rng(0).random(menu.input_shape).round(4).tolist()
    routing = {"tier": args.tier} if args.tier else {"variant": args.variant}
    body = orjson.dumps({"inputs": image, **routing})

    async def run() -> None:
        replica = Replica.build(spec, metrics=lambda registry: Metrics(spec.tiers, registry))
        app = create_app(replica)
        await drive(app, "/v1/predict", body, 3000, args.concurrency)  # warm-up
        target = f"tier {args.tier}" if args.tier else f"{args.variant} pinned"
        print(f"{target}, {args.concurrency} at once, {args.requests} requests per round")
        for round_number in range(1, args.rounds + 1):
            result = await drive(app, "/v1/predict", body, args.requests, args.concurrency)
            answers = result["statuses"].get(200, 0) or 1
            print(f"round {round_number}: {answers / result['seconds']:.0f} answers/s, "
                  f"event loop {1e6 * result['loop_cpu_s'] / answers:.0f} µs CPU/answer, "
                  f"process {1e6 * result['cpu_s'] / answers:.0f} µs CPU/answer, "
                  f"statuses {result['statuses']}", flush=True)  # fmt: skip
            for status, reason in result["reasons"].items():
                print(f"  {status}: {reason.decode(errors='replace')}")
        replica.close()

    uvloop.run(run())


if __name__ == "__main__":
    main()
