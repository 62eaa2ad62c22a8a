"""Benchmark: serving while compressing. ``tiergate serve`` on an empty cache, timed from
the command's start: the first 200 from /v1/predict, each variant's arrival on the live
menu, every variant serving, and every measurement final (fp32 first serves on a quick
estimate, measured in full last). A paced stream at concurrency 1 (one request every
``--interval-ms``, latency counted from each request's scheduled send) runs from the
start to ``--after-s`` seconds past the last measurement, so its latency during the build
and after it (the baseline: the same gateway, same model, no build) come from one run. The
stream is pinned to fp32 (``--variant``), which serves from the first answer on: a tier's
pick changes as variants join, and the ratio would compare two models.

    .venv/bin/python -m tests.benchmarks.bench_coldstart [--runs 1] [--variant fp32 | --variant '' --tier T]
        [--compare .tiergate-cache/fashion-resnet18/manifest.json]

``--compare``: a manifest built all at once (``tiergate compress``); each variant's
accuracy on the live menu is checked against its 95% interval there. ``--make-run``:
``make run`` in a fresh clone of this checkout instead (its venv created and installed
first, the clock running from ``make``'s start). ``--set FIELD=VALUE``: for ``tiergate serve``.
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

import httpx

GATEWAY = "http://127.0.0.1:8000"
IMAGE = [[[0.5] * 28] * 28]


class Stream:
    """One request at a time, each sent at its scheduled time (or at once when the last
    answer came later than that); latency is from the scheduled send."""

    def __init__(self, started: float, body: dict, interval_s: float) -> None:
        self.started, self.body, self.interval_s = started, body, interval_s
        self.answers: list[tuple[float, int, float]] = []  # (sent at s since start, status, ms)
        self.errors: list[str] = []  # the first bodies of 5xx answers
        self.stop = threading.Event()

    def run(self) -> None:
        body = {"inputs": IMAGE, **self.body}
        with httpx.Client(timeout=10) as client:
            scheduled = time.monotonic()
            while not self.stop.is_set():
                wait = scheduled - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    answer = client.post(f"{GATEWAY}/v1/predict", json=body)
                    status = answer.status_code
                    if status >= 500 and len(self.errors) < 10:
                        self.errors.append(f"{scheduled - self.started:.1f} s: {answer.text[:300]}")
                except httpx.HTTPError:
                    status = 0  # not listening yet (before the first answer), or a dropped connection
                self.answers.append((scheduled - self.started, status, (time.monotonic() - scheduled) * 1000))
                scheduled += self.interval_s


def settled(rows: dict[str, dict]) -> bool:
    """No build queued or running for any variant (fp32's full measurement included)."""
    return all((row.get("build") or {}).get("state") in (None, "done", "failed") for row in rows.values())


def catalog() -> tuple[dict[str, dict], bool]:
    """The live menu's rows by name, and whether its build is complete."""
    try:
        body = httpx.get(f"{GATEWAY}/v1/variants", timeout=5).json()
        return {row["name"]: row for row in body["variants"]}, bool((body.get("build") or {}).get("complete"))
    except (httpx.HTTPError, KeyError, ValueError):
        return {}, False


def one_run(args: argparse.Namespace) -> dict:
    env = dict(os.environ, TIERGATE_CACHE_DIR=tempfile.mkdtemp(prefix="tiergate-cold-"))
    started = time.monotonic()
    extra = [arg for setting in args.set for arg in ("--set", setting)]
    command, cwd = [sys.executable, "-m", "tiergate.cli", "serve", *extra], None
    if args.make_run:  # a fresh clone of this commit: `make run` creates its venv and installs first
        cwd = Path(tempfile.mkdtemp(prefix="tiergate-fresh-")) / "tiergate"
        subprocess.run(["git", "clone", "-q", str(Path(__file__).resolve().parents[2]), str(cwd)], check=True)
        command = ["make", "run"]
        started = time.monotonic()
    gateway = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=bool(args.make_run),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    target = {"variant": args.variant} if args.variant else {"tier": args.tier}
    stream = Stream(started, target, args.interval_ms / 1000)
    sender = threading.Thread(target=stream.run)
    sender.start()
    joined: dict[str, float] = {}
    rows: dict[str, dict] = {}
    serving_s = None  # every variant serving (fp32 maybe on its quick estimate still)
    try:
        while time.monotonic() - started < args.timeout_s:
            rows, complete = catalog()
            for name, row in rows.items():
                if row["state"] in ("serving", "failed") and name not in joined:
                    joined[name] = time.monotonic() - started
                    print(f"  {time.monotonic() - started:6.1f} s  {name}: {row['state']}", file=sys.stderr)
            if complete and len(joined) == len(rows) and serving_s is None:
                serving_s = time.monotonic() - started
            if serving_s is not None and settled(rows):
                break
            time.sleep(1)
        complete_s = time.monotonic() - started
        time.sleep(args.after_s)
        rows, _ = catalog()  # the final figures (a replica applies the last manifest within seconds)
    finally:
        stream.stop.set()
        sender.join()
        if args.make_run:  # make's child, the gateway, gets the Ctrl-C as from a terminal
            os.killpg(gateway.pid, signal.SIGINT)
        else:
            gateway.send_signal(signal.SIGINT)
        gateway.wait(180)
    summary = summarize(stream.answers, joined, complete_s, rows, args)
    return {**summary, "every_variant_serving_s": serving_s, "errors": stream.errors}


def summarize(answers, joined, complete_s, rows, args) -> dict:
    served = [a for a in answers if a[1] != 0]
    first_200 = next((sent for sent, status, _ in answers if status == 200), None)
    during = [ms for sent, status, ms in served if sent < complete_s and first_200 and sent >= first_200]
    after = [ms for sent, status, ms in served if sent >= complete_s + 2]
    fivexx = [a for a in served if a[1] >= 500 and first_200 is not None and a[0] >= first_200]
    result = {
        "first_200_s": first_200, "all_measured_s": complete_s, "joined_s": joined,
        "during": pct(during), "after": pct(after), "requests_after_first_200": len(during) + len(after),
        "status_5xx": len(fivexx), "statuses": sorted({a[1] for a in served}),
        "states": {name: row["state"] for name, row in rows.items()},
        "accuracy": {name: row.get("accuracy") for name, row in rows.items()},
    }  # fmt: skip
    if result["during"] and result["after"]:
        result["p50_ratio"] = result["during"]["p50"] / result["after"]["p50"]
    if args.compare:
        result["outside_ci"] = outside_interval(rows, args.compare)
    return result


def pct(values: list[float]) -> dict | None:
    if not values:
        return None
    q = statistics.quantiles(values, n=100) if len(values) > 1 else [values[0]] * 99
    return {"n": len(values), "p50": statistics.median(values), "p99": q[98]}


def outside_interval(rows: dict[str, dict], manifest: Path) -> dict[str, str]:
    """Variants whose live accuracy lies outside the compared manifest's 95% interval."""
    reference = {e["name"]: e for e in json.loads(manifest.read_text())["variants"]}
    outside = {}
    for name, row in rows.items():
        entry = reference.get(name)
        if entry is None or row.get("accuracy") is None or entry.get("accuracy_ci95") is None:
            continue
        low, high = entry["accuracy_ci95"]
        if not low <= row["accuracy"] <= high:
            outside[name] = f"{row['accuracy']:.4f} not in [{low:.4f}, {high:.4f}]"
    return outside


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--variant", default="fp32", help="the stream's pin: one model before and after")
    parser.add_argument("--tier", default="accurate", help="the stream's tier, with --variant ''")
    parser.add_argument("--interval-ms", type=float, default=100.0)
    parser.add_argument("--after-s", type=float, default=60.0, help="the no-build baseline's length")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--compare", type=Path, help="a manifest built all at once, for accuracy")
    parser.add_argument("--make-run", action="store_true",
                        help="`make run` in a fresh clone (its own venv: install included)")  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="for tiergate serve"
    )
    args = parser.parse_args()
    runs = []
    for index in range(args.runs):
        runs.append(one_run(args))
        print(json.dumps({"run": index + 1, **runs[-1]}), flush=True)
    print("| run | first 200 s | every variant serving s | all measured s | 5xx after first 200 | requests "
          "| p50 during build ms | p50 after ms | ratio | p99 during / after ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for index, r in enumerate(runs, 1):
        during, after = r["during"] or {}, r["after"] or {}
        print(f"| {index} | {r['first_200_s']:.1f} | {r['every_variant_serving_s'] or nan:.0f} "
              f"| {r['all_measured_s']:.0f} | {r['status_5xx']} "
              f"| {r['requests_after_first_200']} | {during.get('p50', nan):.1f} "
              f"| {after.get('p50', nan):.1f} | {r.get('p50_ratio', nan):.2f} "
              f"| {during.get('p99', nan):.0f} / {after.get('p99', nan):.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
