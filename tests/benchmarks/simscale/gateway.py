"""The gateway's side of the simulation: tiergate's own routing over the simulated deployments.

    gateway = SimGateway(loop, menu, tier, pools, GatewayModel(), recorder)
    gateway.arrive()     # a request of the tier, now

Per request it does what ``Gateway.route`` does for a tier request in the ``per_variant``
topology: the live figures from ``MenuView.live`` (each variant's in-flight count, replica
count, the gateway's overhead plus the measured hop, its slowdown), the aim from
``shedding.aim``, the pick from ``policy.choose``; then ``RemoteEngine``'s admission (429 at
``max_queued_per_variant`` in flight) and its bookkeeping of the answer (in-flight, hop EWMA).
None of that is re-implemented here: the objects are tiergate's, fed simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tests.benchmarks.simscale.events import EventLoop
from tests.benchmarks.simscale.metrics import Recorder
from tests.benchmarks.simscale.pool import ReplicaPool
from tiergate.profiles.menu import Menu
from tiergate.profiles.policy import Constraints, VariantProfile, choose
from tiergate.profiles.tiers import Tier, constraints_for
from tiergate.serving.engines.stats import LiveCounters
from tiergate.serving.menu_view import MenuView
from tiergate.serving.shedding import aim

REFERENCE = "fp32"  # the registry's reference variant: tiers' accuracy drops count from it


@dataclass(frozen=True)
class GatewayModel:
    """What the simulation assumes about the gateway (tiergate's defaults where it has them)."""

    latency_headroom: float = 0.5  # serving.routing.latency_headroom
    late_grace: float | None = 0.5  # serving.admission.late_grace
    max_queued_per_variant: int = 256  # serving.admission.max_queued_per_variant
    overhead_ms: float = 0.5  # the gateway's own time per request (its overhead EWMA), assumed
    hop_ms: float = 1.0  # the Serve handle call's round trip outside the replica, assumed
    # replicas routing divides a variant's in-flight requests by: "live", the deployment's
    # running replicas; "configured", ``configured_replicas``: the variant's
    # serving.ray.variant_deployments replicas, which RemoteEngine is given today (1 unless
    # set), whatever the autoscaler runs
    replicas_seen: Literal["live", "configured"] = "live"
    configured_replicas: int = 1


def catalog_of(menu: Menu) -> list[VariantProfile]:
    """What ``menu_view.profile_of`` gives each variant when timed as in the manifest."""
    return [
        VariantProfile(e.name, e.quality, {int(b): s.p95 for b, s in e.latency_ms.items()})
        for e in menu.variants
    ]


def routing_for(menu: Menu, tier: Tier, model: GatewayModel) -> Constraints:
    """What routing aims for with a tier request that waited for nothing (``shedding.aim``)."""
    reference = next(e.quality for e in menu.variants if e.name == REFERENCE)
    return aim(constraints_for(tier, reference), 0.0, model.latency_headroom, model.late_grace)


class SimEngine:
    """What ``MenuView.live`` reads from an engine, for a simulated deployment."""

    local = False

    def __init__(self, pool: ReplicaPool, stats: LiveCounters, configured: int | None) -> None:
        self.pool, self.stats, self._configured = pool, stats, configured

    @property
    def replicas(self) -> int:
        return self.pool.running if self._configured is None else self._configured


class SimGateway:
    def __init__(
        self, loop: EventLoop, menu: Menu, tier: Tier, pools: dict[str, ReplicaPool],
        model: GatewayModel, recorder: Recorder,
    ):  # fmt: skip
        self.loop, self.model, self.recorder = loop, model, recorder
        self.catalog = catalog_of(menu)
        self.quality = {p.name: p.quality for p in self.catalog}
        self.routing = routing_for(menu, tier, model)  # a request's wait before routing is not modelled
        configured = model.configured_replicas if model.replicas_seen == "configured" else None
        self.engines = {
            name: SimEngine(pool, LiveCounters(loop.clock), configured) for name, pool in pools.items()
        }
        self.view = MenuView(0, self.catalog, self.quality, self.engines, (), self.quality[REFERENCE])
        for pool in pools.values():
            pool.on_done = self._ran

    def preferred(self) -> str | None:
        """The tier's pick with every queue empty."""
        return choose(self.catalog, self.routing).variant

    def arrive(self) -> None:
        now = self.loop.now
        live = self.view.live(self.model.overhead_ms, None)
        decision = choose(self.catalog, self.routing, live)
        if decision.variant is None:
            self.recorder.refused(now, decision.reason.value)
            return
        engine = self.engines[decision.variant]
        if engine.stats.in_flight >= self.model.max_queued_per_variant:
            self.recorder.refused(now, "queue_full")
            return
        engine.stats.in_flight += 1
        engine.pool.submit(now)

    def _ran(self, name: str, arrivals: list[float], finished: float) -> None:
        self.loop.at(finished + self.model.hop_ms / 1000, self._answered, name, arrivals, finished)

    def _answered(self, name: str, arrivals: list[float], finished: float) -> None:
        stats, now = self.engines[name].stats, self.loop.now
        stats.in_flight -= len(arrivals)
        hop_ms = (now - finished) * 1000
        for arrived in arrivals:
            stats.record_hop(hop_ms)
            latency_ms = (now - arrived) * 1000 + self.model.overhead_ms
            self.recorder.answered(arrived, name, latency_ms, self.quality[name])
