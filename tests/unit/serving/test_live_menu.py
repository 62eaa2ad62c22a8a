"""Variants joining, being replaced and leaving the live menu while requests flow, on real
ORT sessions in an in-process replica (no Ray)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.chaos import inject_fault
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.errors import NotFound
from tiergate.serving.registry import VariantState
from tiergate.serving.schemas import PredictRequest, RouteRequest

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5), "any": Tier()}


async def _stream(replica, request: PredictRequest, stop: asyncio.Event, answers: list) -> None:
    """Send ``request`` back to back until ``stop``; every answer (or error) is kept."""
    while not stop.is_set():
        try:
            answers.append(await replica.gateway.predict(request, "r"))
        except Exception as error:
            answers.append(error)


def test_a_variant_joins_the_menu_while_requests_flow(tiny_menu, digits):
    """load_variant() of a new variant makes it routable and listed, with no request failing."""
    replica = replica_for(tiny_menu, TIERS, variants=["fp32", "int8"])
    distilled = next(e for e in tiny_menu.variants if e.name == "distilled")
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), tier="accurate")

    async def scenario():
        stop, answers = asyncio.Event(), []
        streams = [asyncio.create_task(_stream(replica, request, stop, answers)) for _ in range(4)]
        await asyncio.sleep(0.05)
        assert "distilled" not in [p.name for p in replica.gateway.catalog()]
        assert await replica.load_variant(distilled) == "added"
        pinned = await replica.gateway.predict(request.model_copy(update={"variant": "distilled"}), "p")
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*streams)
        return answers, pinned

    answers, pinned = asyncio.run(scenario())
    assert pinned.variant == "distilled"
    assert answers and not [a for a in answers if isinstance(a, Exception)]
    assert replica.registry.get("distilled").state == VariantState.SERVING
    assert "distilled" in [p.name for p in replica.gateway.catalog() if p.ready]


def test_a_replaced_artifact_is_served_without_failing_requests_in_flight(tiny_menu, digits):
    """Replacing int8 while slow int8 runs are in flight: every request is answered, the new
    engine serves from then on, and the old one is closed once drained."""
    replica = replica_for(tiny_menu, TIERS)
    old = replica.registry.get("int8").engine
    inject_fault(old, rate=0.0, delay_s=0.02)  # runs slow enough to be caught mid-flight
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), variant="int8")
    entry = replica.registry.get("int8").entry

    async def scenario():
        stop, answers = asyncio.Event(), []
        streams = [asyncio.create_task(_stream(replica, request, stop, answers)) for _ in range(4)]
        await asyncio.sleep(0.05)
        in_flight_at_swap = old.stats.in_flight
        assert await replica.load_variant(entry) == "replaced"
        await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*streams)
        await asyncio.sleep(0.05)  # the drain task closes the old engine
        return answers, in_flight_at_swap

    answers, in_flight_at_swap = asyncio.run(scenario())
    assert in_flight_at_swap > 0
    assert answers and not [a for a in answers if isinstance(a, Exception)]
    assert replica.registry.get("int8").engine is not old and old.stats.in_flight == 0 and old.closed


def test_a_retired_variant_drains_then_leaves_routing(tiny_menu, digits):
    """retire_variant() answers the requests it holds, then pins to it get NotFound and the
    catalog no longer lists it."""
    replica = replica_for(tiny_menu, TIERS)
    engine = replica.registry.get("distilled").engine
    inject_fault(engine, rate=0.0, delay_s=0.02)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), variant="distilled")

    async def scenario():
        held = [asyncio.create_task(replica.gateway.predict(request, f"r{i}")) for i in range(3)]
        await asyncio.sleep(0.005)
        await replica.retire_variant("distilled", "removed from the config")
        answers = await asyncio.gather(*held)
        with pytest.raises(NotFound):
            await replica.gateway.predict(request, "late")
        return answers

    answers = asyncio.run(scenario())
    assert [a.variant for a in answers] == ["distilled"] * 3 and engine.closed
    assert replica.registry.get("distilled").state == VariantState.RETIRED
    assert "distilled" not in [p.name for p in replica.gateway.catalog()]
    assert replica.gateway.route(RouteRequest(tier="any")).variant in {"fp32", "int8"}


def test_reconcile_follows_a_changed_menu(tiny_menu, digits):
    """reconcile() swaps a variant whose artifact changed, retires one no longer listed, takes
    new figures for one re-measured, adds one that appeared, and every request is answered."""
    fp32, int8, distilled = tiny_menu.variants
    replica = replica_for(tiny_menu, TIERS)
    # int8's name now on another artifact (distilled's file), distilled gone, fp32 re-measured
    changed = tiny_menu.model_copy(update={"variants": [
        fp32.model_copy(update={"accuracy": 0.5}),
        distilled.model_copy(update={"name": "int8", "recipe": ["int8"]}),
    ]})  # fmt: skip
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), variant="int8")

    async def scenario():
        stop, answers = asyncio.Event(), []
        streams = [asyncio.create_task(_stream(replica, request, stop, answers)) for _ in range(2)]
        first = await replica.reconcile(changed)
        back = await replica.reconcile(tiny_menu)
        stop.set()
        await asyncio.gather(*streams)
        return first, back, answers

    first, back, answers = asyncio.run(scenario())
    assert first == {"added": [], "replaced": ["int8"], "remeasured": ["fp32"], "retired": ["distilled"]}
    assert back == {"added": ["distilled"], "replaced": ["int8"], "remeasured": ["fp32"], "retired": []}
    assert replica.registry.get("int8").entry.sha256 == int8.sha256
    assert replica.registry.get("fp32").entry.accuracy == fp32.accuracy
    assert answers and not [a for a in answers if isinstance(a, Exception)]


def test_a_pin_reaches_a_demoted_variant_and_routing_does_not(tiny_menu):
    """A demoted variant is left out of tier routing, but a request that pins it is served
    by it; a pin to a variant that failed to load is refused as not ready (422), not 404."""
    from tiergate.serving.errors import Unsatisfiable

    replica = replica_for(tiny_menu, TIERS)
    replica.registry.demote("int8", "test")
    assert replica.gateway.route(RouteRequest(variant="int8")).variant == "int8"
    assert replica.gateway.route(RouteRequest(tier="any")).variant != "int8"
    replica.registry.fail("int8", "test", replica.registry.get("int8").entry)
    with pytest.raises(Unsatisfiable, match="not ready"):
        asyncio.run(replica.gateway.predict(PredictRequest(inputs=[[[0.0] * 8] * 8], variant="int8"), "r"))
    assert "int8" in [p.name for p in replica.gateway.catalog()]


def test_requests_inside_an_engine_closed_early_are_answered_by_its_successor(tiny_menu, digits):
    """When a replaced engine is closed before it drained (its drain timed out), the
    requests still queued or running in it are routed again to the new engine: every one is
    answered, though the variant is pinned."""
    replica = replica_for(tiny_menu, TIERS, serving=ServingConfig(batching={"max_runs_per_variant": 1}))
    old = replica.registry.get("int8").engine
    inject_fault(old, rate=0.0, delay_s=0.05)
    request = PredictRequest(inputs=digits.test.x[:1].tolist(), variant="int8")
    entry = replica.registry.get("int8").entry

    new = replica.opener.open(entry)

    async def scenario():
        held = [asyncio.create_task(replica.gateway.predict(request, f"r{i}")) for i in range(4)]
        await asyncio.sleep(0.01)
        assert replica.registry.replace(entry, new) is old
        old.close()  # as a drain that timed out does
        return await asyncio.gather(*held)

    answers = asyncio.run(scenario())
    assert [a.variant for a in answers] == ["int8"] * 4
    assert sum(a.retried_from == "int8" for a in answers) >= 3  # all but the one running
    assert old.stats.in_flight == 0 and new.stats.completed >= 3
