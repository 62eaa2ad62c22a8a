"""/v1/route, /v1/feedback and /v1/admin/* pass the same admission as inference, and
re-profiling cannot be used to poison routing: one at a time, at most once per interval,
only on a quiet replica, on its own thread. Real HTTP app over a replica with real ORT engines (no Ray)."""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.engines import FakeClock
from tests.support.metrics import Statuses
from tests.support.replicas import asgi_client, replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.admission import Limits, LoopLag
from tiergate.serving.config import ServingConfig
from tiergate.serving.frontdoor import Door, FrontDoor

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5)}
# for tests not about loop lag: a busy test machine lags
QUIET = {"max_loop_lag_ms": 10_000, "reprofile_max_loop_lag_ms": 10_000}


def _replica(tiny_menu, admission=None, routing=None, **build):
    serving = ServingConfig(
        admission={**QUIET, **(admission or {})},
        routing={"replica_profile_budget_s": 0.05, **(routing or {})},
    )
    return replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=serving, **build)


def _timings(replica) -> dict[str, dict[int, float]]:
    return {name: dict(engine.latency_p95_ms) for name, engine in replica.registry.loaded().items()}


async def _while_timing(replica, client, during):
    """POST /v1/admin/reprofile; once its timing has started, await ``during()``; the answer."""
    task = asyncio.create_task(client.post("/v1/admin/reprofile"))
    while not replica.reprofiling and not task.done():
        await asyncio.sleep(0)
    await during()
    return await task


# -- admission ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/route", "/v1/feedback", "/v1/admin/reprofile", "/v1/admin/reload-keys"]
)
def test_route_and_admin_calls_are_refused_past_max_in_flight(tiny_menu, path):
    """With max_in_flight 1 and one request inside, POST /v1/route and /v1/admin/* get the
    front door's 503 naming serving.admission.max_in_flight, while GET /v1/variants passes."""
    replica = _replica(tiny_menu, admission={"max_in_flight": 1})

    async def main():
        async with asgi_client(replica) as client:
            assert replica.admission.enter(replica.limits) is None  # a request in flight
            refused = await client.post(path, json={"tier": "accurate"})
            listed = await client.get("/v1/variants")
        replica.admission.leave()
        return refused, listed

    refused, listed = asyncio.run(main())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "serving.admission.max_in_flight 1" in refused.json()["error"]
    assert listed.status_code == 200


def test_admitted_route_calls_are_not_counted_as_inference(tiny_menu, digits):
    """An admitted /v1/route call leaves the request metrics alone; a /v1/predict is counted
    once; both leave nothing in flight."""
    sink = Statuses()
    replica = _replica(tiny_menu, metrics=lambda registry: sink)

    async def main():
        async with asgi_client(replica) as client:
            routed = await client.post("/v1/route", json={"tier": "accurate"})
            counted_after_route = list(sink.statuses)
            predicted = await client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist()})
        return routed, counted_after_route, predicted

    routed, counted_after_route, predicted = asyncio.run(main())
    assert routed.status_code == 200 and predicted.status_code == 200
    assert counted_after_route == [] and sink.statuses == [200]
    assert replica.admission.in_flight == 0


@pytest.mark.parametrize(
    "path", ["/v1/route", "/app/v1/feedback", "/app/v1/admin/reprofile", "/app/v1/admin/reload-keys"]
)
def test_front_door_refuses_route_and_admin_calls_too(path):
    """FrontDoor (Serve's HAProxy ingress) refuses POST /v1/route and /v1/admin/*, behind a
    route prefix too, with 503 past max_in_flight, without calling the app."""
    door, called = Door(), []
    door.install(Limits(max_body_bytes=1 << 20, max_in_flight=0, max_loop_lag_s=math.inf), lambda: None)

    async def app(scope, receive, send):
        called.append(scope["path"])

    async def main():
        sent = []
        scope = {"type": "http", "method": "POST", "path": path, "headers": []}

        async def send(message):
            sent.append(message)

        await FrontDoor(app, door)(scope, None, send)
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 503 and called == []


# -- re-profiling --------------------------------------------------------------------------------


def test_a_second_reprofile_within_the_interval_gets_429_until_it_passes(tiny_menu):
    """Right after a re-profile another gets 429 with Retry-After of the interval's rest,
    naming serving.admission.reprofile_min_interval_s; once the interval passed, 200."""
    clock = FakeClock()
    replica = _replica(tiny_menu, admission={"reprofile_min_interval_s": 60}, clock=clock)

    async def main():
        async with asgi_client(replica) as client:
            first = await client.post("/v1/admin/reprofile")
            clock.advance(20)
            too_soon = await client.post("/v1/admin/reprofile")
            clock.advance(40)
            return first, too_soon, await client.post("/v1/admin/reprofile")

    first, too_soon, later = asyncio.run(main())
    assert first.status_code == 200 and later.status_code == 200
    assert too_soon.status_code == 429 and too_soon.headers["retry-after"] == "40"
    assert "serving.admission.reprofile_min_interval_s" in too_soon.json()["error"]


