"""The gateway core on a real digits menu with real ORT engines (no Ray, no HTTP)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.support.chaos import inject_fault
from tests.support.engines import engine_settings
from tiergate.compression.cache import file_sha256
from tiergate.compression.export import export_onnx
from tiergate.compression.models import ResNet
from tiergate.profiles.tiers import Tier
from tiergate.serving.engines import RunSlots, VariantEngine
from tiergate.serving.errors import InvalidRequest, NotFound, ServingError, Shed, Unsatisfiable
from tiergate.serving.gateway import Gateway, RoutingSettings
from tiergate.serving.inputs import InputDecoder
from tiergate.serving.registry import MenuInfo, MenuRegistry
from tiergate.serving.schemas import PredictRequest, RouteRequest
from tiergate.serving.trace import Trace

ROUTING = RoutingSettings(
    default_tier="accurate", latency_headroom=1.0, failure_cooldown_s=5.0, request_timeout_s=2.0
)


@pytest.fixture(scope="module")
def menu(tiny_menu):
    return tiny_menu


def _gateway(
    menu, broken: str | None = None, run_slots: RunSlots | None = None, routing: RoutingSettings = ROUTING
) -> Gateway:
    """A gateway over a live menu of real ORT engines; ``broken``: that variant's engine
    is a real session that cannot take these inputs, so every run raises in ORT."""
    settings = engine_settings(batch_wait_timeout_s=0.001)
    registry = MenuRegistry(MenuInfo.of(menu), reference=menu.variants[0].name)
    for e in menu.variants:
        engine = VariantEngine.load(
            e.name, Path(e.path), e.sha256, settings, run_slots=run_slots, on_change=registry.changed
        )
        if e.name == broken:
            path = Path(menu.variants[0].path).parent / "broken.onnx"
            export_onnx(ResNet((1,), 4, in_channels=3).eval(), np.zeros((1, 3, 8, 8), np.float32), path)
            session = VariantEngine.load("broken", path, file_sha256(path), engine_settings()).session
            engine = VariantEngine(broken, session, engine_settings(), run_slots=run_slots)
        registry.add(e, engine)
    by_speed = sorted(menu.variants, key=lambda e: e.p95_ms())
    tiers = {
        "fast": Tier(max_latency_ms=by_speed[0].p95_ms() * 1.01),
        "accurate": Tier(max_latency_ms=1000.0, max_accuracy_drop=0.0),
    }
    return Gateway(registry, tiers, InputDecoder(tuple(menu.input_shape)), routing, run_slots)


def _engine(gateway: Gateway, name: str):
    return gateway.registry.get(name).engine


def test_tiers_route_to_the_fastest_and_the_most_accurate(menu):
    """'fast' gets the fastest variant, 'accurate' one as accurate as fp32."""
    gateway = _gateway(menu)
    fastest = min(menu.variants, key=lambda e: e.p95_ms()).name
    assert gateway.route(RouteRequest(tier="fast")).variant == fastest
    accurate = gateway.route(RouteRequest(tier="accurate"))
    assert gateway.registry.get(accurate.variant).quality >= menu.variants[0].quality


def test_predictions_match_a_direct_ort_run(menu, digits):
    """The predicted labels and scores are those of the served variant's own logits."""
    gateway = _gateway(menu)
    x = digits.test.x[:5]
    response = asyncio.run(gateway.predict(PredictRequest(inputs=x.tolist(), variant="int8", top_k=3), "r1"))
    logits = _engine(gateway, "int8").run(x)
    assert response.variant == "int8" and response.reason == "pinned" and response.request_id == "r1"
    assert [p.index for p in response.predictions] == logits.argmax(1).tolist()
    assert all(len(p.top_k) == 3 and p.top_k[0].score >= p.top_k[1].score for p in response.predictions)
    assert response.predictions[0].label == menu.classes[response.predictions[0].index]


@pytest.mark.parametrize(
    ("request_fields", "error", "message"),
    [
        ({"tier": "turbo"}, InvalidRequest, "unknown tier 'turbo'"),
        ({"variant": "sparse"}, NotFound, "unknown variant 'sparse'"),
        ({"slo": {"min_accuracy": 1.0}}, Unsatisfiable, "no variant meets min_accuracy"),
        ({"slo": {"max_latency_ms": 1e-6}, "strict": True}, Unsatisfiable, "strict"),
    ],
)
def test_refusals_name_the_problem(menu, digits, request_fields, error, message):
    """Unknown tier or variant, an unmeetable floor, and a strict impossible SLO are refused."""
    gateway = _gateway(menu)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), **request_fields)
    with pytest.raises(error) as raised:
        asyncio.run(gateway.predict(request, "r"))
    assert message in str(raised.value)


def test_impossible_slo_without_strict_is_served_and_flagged(menu, digits):
    """A latency bound nobody meets is served by the fastest variant with slo_met false."""
    gateway = _gateway(menu)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), slo={"max_latency_ms": 1e-6})
    response = asyncio.run(gateway.predict(request, "r"))
    assert response.reason == "fallback" and response.slo_met is False


