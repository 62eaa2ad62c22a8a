"""Benchmark: the CPU of the per-request steps tiergate's replica runs in Python, each timed
alone on a replica of the default menu (real ORT sessions, no Ray, no HTTP): reading the
body, decoding the image, routing a pinned and a tier request, and building the answer.

    .venv/bin/python -m tests.benchmarks.bench_routing [--repeat 3000] [--tier fast]

Needs a warm cache (`tiergate compress`).
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np
import orjson

from tiergate.application import replica_spec
from tiergate.build import menu_files
from tiergate.config import load_config
from tiergate.profiles.menu import Menu
from tiergate.serving import schemas
from tiergate.serving.http.bodies import json_body
from tiergate.serving.predictions import predictions
from tiergate.serving.replica import Replica

JSON = "application/json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3000)
    parser.add_argument("--tier", default="fast")
    parser.add_argument("--variant", default="distilled+int8")
    args = parser.parse_args()
    config = load_config(None, {})
    menu = Menu.read(menu_files(config).manifest)
    replica = Replica.build(replica_spec(config, menu))
    gateway, classes = replica.gateway, replica.registry.info.classes
    image = np.random.default_rng(0).random(menu.input_shape).round(4).tolist()
    pinned_raw = orjson.dumps({"inputs": image, "variant": args.variant})
    pinned = json_body(schemas.PredictRequest, pinned_raw, JSON).model_copy(update={"batch_size": 1})
    tiered = schemas.RouteRequest(tier=args.tier, batch_size=1)
    x = gateway.decoder.from_nested(pinned.inputs)
    engine = replica.registry.get(args.variant).engine
    logits = engine.run(x)
    steps = {
        "read the JSON body (orjson, schema)": lambda: json_body(schemas.PredictRequest, pinned_raw, JSON),
        "decode the image (784 numbers, checked)": lambda: gateway.decoder.from_nested(pinned.inputs),
        f"route, pinned to {args.variant}": lambda: gateway.route(pinned),
        f"route, tier {args.tier}": lambda: gateway.route(tiered),
        "top-k predictions from the logits": lambda: predictions(logits, 1, classes),
        f"ORT run of {args.variant}, batch 1 (for scale)": lambda: replica.registry.get(
            args.variant
        ).engine.run(x),
    }
    print("| step | µs per call (best of 3) |\n|---|---|")
    for name, step in steps.items():
        best = min(timeit.repeat(step, number=args.repeat, repeat=3)) / args.repeat
        print(f"| {name} | {1e6 * best:.1f} |", flush=True)
    replica.close()


if __name__ == "__main__":
    main()
