"""Check: live accuracy from label feedback agrees with the offline figures. A real gateway
(``tiergate serve`` on a warm cache) answers ``--requests`` test-set images per variant,
each request pinned to the variant; every answer is then labelled through POST
/v1/feedback, and each variant's live accuracy is read from the gateway's own counters
(ray_tiergate_feedback_{labelled,correct}_total on Ray's metrics endpoint). It passes when
every variant's live accuracy lies within its offline 95% interval.

    TIERGATE_CACHE_DIR=... .venv/bin/python -m tests.benchmarks.check_feedback_accuracy \
        [--requests 5000] [--concurrency 8] [--config F] [--seed 0]

The images are a seeded sample of the test split, the same for every variant.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.benchmarks.bench_gateway import wait_ready
from tiergate.compression import load_splits
from tiergate.config import load_config
from tiergate.settings import DEFAULT_CONFIG

Z = 1.96  # 95%


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wilson(correct: int, n: int) -> tuple[float, float]:
    p, z2 = correct / n, Z * Z
    centre, half = p + z2 / (2 * n), Z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (centre - half) / (1 + z2 / n), (centre + half) / (1 + z2 / n)


async def predict_all(url: str, variant: str, images: np.ndarray, concurrency: int) -> list[str]:
    """One pinned request per image; the answers' request ids, in the images' order."""
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(image: np.ndarray) -> str:
            body = orjson.dumps({"inputs": image, "variant": variant}, option=orjson.OPT_SERIALIZE_NUMPY)
            async with limit:
                answer = await client.post("/v1/predict", content=body,
                                           headers={"content-type": "application/json"})  # fmt: skip
            answer.raise_for_status()
            return answer.json()["request_id"]

        return await asyncio.gather(*(one(image) for image in images))


def feed_back(url: str, request_ids: list[str], labels: np.ndarray, per_call: int = 500) -> int:
    """Label every answer, ``per_call`` items a call; how many were accepted."""
    accepted = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        pairs = list(zip(request_ids, labels.tolist(), strict=True))
        for start in range(0, len(pairs), per_call):
            items = [{"request_id": rid, "label": label} for rid, label in pairs[start : start + per_call]]
            answer = client.post("/v1/feedback", json={"items": items})
            answer.raise_for_status()
            accepted += answer.json()["accepted"]
    return accepted


def live_counts(metrics_url: str) -> dict[str, list[float]]:
    """variant -> [labelled, correct], summed over tiers and bounds, from Ray's endpoint."""
    counts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, column = sample.name, None
            if name == "ray_tiergate_feedback_labelled_total":
                column = 0
            elif name == "ray_tiergate_feedback_correct_total":
                column = 1
            if column is not None:
                counts[sample.labels["variant"]][column] += sample.value
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000, help="test images per variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(args.config)
    test = load_splits(config.data).test
    chosen = np.random.default_rng(args.seed).choice(len(test.y), size=args.requests, replace=False)
    images, labels = test.x[chosen].astype(np.float32), test.y[chosen]

    port, metrics_port = free_port(), free_port()
    command = [sys.executable, "-m", "tiergate.cli", "serve", f"--config={args.config}",
               f"--set=serving.http.port={port}", f"--set=serving.http.metrics_port={metrics_port}",
               f"--set=serving.feedback.max_answers={args.requests}"]  # fmt: skip
    gateway = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/readyz", timeout_s=600)
        menu = {row["name"]: row for row in httpx.get(f"{url}/v1/variants", timeout=10).json()["variants"]}
        failed = check_variants(url, f"http://127.0.0.1:{metrics_port}/metrics", menu, images, labels, args)
    finally:
        gateway.send_signal(signal.SIGINT)
        gateway.wait(120)
    sys.exit(1 if failed else 0)


def check_variants(url, metrics_url, menu, images, labels, args) -> list[str]:
    """Serve, label and compare each variant; the names of those outside their interval."""
    for name in menu:
        started = time.monotonic()
        request_ids = asyncio.run(predict_all(url, name, images, args.concurrency))
        accepted = feed_back(url, request_ids, labels)
        print(f"{name}: {len(request_ids)} answers labelled ({accepted} accepted) in "
              f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip
    deadline = time.monotonic() + 60  # the replica flushes its counters to Ray every second
    while time.monotonic() < deadline:
        counts = live_counts(metrics_url)
        if all(counts[name][0] >= args.requests for name in menu):
            break
        time.sleep(2)
    print(f"\n{'variant':<16}{'offline %':>10}{'offline ci95':>16}{'live %':>9}{'live wilson95':>16}"
          f"{'n':>7}  live in offline ci95  offline in live wilson95")  # fmt: skip
    failed = []
    for name, row in menu.items():
        labelled, correct = counts[name]
        low, high = row["accuracy_ci95"]
        live = correct / labelled
        live_low, live_high = wilson(int(correct), int(labelled))
        inside, holds_offline = low <= live <= high, live_low <= row["accuracy"] <= live_high
        failed += [] if inside else [name]
        print(f"{name:<16}{100 * row['accuracy']:>10.2f}{f'{100 * low:.2f}-{100 * high:.2f}':>16}"
              f"{100 * live:>9.2f}{f'{100 * live_low:.2f}-{100 * live_high:.2f}':>16}{int(labelled):>7}  "
              f"{'yes' if inside else 'NO':<22}{'yes' if holds_offline else 'NO'}")  # fmt: skip
    return failed


if __name__ == "__main__":
    os.environ.setdefault("TIERGATE_CACHE_DIR", ".tiergate-cache")
    main()