def test_failed_variant_is_retried_once_on_the_next_best(menu, digits):
    """When the chosen variant's ORT run fails, the request is answered by the next-best
    variant meeting the floor, and the response says which one failed."""
    # the variant this two-image request routes to: asked of the gateway, since variants tied
    # on accuracy are ordered by their predicted time for a batch of two, not of one
    best = _gateway(menu).route(RouteRequest(batch_size=2)).variant
    gateway = _gateway(menu, broken=best)
    response = asyncio.run(gateway.predict(PredictRequest(inputs=digits.test.x[:2].tolist()), "r"))
    assert response.retried_from == best and response.variant != best
    assert len(response.predictions) == 2


def test_failed_variant_sits_out_a_cool_down_but_pins_still_reach_it(menu, digits):
    """After a failure, routing avoids the variant for failure_cooldown_s even once it works
    again; a request that pins it is still served by it."""
    gateway = _gateway(menu)
    best = gateway.route(RouteRequest()).variant
    request = PredictRequest(inputs=digits.test.x[:1].tolist())
    inject_fault(_engine(gateway, best), 1.0)
    assert asyncio.run(gateway.predict(request, "r1")).retried_from == best
    inject_fault(_engine(gateway, best), 0.0)
    after = asyncio.run(gateway.predict(request, "r2"))
    assert after.variant != best and after.retried_from is None
    pinned = PredictRequest(inputs=digits.test.x[:1].tolist(), variant=best)
    assert asyncio.run(gateway.predict(pinned, "r3")).variant == best
    no_cooldown = _gateway(menu, routing=replace(ROUTING, failure_cooldown_s=0.0))
    inject_fault(_engine(no_cooldown, best), 1.0)
    assert asyncio.run(no_cooldown.predict(request, "r4")).retried_from == best
    inject_fault(_engine(no_cooldown, best), 0.0)
    assert asyncio.run(no_cooldown.predict(request, "r5")).variant == best


def test_trace_records_the_decision_and_never_a_clients_tier_string(menu, digits):
    """The trace handed to metrics holds the resolved tier, variant, reason, latency and SLO
    outcome; an unknown tier is not copied into it (no client-chosen label values)."""
    gateway = _gateway(menu)
    trace = Trace()
    response = asyncio.run(gateway.predict(PredictRequest(inputs=digits.test.x[:1].tolist()), "r", trace))
    assert (trace.tier, trace.variant, trace.reason) == ("accurate", response.variant, response.reason)
    assert trace.latency_ms == response.latency_ms and trace.slo_met == response.slo_met
    refused = Trace()
    with pytest.raises(ServingError):
        asyncio.run(
            gateway.predict(PredictRequest(inputs=digits.test.x[:1].tolist(), tier="x" * 50), "r", refused)
        )
    assert refused.tier is None and refused.variant is None


def test_engine_profile_times_every_batch_size_in_process(menu):
    """profile() records a positive p95 for each requested batch size and how long it took."""
    entry = menu.variants[1]
    engine = VariantEngine.load(entry.name, Path(entry.path), entry.sha256, engine_settings())
    engine.profile(tuple(menu.input_shape), (1, 4), budget_s=0.02)
    assert set(engine.latency_p95_ms) == {1, 4} and all(v > 0 for v in engine.latency_p95_ms.values())
    assert engine.profile_s > 0


def test_headroom_shrinks_the_routing_budget_not_the_slo(menu, digits):
    """With latency_headroom 0.5, a tier whose bound only the fastest variant fits at full
    budget gets a fallback decision, while the decision still reports the tier's own bound."""
    assert _gateway(menu).route(RouteRequest(tier="fast")).reason == "best"
    gateway = _gateway(menu, routing=replace(ROUTING, latency_headroom=0.5))
    decision = gateway.route(RouteRequest(tier="fast"))
    assert decision.reason == "fallback" and decision.max_latency_ms == gateway.tiers["fast"].max_latency_ms


def test_gateway_tells_the_run_slots_each_requests_latency_bound(menu, digits):
    """After a fast and then an accurate request, the run slots hold the fast tier's bound
    (the tightest seen), which is what keeps a long run off the event loop's thread."""
    gateway = _gateway(menu, run_slots=RunSlots(1, inline_max_ms=25.0, spare_share=0.5))
    x = digits.test.x[:1]

    async def serve():
        await gateway.run(x, RouteRequest(tier="fast"))
        await gateway.run(x, RouteRequest(tier="accurate"))

    asyncio.run(serve())
    assert gateway.run_slots.tightest_bound_ms() == gateway.tiers["fast"].max_latency_ms