def test_a_reprofile_while_one_runs_gets_429(tiny_menu):
    """A second POST /v1/admin/reprofile while one is timing gets 429 (already running) with
    Retry-After; the first completes with 200."""
    replica = _replica(tiny_menu, admission={"reprofile_max_in_flight": 10})
    answers = []

    async def main():
        async with asgi_client(replica) as client:

            async def second():
                answers.append(await client.post("/v1/admin/reprofile"))

            return await _while_timing(replica, client, second)

    first = asyncio.run(main())
    assert first.status_code == 200, first.text
    assert answers[0].status_code == 429 and int(answers[0].headers["retry-after"]) >= 1
    assert "running" in answers[0].json()["error"]


def test_a_reprofile_with_requests_in_flight_gets_503_and_changes_nothing(tiny_menu):
    """With another request in flight, POST /v1/admin/reprofile gets 503 with Retry-After,
    naming serving.admission.reprofile_max_in_flight, and every variant keeps its timing."""
    replica = _replica(tiny_menu)
    before = _timings(replica)

    async def main():
        async with asgi_client(replica) as client:
            assert replica.admission.enter(replica.limits) is None  # another request in flight
            answer = await client.post("/v1/admin/reprofile")
        replica.admission.leave()
        return answer

    answer = asyncio.run(main())
    assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1
    assert "serving.admission.reprofile_max_in_flight 0" in answer.json()["error"]
    assert _timings(replica) == before


def test_a_request_arriving_during_the_timing_voids_it(tiny_menu, digits):
    """A /v1/predict admitted while the re-profile times makes it answer 503, and every
    variant has its previous timing back, in the engines and in /v1/variants."""
    replica = _replica(tiny_menu)
    before = _timings(replica)

    async def main():
        async with asgi_client(replica) as client:

            async def predict():
                response = await client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist()})
                assert response.status_code == 200

            answer = await _while_timing(replica, client, predict)
            rows = (await client.get("/v1/variants")).json()["variants"]
        return answer, {row["name"]: row["live"]["serving_p95_ms"] for row in rows}

    answer, routed_on = asyncio.run(main())
    assert answer.status_code == 503, answer.text
    assert "1 other requests in flight" in answer.json()["error"]
    assert _timings(replica) == before
    assert routed_on == {name: {str(b): ms for b, ms in p95.items()} for name, p95 in before.items()}


def test_a_lagging_event_loop_during_the_timing_voids_it(tiny_menu):
    """When the event loop falls 300 ms behind while the re-profile times, it answers 503
    naming serving.admission.reprofile_max_loop_lag_ms and the timings stay as they were."""
    replica = _replica(tiny_menu, admission={"reprofile_max_loop_lag_ms": 100})
    before = _timings(replica)

    async def main():
        async with asgi_client(replica) as client:

            async def block_the_loop():
                threading.Event().wait(0.3)  # on the loop's thread: nothing else runs meanwhile

            return await _while_timing(replica, client, block_the_loop)

    answer = asyncio.run(main())
    assert answer.status_code == 503, answer.text
    assert "serving.admission.reprofile_max_loop_lag_ms 100" in answer.json()["error"]
    assert _timings(replica) == before


def test_a_reprofile_completes_while_the_default_thread_pool_is_taken(tiny_menu):
    """With every worker of the event loop's default thread pool held, POST
    /v1/admin/reprofile still completes (it times on its own thread)."""
    replica = _replica(tiny_menu)
    release = threading.Event()

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        held = loop.run_in_executor(None, release.wait)
        try:
            async with asgi_client(replica) as client:
                return await asyncio.wait_for(client.post("/v1/admin/reprofile"), 60)
        finally:
            release.set()
            await held

    answer = asyncio.run(main())
    assert answer.status_code == 200, answer.text


def test_loop_lag_starts_afresh_on_a_new_event_loop():
    """LoopLag first read on one event loop, then read on a second one 200 ms after the first
    closed, reports under 50 ms (not the time since the closed loop's timer was due)."""
    lag = LoopLag()

    async def read():
        return lag.seconds()

    asyncio.run(read())
    threading.Event().wait(0.2)
    assert asyncio.run(read()) < 0.05
