"""Scenarios: a tier's traffic over time, the deployments' scaling, and one seeded run of it.

    scenario = Scenario("step, target 1", load=Step(base=0.4, factor=3.0, up_s=60, down_s=300),
                        autoscaling=AutoscalingConfig(min_replicas=10, max_replicas=100,
                                                      target_ongoing_requests=1.0))
    result = run(scenario, menu, seed=1)    # result.recorder: per-bin figures

Load is in units of the tier's preferred variant's capacity at ``initial_replicas``: replicas
x 1000 / its batch-1 p50 ms, requests per second. Arrivals are Poisson: each gap is
exponential at the rate of the moment (rates change slowly next to the gaps).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from tests.benchmarks.simscale.autoscaler import CONTROL_LOOP_S, Autoscaler, AutoscalingConfig
from tests.benchmarks.simscale.events import EventLoop
from tests.benchmarks.simscale.gateway import REFERENCE, GatewayModel, SimGateway, catalog_of, routing_for
from tests.benchmarks.simscale.metrics import Recorder
from tests.benchmarks.simscale.pool import ReplicaPool
from tests.benchmarks.simscale.service import ServiceTimes
from tiergate.profiles.menu import Menu
from tiergate.profiles.policy import choose
from tiergate.profiles.tiers import default_tiers


@dataclass(frozen=True)
class Step:
    """``base`` load, ``factor`` times it from ``up_s`` to ``down_s``."""

    base: float
    factor: float
    up_s: float
    down_s: float

    def at(self, t: float) -> float:
        return self.base * self.factor if self.up_s <= t < self.down_s else self.base


@dataclass(frozen=True)
class Sine:
    """Between ``low`` and ``high`` load, one full cycle every ``period_s``, starting at ``low``."""

    low: float
    high: float
    period_s: float

    def at(self, t: float) -> float:
        return self.low + (self.high - self.low) * (1 - math.cos(2 * math.pi * t / self.period_s)) / 2


@dataclass(frozen=True)
class Scenario:
    name: str
    load: Step | Sine
    autoscaling: AutoscalingConfig | None  # None: fixed replicas, routing alone
    tier: str = "accurate"
    horizon_s: float = 600.0
    initial_replicas: int = 10  # per deployment (Ray starts an autoscaled one at min_replicas)
    startup_s: float = 10.0  # a new replica's start (actor, model load) before it takes requests
    gateway: GatewayModel = field(default_factory=GatewayModel)
    bin_s: float = 10.0
    # serve only the preferred variant (and the fp32 reference the tier's floor counts from):
    # routing has nowhere cheaper to send a request, so the autoscaler acts alone
    alone: bool = False
    key: str = ""  # a short name to select the scenario by


@dataclass
class Result:
    scenario: Scenario
    recorder: Recorder
    preferred: str
    unit_rate_per_s: float  # requests per second at load 1
    events: int  # events the loop ran


def run(scenario: Scenario, menu: Menu, seed: int) -> Result:
    """One seeded run: the same scenario, menu and seed give the same figures."""
    loop = EventLoop()
    tier = default_tiers()[scenario.tier]
    if scenario.alone:
        preferred = choose(catalog_of(menu), routing_for(menu, tier, scenario.gateway)).variant
        menu = menu.model_copy(
            update={"variants": [e for e in menu.variants if e.name in (REFERENCE, preferred)]}
        )
    entries = {entry.name: entry for entry in menu.variants}
    floor = tier.floor(entries[REFERENCE].quality)
    names = [e.name for e in menu.variants if floor is None or e.quality >= floor]
    recorder = Recorder(names, tier.max_latency_ms or math.inf, scenario.bin_s, scenario.horizon_s)
    pools = {
        name: ReplicaPool(
            name,
            loop,
            ServiceTimes.of(entries[name], 32),
            random.Random(f"{seed}:{name}"),
            on_done=None,
            replicas=scenario.initial_replicas,
            startup_s=scenario.startup_s,
        )
        for name in names
    }
    gateway = SimGateway(loop, menu, tier, pools, scenario.gateway, recorder)
    preferred = gateway.preferred()
    unit = scenario.initial_replicas * 1000 / entries[preferred].latency_ms["1"].p50
    _arrivals(loop, scenario, gateway, recorder, unit, random.Random(f"{seed}:arrivals"))
    if scenario.autoscaling is not None:
        _autoscale(loop, scenario.autoscaling, pools, recorder)
    loop.every(scenario.bin_s, lambda: recorder.snapshot(loop.now, {n: p.running for n, p in pools.items()}),
               start=scenario.bin_s)  # fmt: skip
    loop.run(scenario.horizon_s + 1.0)  # a second more, so the last requests are answered
    return Result(scenario, recorder, preferred, unit, loop.events_run)


def _arrivals(loop: EventLoop, scenario: Scenario, gateway: SimGateway, recorder: Recorder,
              unit: float, rng: random.Random) -> None:  # fmt: skip
    horizon = scenario.horizon_s

    def arrive() -> None:
        recorder.arrived(loop.now)
        gateway.arrive()
        gap = rng.expovariate(scenario.load.at(loop.now) * unit)
        if loop.now + gap < horizon:
            loop.at(loop.now + gap, arrive)

    loop.at(rng.expovariate(scenario.load.at(0.0) * unit), arrive)


def _autoscale(loop: EventLoop, config: AutoscalingConfig, pools: dict[str, ReplicaPool],
               recorder: Recorder) -> None:  # fmt: skip
    """Ray's loops for each deployment: replicas record, push, and the controller decides."""
    for name, pool in pools.items():
        rule = Autoscaler(config)
        loop.every(config.record_interval_s, lambda p=pool, r=rule: r.window.record(loop.now, p.ongoing()))
        loop.every(config.metrics_interval_s, lambda r=rule: r.window.push(loop.now))

        def control(name: str = name, pool: ReplicaPool = pool, rule: Autoscaler = rule) -> None:
            target = rule.decide(loop.now, pool.running, pool.target)
            if target != pool.target:
                pool.scale_to(target)
                recorder.scaled(loop.now, name, target)

        loop.every(CONTROL_LOOP_S, control, start=CONTROL_LOOP_S)