def test_variants_sharing_run_slots_are_given_one_shared_wait(menu, digits):
    """While one variant's slow runs hold the slots it shares with the others, every variant
    is predicted the same wait (that run time over the slots); without shared slots there
    is none, and once the runs finish the wait is 0."""
    assert all(stats.shared_wait_ms is None for stats in _gateway(menu).live().values())
    slots = RunSlots(2)
    gateway = _gateway(menu, run_slots=slots)
    entry = menu.variants[0]
    slow = _engine(gateway, entry.name)
    slow.latency_p95_ms = {1: entry.p95_ms()}
    inject_fault(slow, 0.0, 0.2)  # every run takes 200 ms longer, and its profile says so
    x = digits.test.x[:1]

    async def serve():
        calls = [asyncio.create_task(slow.infer(x)) for _ in range(2)]
        await asyncio.sleep(0.05)
        during = gateway.live()
        await asyncio.gather(*calls)
        return during, gateway.live()

    during, after = asyncio.run(serve())
    assert len({stats.shared_wait_ms for stats in during.values()}) == 1
    assert during[slow.name].shared_wait_ms >= 200 / slots.size
    assert all(stats.shared_wait_ms == 0.0 for stats in after.values())


def test_engine_tracks_its_slowdown_against_the_profile(menu, digits):
    """After runs against a profile that claims 1000x faster than reality, the engine's
    slowdown rises well above 1 (and stays 1 without a profile)."""
    entry = menu.variants[0]
    engine = VariantEngine.load(entry.name, Path(entry.path), entry.sha256, engine_settings())
    assert engine.stats.slowdown == 1.0
    engine.latency_p95_ms = {1: entry.p95_ms() / 1000}

    async def serve_some():
        for _ in range(5):
            await engine.infer(digits.test.x[:1])

    asyncio.run(serve_some())
    assert engine.stats.slowdown > 3


def test_a_request_that_waited_past_its_bound_is_shed_with_a_retry_after(menu, digits):
    """With a slow run in flight, a fast-tier request that arrived 1 s ago is refused at once
    (Shed, Retry-After) under late_grace."""
    gateway = _gateway(menu, run_slots=RunSlots(2), routing=replace(ROUTING, late_grace=0.5))
    trace = Trace(arrived=time.perf_counter() - 1.0)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), tier="fast")

    async def late_behind_a_slow_run():
        busy = asyncio.create_task(_slow_engine(gateway, menu).infer(digits.test.x[:1]))
        await asyncio.sleep(0.05)
        try:
            return await gateway.predict(request, "r", trace)
        finally:
            await busy

    with pytest.raises(Shed) as refused:
        asyncio.run(late_behind_a_slow_run())
    assert refused.value.retry_after_s == 1 and trace.shed and "overloaded" in str(refused.value)


def test_a_late_request_at_no_load_is_answered_as_a_fallback(menu, digits):
    """With nothing in flight, the same late request is answered by the fastest variant:
    refusing it would relieve nothing."""
    gateway = _gateway(menu, run_slots=RunSlots(2), routing=replace(ROUTING, late_grace=0.5))
    trace = Trace(arrived=time.perf_counter() - 1.0)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), tier="fast")
    response = asyncio.run(gateway.predict(request, "r", trace))
    assert response.reason == "fallback" and not trace.shed


def _slow_engine(gateway: Gateway, menu) -> VariantEngine:
    """The reference variant's engine, every run 300 ms longer (and its profile saying so)."""
    entry = menu.variants[0]
    slow = _engine(gateway, entry.name)
    slow.latency_p95_ms = {1: entry.p95_ms()}
    inject_fault(slow, 0.0, 0.3)
    return slow


def test_without_a_grace_a_late_request_is_served_as_a_fallback(menu, digits):
    """The same request with late_grace None is served late by the fastest variant (fallback)."""
    gateway = _gateway(menu)
    trace = Trace(arrived=time.perf_counter() - 1.0)
    response = asyncio.run(
        gateway.predict(PredictRequest(inputs=digits.test.x[:1].tolist(), tier="fast"), "r", trace)
    )
    assert response.reason == "fallback" and not response.slo_met and response.latency_ms >= 1000


def test_the_door_refuses_what_routing_would_shed_for_every_recent_tier(menu, digits):
    """After fast-tier routing with late_grace and with a slow run queued, a 1 s wait unread is
    named late; with nothing queued it is not (refusing relieves nothing); a recent pin lifts it."""
    gateway = _gateway(menu, run_slots=RunSlots(2), routing=replace(ROUTING, late_grace=0.5))
    assert gateway.lateness(waited_ms=1000.0) is None  # nothing routed yet: no limit known
    gateway.route(RouteRequest(tier="fast"))
    assert gateway.lateness(waited_ms=1000.0) is None  # nothing queued

    async def while_busy():
        busy = asyncio.create_task(_slow_engine(gateway, menu).infer(digits.test.x[:1]))
        await asyncio.sleep(0.05)
        named = gateway.lateness(waited_ms=1000.0)
        gateway.route(RouteRequest(variant=menu.variants[0].name))  # pins are never shed
        pinned = gateway.lateness(waited_ms=1000.0)
        await busy
        return named, pinned

    waited, pinned = asyncio.run(while_busy())
    assert "bound of the loosest tier" in waited
    assert pinned is None
