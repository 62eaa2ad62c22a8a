"""Check: how fast shadow sampling demotes a broken variant, and how often it demotes a
healthy one, on the default model's menu (a warm cache: ``tiergate compress`` first).

    TIERGATE_CACHE_DIR=... .venv/bin/python -m tests.benchmarks.check_shadow \
        [--images 2000] [--streams 200] [--samples 2000] [--config F] [--seed 0]

1. End to end: the real app over a replica with real ORT serves ``distilled`` with its
   weights spoiled (``tests.support.shadow.broken_variant``), every request pinned to it,
   one test image each, request ids ``req-0``, ``req-1``, ... at the default rate (2%): the
   number of requests, and of shadowed ones, until it is demoted.
2. By resampling: each variant's top-1 and fp32's on ``--images`` test images (ORT, batch
   256) give its real per-image agreement; ``--streams`` shuffled streams of ``--samples``
   shadowed images each (drawn with replacement) go through the real ``Demoter`` with the
   default settings. For every healthy variant: the share of streams with a demotion (the
   false-demotion rate over ``--samples`` shadowed images, i.e. samples / rate requests); for
   the broken one: the shadowed images until its demotion (median, max).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tests.support.asgi import AppClient
from tests.support.metrics import Statuses
from tests.support.replicas import replica_for
from tests.support.shadow import broken_variant
from tiergate.build.menu import menu_files
from tiergate.compression import load_splits
from tiergate.config import load_config
from tiergate.profiles.measure import open_session, predict
from tiergate.profiles.menu import Menu, MenuEntry
from tiergate.serving.config import ServingConfig
from tiergate.serving.http import create_app
from tiergate.serving.quality import DEMOTED, Demoter, LiveFidelity
from tiergate.serving.registry import MenuInfo, MenuRegistry
from tiergate.settings import DEFAULT_CONFIG

SERVING = ServingConfig(admission={"max_loop_lag_ms": 60_000})
SHADOW = SERVING.shadow


def top1(entry: MenuEntry, x: np.ndarray) -> np.ndarray:
    return predict(open_session(Path(entry.path).read_bytes(), threads=2), x).argmax(1)


def end_to_end(menu: Menu, broken: MenuEntry, config, x: np.ndarray, limit: int = 50_000) -> tuple[int, int]:
    """Requests (and of them shadowed) until the broken variant is demoted, over the real app."""
    variants = [broken if entry.name == broken.name else entry for entry in menu.variants]
    sink = Statuses()
    replica = replica_for(menu.model_copy(update={"variants": variants}), config.tiers, serving=SERVING,
                          metrics=lambda registry: sink)  # fmt: skip
    with AppClient(create_app(replica)) as client:
        for n in range(limit):
            body = {"inputs": x[n % len(x) : n % len(x) + 1].tolist(), "variant": broken.name}
            response = client.request("POST", "/v1/predict", json=body, headers={"X-Request-Id": f"req-{n}"})
            assert response.status_code == 200, response.text
            client.run(replica.shadow.drain())
            if broken.name in replica.registry.demoted:
                return n + 1, sum(outcome[1] == "shadowed" for outcome in sink.shadow_outcomes)
    raise SystemExit(f"{broken.name} not demoted after {limit} requests")


def streams(entry: MenuEntry, agreed: np.ndarray, args, rng: np.random.Generator) -> list[int | None]:
    """For each resampled stream of shadowed images: the image at which the real Demoter
    demoted ``entry`` (None: never, within ``args.samples``)."""
    outcomes = []
    for _ in range(args.streams):
        registry = MenuRegistry(MenuInfo("m", "d", "accuracy", (), None), reference="fp32")
        engine = SimpleNamespace(name=entry.name, available=True, closed=False, stats=None)
        registry.add(entry, engine)
        demoter = Demoter(registry, LiveFidelity(SHADOW.window_samples, SHADOW.window_s), SHADOW)
        demoted_at = None
        for n, agreement in enumerate(rng.choice(agreed, size=args.samples), start=1):
            if demoter.observe(entry.name, int(agreement), 1) == DEMOTED:
                demoted_at = n
                break
        outcomes.append(demoted_at)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="test images whose agreement is measured")
    parser.add_argument("--streams", type=int, default=200, help="resampled streams per variant")
    parser.add_argument("--samples", type=int, default=2000, help="shadowed images per stream")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(args.config)
    menu = Menu.read(menu_files(config).manifest)
    rng = np.random.default_rng(args.seed)
    test = load_splits(config.data).test
    x = test.x[rng.choice(len(test.y), size=args.images, replace=False)].astype(np.float32)
    broken = broken_variant(
        next(e for e in menu.variants if e.name == "distilled"), Path(tempfile.mkdtemp()), noise=1.0
    )

    requests, shadowed = end_to_end(menu, broken, config, x)
    print(f"end to end: {broken.name} (weights spoiled) demoted after {requests} requests, "
          f"{shadowed} of them shadowed, at rate {SHADOW.rate}\n")  # fmt: skip
    reference = top1(menu.variants[0], x)
    print(f"{'variant':16} {'fid offline':>11} {'fid live':>9} {'demoted streams':>16} "
          f"{'N median':>9} {'N max':>6}")  # fmt: skip
    for entry in [*menu.variants[1:], broken]:
        agreed = top1(entry, x) == reference
        outcomes = streams(entry, agreed, args, rng)
        hits = [n for n in outcomes if n is not None]
        label = f"{entry.name}{' (broken)' if entry is broken else ''}"
        median = f"{np.median(hits):.0f}" if hits else "-"
        print(f"{label:16} {entry.fidelity:11.4f} {agreed.mean():9.4f} {len(hits):>7}/{len(outcomes):<8} "
              f"{median:>9} {max(hits, default=0) or '-':>6}")  # fmt: skip
    requests_per_stream = args.samples / SHADOW.rate
    print(f"\n{args.streams} streams of {args.samples} shadowed images each ({requests_per_stream:,.0f} "
          f"requests at rate {SHADOW.rate}); defaults: min_samples {SHADOW.min_samples}, window "
          f"{SHADOW.window_samples} images, demote_z {SHADOW.demote_z}")  # fmt: skip


if __name__ == "__main__":
    main()
