"""Simulation: Ray Serve's autoscaling beside tiergate's routing, on one tier's traffic.

Each variant a tier may use is its own Ray Serve deployment (``topology: per_variant``) of
10 to 100 replicas, autoscaled by Ray's default rule (``simscale.autoscaler``); tiergate's
real routing (``policy.choose`` with the live figures ``MenuView.live`` derives) sends
each request to one of them. Run times are drawn from the menu manifest's measured p50/p95
per batch size. Scenarios (by key), one seeded run each, Ray's autoscaling defaults but for
the bounds (10 to 100 replicas) and target_ongoing_requests:

  target-T    the load steps from 0.4x to 1.2x of the preferred variant's capacity at 10
              replicas at 60 s, and back at 300 s; target T, each of --targets
  fixed       the same step on 10 fixed replicas per variant: routing alone
  sees-N      the step, target --targets[0], with routing dividing in-flight requests by N
              replicas whatever runs: what tiergate does today with autoscaling (it is given
              the variant's VariantDeployment.replicas, 1 by default), N = 1 and 10
  hunt        the step with downscale_delay_s 60 s (Ray: 600 s)
  hunt-alone  the same with the preferred variant alone: no cheaper variant to route to
  sine        the load swings from 0.4x to 3x and back every 300 s

and prints, per scenario, the criteria of ``simscale.report`` as a markdown table.

    .venv/bin/python -m tests.benchmarks.sim_autoscale [--manifest benchmarks/menu.json] \\
        [--tier accurate] [--targets 1 2] [--seed 1] [--plot benchmarks/sim_autoscale.png] \\
        [--only KEY ...] [--headroom 0.5] [--hop-ms 1.0]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import replace
from pathlib import Path

from tests.benchmarks.simscale.autoscaler import AutoscalingConfig
from tests.benchmarks.simscale.gateway import GatewayModel, catalog_of, routing_for
from tests.benchmarks.simscale.report import allowance_per_replica, plot, summarize, table
from tests.benchmarks.simscale.scenarios import Scenario, Sine, Step, run
from tiergate.profiles.menu import Menu
from tiergate.profiles.policy import choose
from tiergate.profiles.tiers import default_tiers


def scenarios(targets: list[float], model: GatewayModel, replicas: int = 10) -> list[Scenario]:
    """The scenarios, each with a short ``key``; ``targets[0]`` is the one the later ones use."""

    def autoscaling(target: float, downscale_delay_s: float = 600.0) -> AutoscalingConfig:
        # Ray's defaults (30 s up, 600 s down, 30 s look-back, 10 s metrics) but for the bounds and target
        return AutoscalingConfig(
            min_replicas=replicas,
            max_replicas=10 * replicas,
            target_ongoing_requests=target,
            downscale_delay_s=downscale_delay_s,
        )

    step, first = Step(base=0.4, factor=3.0, up_s=60.0, down_s=300.0), targets[0]
    seen = {n: replace(model, replicas_seen="configured", configured_replicas=n) for n in (1, replicas)}
    short = autoscaling(first, downscale_delay_s=60.0)
    return [
        *(
            Scenario(f"step 3x, target {t:g}", step, autoscaling(t), gateway=model, key=f"target-{t:g}")
            for t in targets
        ),
        Scenario(f"step 3x, fixed {replicas} replicas", step, None, gateway=model, key="fixed"),
        *(
            Scenario(
                f"step 3x, target {first:g}, routing divides by {n}",
                step,
                autoscaling(first),
                gateway=seen[n],
                key=f"sees-{n}",
            )
            for n in (1, replicas)
        ),
        Scenario(f"step 3x, target {first:g}, downscale delay 60 s", step, short, gateway=model, key="hunt"),
        Scenario(
            "the same, preferred variant alone",
            step,
            short,
            gateway=model,
            alone=True,
            key="hunt-alone",
        ),
        Scenario(
            f"sine 0.4-3x per 300 s, target {first:g}",
            Sine(0.4, 3.0, 300.0),
            autoscaling(first),
            horizon_s=600.0,
            gateway=model,
            key="sine",
        ),
    ]


def describe(menu: Menu, path: Path, tier_name: str, model: GatewayModel) -> str:
    """The menu used, the tier's aim, and how much in flight routing lets each variant hold."""
    tier = default_tiers()[tier_name]
    catalog, routing = catalog_of(menu), routing_for(menu, tier, model)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    lines = [
        f"menu {path} (sha256 {digest}), tier {tier_name}: bound {tier.max_latency_ms:g} ms, routing aims at "
        f"{routing.max_latency_ms:g} ms, accuracy floor {routing.min_accuracy:.4f}, preferred at rest: "
        f"{choose(catalog, routing).variant}; overhead {model.overhead_ms:g} ms + hop {model.hop_ms:g} ms",
        "  variant: batch-1 p95 ms; requests in flight per replica routing allows it (at 10 replicas)",
    ]
    for profile in catalog:
        if routing.min_accuracy is None or profile.quality >= routing.min_accuracy:
            overhead = model.overhead_ms + model.hop_ms
            allowed = allowance_per_replica(profile, routing.max_latency_ms, overhead, 10)
            lines.append(f"  {profile.name}: {profile.latency_ms[1]:.2f}; {allowed:.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=Path("benchmarks/menu.json"))
    parser.add_argument("--tier", default="accurate")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[1.0, 2.0],
        help="target_ongoing_requests of the autoscaled step runs (the first: also the others')",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--only", nargs="+", default=None, help="run only the scenarios with these keys")
    parser.add_argument("--headroom", type=float, default=0.5, help="serving.routing.latency_headroom")
    parser.add_argument("--hop-ms", type=float, default=1.0, help="the Serve handle call's round trip")
    args = parser.parse_args()  # fmt: skip
    menu, model = Menu.read(args.manifest), GatewayModel(latency_headroom=args.headroom, hop_ms=args.hop_ms)
    print(describe(menu, args.manifest, args.tier, model), flush=True)
    results, rows = [], []
    chosen = [s for s in scenarios(args.targets, model) if args.only is None or s.key in args.only]
    for scenario in chosen:
        started = time.perf_counter()
        result = run(replace(scenario, tier=args.tier), menu, args.seed)
        results.append(result)
        rows.append(summarize(result))
        elapsed = time.perf_counter() - started
        print(f"  [{scenario.key}] {scenario.name}: {result.events} events in {elapsed:.1f} s", flush=True)
    print()
    print(table(rows, results[0].preferred))
    if args.plot is not None:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
