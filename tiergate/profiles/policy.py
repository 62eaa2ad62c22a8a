"""Routing policy: which variant serves a request, and why. Pure code: no Ray, no
clock, no I/O, so the serving layer stays a thin shell around it.

    catalog = [VariantProfile("fp32", 0.928, {1: 8.9, 8: 60.0}), VariantProfile("int8", 0.927, {1: 2.9})]
    decision = choose(catalog, Constraints(max_latency_ms=5.0), live={"fp32": LiveStats(in_flight=3)})
    decision.variant, decision.reason  # ('int8', Reason.BEST)

1. keep ready variants that meet the accuracy floor;
2. predict each one's latency now: profiled latency at the expected batch size plus
   the queueing delay implied by the requests already in flight on it (or, where
   variants share the same cores, on all of them: ``LiveStats.shared_wait_ms``);
3. among those predicted to fit ``max_latency_ms``, take the most accurate (ties go
   to the faster);
4. if none fits, take the fastest that meets the floor and say so (``fallback``),
   or refuse when the request is strict;
5. a fallback that load (not the variants' own speed) would push past
   ``Constraints.shed_after_ms`` is refused instead (``shed``): under overload a request
   that would be answered late is turned away at once, so the ones admitted are
   answered in time (Clockwork, OSDI'20, drops requests that can no longer meet their
   SLO rather than running them late). Only while some variant has work in flight or
   queued: a lone request that a pause made late relieves nothing by being refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Reason(StrEnum):
    BEST = "best"  # the most accurate variant that fits, and load did not change the pick
    DEGRADED = "degraded"  # load pushed the pick to a less accurate variant that still fits
    PINNED = "pinned"  # the request named its variant
    FALLBACK = "fallback"  # nothing fits the latency budget: the fastest that meets the floor
    REJECTED = "rejected"  # nothing meets the floor, or nothing fits and the request is strict
    SHED = "shed"  # a fallback that load would make later than Constraints.shed_after_ms: refused


@dataclass(frozen=True)
class VariantProfile:
    name: str
    quality: float  # accuracy on the test split (fidelity when the data has no labels)
    latency_ms: Mapping[int, float]  # profiled p95 per batch size; must include 1
    ready: bool = True


class LiveStats(NamedTuple):  # a tuple: built for every variant on every request
    in_flight: int = 0  # requests queued or running on the variant now
    replicas: int = 1  # servers draining that queue in parallel
    overhead_ms: float = 0.0  # measured time outside the model: decoding, routing, the actor hop
    slowdown: float = 1.0  # recent run time over the profiled one (contention the profile missed)
    # where the variant's runs share cores with other variants' (one replica serving them
    # all): the expected wait for a core, given the work queued on every variant sharing
    # them; None where its queue is its own (then ``in_flight`` and ``replicas`` set the wait)
    shared_wait_ms: float | None = None


@dataclass(frozen=True)
class Constraints:
    max_latency_ms: float | None = None
    min_accuracy: float | None = None
    variant: str | None = None  # pin
    strict: bool = False
    # a non-strict request is refused (SHED) when even the fastest variant is predicted to
    # answer later than this after arrival, and at rest it would not be (so load, not the
    # menu, is why); None: never refused for lateness
    shed_after_ms: float | None = None
    waited_ms: float = 0.0  # how long the request waited before routing (counts toward shedding)


@dataclass(frozen=True)
class Decision:
    variant: str | None  # None only when rejected
    reason: Reason
    predicted_latency_ms: float | None
    slo_met: bool  # predicted: fits max_latency_ms and meets min_accuracy
    explanation: str


class UnknownVariant(KeyError):
    """A pinned variant that is not in the catalog."""


def service_time_ms(profile: VariantProfile, batch_size: int) -> float:
    """Profiled latency at ``batch_size``, linear between profiled sizes, proportional beyond."""
    if batch_size in profile.latency_ms:
        return profile.latency_ms[batch_size]
    sizes = sorted(profile.latency_ms)
    below = [s for s in sizes if s < batch_size]
    above = [s for s in sizes if s > batch_size]
    if not above:
        largest = sizes[-1]
        return profile.latency_ms[largest] * batch_size / largest
    if not below:
        return profile.latency_ms[above[0]]
    low, high = below[-1], above[0]
    weight = (batch_size - low) / (high - low)
    return profile.latency_ms[low] * (1 - weight) + profile.latency_ms[high] * weight


def batches_ms(images: int, max_batch_size: int, at_once: int, run_ms: Callable[[int], float]) -> float:
    """Run time for ``images`` in full batches of ``max_batch_size`` (the last as long as a
    full one: a batch is never split across runs), ``at_once`` batches running together,
    each taking ``run_ms(batch size)``. 0 for no images."""
    if not images:
        return 0.0
    rounds = math.ceil(math.ceil(images / max_batch_size) / at_once)
    return rounds * run_ms(min(images, max_batch_size))


def predict_latency_ms(profile: VariantProfile, live: LiveStats, batch_size: int = 1) -> float:
    """Service time (scaled by the variant's recent slowdown against its profile), plus the
    wait for a place to run (behind the batches already in flight on it, or the shared
    wait where variants share cores), plus the gateway's own measured overhead (so the
    prediction is end to end).

    Why the shared wait: variants served by one replica run on the same cores, so a
    request sent to an idle variant still waits behind the runs of the busy ones. Counting
    each variant's own queue only, a burst on int8 would send the next requests to the
    idle but slower fp32-pruned, into the same queue."""
    service = service_time_ms(profile, batch_size) * live.slowdown
    if live.shared_wait_ms is not None:
        return service + live.shared_wait_ms + live.overhead_ms
    # the requests in flight, batch_size images each, run by the replicas together
    queued_ms = batches_ms(live.in_flight, batch_size, max(1, live.replicas), lambda _: service)
    return service + queued_ms + live.overhead_ms


def at_rest(live: LiveStats) -> LiveStats:
    """``live`` with nothing queued: what a variant's latency would be at no load (built
    directly, not with ``dataclasses.replace``: routing calls this on every request)."""
    shared = None if live.shared_wait_ms is None else 0.0
    return LiveStats(0, live.replicas, live.overhead_ms, live.slowdown, shared)


def choose(
    catalog: Sequence[VariantProfile],
    constraints: Constraints,
    live: Mapping[str, LiveStats] | None = None,
    batch_size: int = 1,
) -> Decision:
    """The variant that should serve a request with ``constraints``, and why."""
    live = live or {}
    if constraints.variant is not None:
        return _pinned(catalog, constraints, live, batch_size)
    ready = [p for p in catalog if p.ready]
    floor = constraints.min_accuracy
    eligible = [p for p in ready if floor is None or p.quality >= floor]
    if not eligible:
        best = max((p.quality for p in ready), default=None)
        available = "no variant is ready" if best is None else f"the best ready variant scores {best:.4f}"
        return Decision(
            None, Reason.REJECTED, None, False, f"no variant meets min_accuracy {floor}: {available}"
        )
    predicted = {p.name: predict_latency_ms(p, live.get(p.name, LiveStats()), batch_size) for p in eligible}
    budget = constraints.max_latency_ms
    pick = _most_accurate_within(eligible, predicted, budget)
    if pick is not None:
        # degraded: a more accurate variant would fit the budget at rest (only those need
        # their idle prediction; the most accurate of them that fits is the one to name)
        better = [p for p in eligible if p.quality > pick.quality]
        idle = {
            p.name: predict_latency_ms(p, at_rest(live.get(p.name, LiveStats())), batch_size) for p in better
        }
        unloaded = _most_accurate_within(better, idle, budget)
        degraded = unloaded is not None
        reason = Reason.DEGRADED if degraded else Reason.BEST
        bound = f"predicted within {budget} ms" if budget is not None else "(no latency bound)"
        why = f"{pick.name}: most accurate variant {bound}"
        if degraded:
            why += f" ({unloaded.name} would be, but its queue puts it over budget)"
        return Decision(pick.name, reason, predicted[pick.name], True, why)
    fastest = min(eligible, key=lambda p: (predicted[p.name], -p.quality))
    miss = f"no variant is predicted within {budget} ms; fastest meeting the floor is {fastest.name}"
    if constraints.strict:
        return Decision(None, Reason.REJECTED, predicted[fastest.name], False, f"strict: {miss}")
    limit, late_ms = constraints.shed_after_ms, constraints.waited_ms + predicted[fastest.name]
    if limit is not None and late_ms > limit and _busy(live):
        idle_ms = predict_latency_ms(fastest, at_rest(live.get(fastest.name, LiveStats())), batch_size)
        if idle_ms <= limit:  # the queue, not the variant, makes it late
            why = f"{miss}: waited and predicted {late_ms:.1f} ms, past the {limit:.1f} ms it may take"
            return Decision(None, Reason.SHED, predicted[fastest.name], False, f"overloaded: {why}")
    return Decision(fastest.name, Reason.FALLBACK, predicted[fastest.name], False, miss)


def _busy(live: Mapping[str, LiveStats]) -> bool:
    """Whether any variant has work in flight or queued: shedding a request relieves load
    only then (a lone request that a pause made late is answered, not refused)."""
    return any(s.in_flight > 0 or (s.shared_wait_ms or 0.0) > 0 for s in live.values())


def _most_accurate_within(
    variants: Sequence[VariantProfile], predicted: Mapping[str, float], budget: float | None
) -> VariantProfile | None:
    fitting = [p for p in variants if budget is None or predicted[p.name] <= budget]
    if not fitting:
        return None
    return max(fitting, key=lambda p: (p.quality, -predicted[p.name]))


def _pinned(
    catalog: Sequence[VariantProfile],
    constraints: Constraints,
    live: Mapping[str, LiveStats],
    batch_size: int,
) -> Decision:
    profile = next((p for p in catalog if p.name == constraints.variant), None)
    if profile is None:
        raise UnknownVariant(constraints.variant)
    if not profile.ready:
        return Decision(None, Reason.REJECTED, None, False, f"{profile.name} is not ready")
    predicted = predict_latency_ms(profile, live.get(profile.name, LiveStats()), batch_size)
    fits = constraints.max_latency_ms is None or predicted <= constraints.max_latency_ms
    meets = constraints.min_accuracy is None or profile.quality >= constraints.min_accuracy
    return Decision(
        profile.name, Reason.PINNED, predicted, fits and meets, f"{profile.name}: pinned by the request"
    )
