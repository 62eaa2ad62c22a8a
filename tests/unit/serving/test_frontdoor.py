"""The front door's admission logic: the in-flight cap, event-loop lag, and FrontDoor as an
ASGI layer (the inner app here is a stub; the real one is tested over HTTP in
tests/integration/test_overload.py)."""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from tests.support.engines import FakeClock
from tiergate.serving.admission import Admission, Limits, LoopLag
from tiergate.serving.config import ServingConfig
from tiergate.serving.frontdoor import ADMITTED, ARRIVED, ARRIVED_STAMP, Door, FrontDoor, stamped_wait
from tiergate.serving.haproxy_bind import ARRIVED_HEADER


def only(**limits) -> Limits:
    """No limit but those given."""
    return Limits(
        **{"max_body_bytes": 1 << 30, "max_in_flight": 1 << 30, "max_loop_lag_s": math.inf, **limits}
    )


def test_limits_follow_the_serving_config():
    """The front door's limits are the config's: body size, in-flight cap, loop lag in seconds."""
    serving = ServingConfig(
        limits={"max_body_bytes": 4096}, admission={"max_in_flight": 3, "max_loop_lag_ms": 50}
    )
    assert Limits.from_config(serving) == Limits(max_body_bytes=4096, max_in_flight=3, max_loop_lag_s=0.05)


def test_past_max_in_flight_a_request_is_refused_naming_the_setting():
    """With max_in_flight 2, the third concurrent request is refused and the reason names
    serving.admission.max_in_flight; once one leaves, the next is admitted."""
    admission, limits = Admission(), only(max_in_flight=2)

    async def main():
        first, second, third = (admission.enter(limits) for _ in range(3))
        admission.leave()
        return first, second, third, admission.enter(limits)

    first, second, third, after = asyncio.run(main())
    assert first is None and second is None and after is None
    assert "serving.admission.max_in_flight 2" in third


def test_a_blocked_loop_shows_as_lag_and_gets_requests_refused():
    """After the event loop was blocked for 150 ms, LoopLag reports at least 100 ms and
    Admission refuses with a reason naming serving.admission.max_loop_lag_ms."""
    admission = Admission()

    async def main():
        admission.lag.seconds()  # starts the timer
        await asyncio.sleep(0.02)
        time.sleep(0.15)  # the loop runs nothing else meanwhile
        lag_s = admission.lag.seconds()
        return lag_s, admission.enter(only(max_loop_lag_s=0.05))

    lag_s, reason = asyncio.run(main())
    assert lag_s >= 0.1
    assert reason is not None and "serving.admission.max_loop_lag_ms 50" in reason


def test_an_idle_loop_shows_little_lag():
    """On an idle loop the timer runs on time: lag stays under 50 ms."""
    lag = LoopLag()

    async def main():
        lag.seconds()
        await asyncio.sleep(0.1)
        return lag.seconds()

    assert asyncio.run(main()) < 0.05


def test_overdue_counts_only_while_the_timer_is_late():
    """overdue_s is >= 100 ms while the loop is still blocked past its timer, and 0 once the timer ran."""
    lag = LoopLag()

    async def main():
        lag.seconds()  # starts the timer
        time.sleep(0.15)  # blocked: the timer is overdue now
        during = lag.overdue_s()
        await asyncio.sleep(0.005)  # the timer fires (late) and is scheduled again
        return during, lag.overdue_s(), lag.seconds()

    during, after, seconds = asyncio.run(main())
    assert during >= 0.1 and after == 0.0 and seconds >= 0.1


def test_a_new_event_loop_restarts_the_lag_timer():
    """LoopLag used on a second event loop reports that loop's lag, not the stopped first loop's."""
    lag = LoopLag()

    async def first():
        lag.seconds()

    async def second():
        return lag.seconds(), lag.overdue_s()

    asyncio.run(first())
    time.sleep(0.15)  # the first loop's timer is due, but that loop has stopped
    assert max(asyncio.run(second())) < 0.05


def test_an_admitted_request_carries_its_estimated_arrival(door):
    """FrontDoor stamps an admitted request with when it most likely arrived: no later than now."""
    door.install(only(max_in_flight=1), on_refusal=lambda: None)

    async def app(scope, receive, send):
        pass

    before = time.perf_counter()
    scope, _ = asyncio.run(_call(FrontDoor(app, door)))
    assert scope[ARRIVED] <= time.perf_counter() and scope[ARRIVED] >= before - 0.05


async def _call(app, path: str = "/v1/predict", method: str = "POST"):
    scope = {"type": "http", "method": method, "path": path, "headers": [(b"x-request-id", b"abc")]}
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return scope, sent


@pytest.fixture
def door():
    return Door()


def test_front_door_refuses_with_the_gateways_json_error_and_counts_it(door):
    """Past max_in_flight, FrontDoor answers 503 {"error": "overloaded: ..."} with
    Retry-After and the request's id, without calling the app, and reports the refusal."""
    refusals, called = [], []

    async def app(scope, receive, send):
        called.append(scope["path"])

    door.install(only(max_in_flight=0), on_refusal=lambda: refusals.append(1))
    _, sent = asyncio.run(_call(FrontDoor(app, door)))
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 503 and headers[b"retry-after"] == b"1" and headers[b"x-request-id"] == b"abc"
    assert json.loads(body["body"])["error"].startswith("overloaded: 0 requests in flight")
    assert called == [] and refusals == [1]


def test_front_door_admits_marks_and_releases(door):
    """An admitted inference request reaches the app marked as admitted (so the app does
    not count it twice) and leaves the in-flight count as it found it; other paths pass."""
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["path"], scope.get(ADMITTED), door.admission.in_flight))

    door.install(only(max_in_flight=1), on_refusal=lambda: None)
    asyncio.run(_call(FrontDoor(app, door)))
    asyncio.run(_call(FrontDoor(app, door), path="/v1/variants", method="GET"))
    assert seen == [("/v1/predict", True, 1), ("/v1/variants", None, 0)]
    assert door.admission.in_flight == 0


def test_front_door_passes_everything_in_a_process_without_a_replica(door):
    """Where no replica installed the door (Ray Serve's proxy), requests go straight
    through."""
    seen = []

    async def app(scope, receive, send):
        seen.append(scope.get(ADMITTED))

    asyncio.run(_call(FrontDoor(app, door)))
    assert seen == [None]


def test_a_second_connection_counts_as_one_more_contender_for_a_while():
    """Requests over one connection count only themselves; once a request comes over
    another, one more counts (another may be arriving unread) until sole_connection_s has
    passed; a request with no connection named counts as a new one."""
    clock = FakeClock()
    admission, limits = Admission(sole_connection_s=0.2, clock=clock), only()
    first, second = ("127.0.0.1", 50001), ("127.0.0.1", 50002)
    seen = []

    def visit(connection) -> None:
        admission.enter(limits, connection)
        seen.append(admission.contenders())
        admission.leave()

    async def main():
        visit(first)
        clock.advance(1.0)  # the first connection has been the only one for a while
        visit(first)
        visit(second)
        seen.append(admission.contenders())  # nothing in flight, but two connections lately
        clock.advance(0.3)
        seen.append(admission.contenders())
        visit(None)

    asyncio.run(main())
    assert seen == [2, 1, 2, 1, 0, 2]


def test_admission_refuses_unread_what_the_gateway_would_shed():
    """With a lateness watch that names a reason, enter refuses with it and admits nothing."""
    admission = Admission()
    admission.watch_lateness(lambda waited_ms: f"late after waiting {waited_ms:.0f} ms")

    async def main():
        return admission.enter(only(max_in_flight=8))

    assert asyncio.run(main()) == "late after waiting 0 ms" and admission.in_flight == 0


def test_the_ingress_stamp_says_how_long_a_request_waited():
    """A stamp 50 ms old reads as 0.05 s; none, or a malformed one, as None; one from the future as 0."""
    now = 1_000_000.0

    def stamped(value: bytes):
        return stamped_wait({"headers": [(ARRIVED_STAMP, value)]}, clock=lambda: now)

    assert stamped(str(int((now - 0.05) * 1e6)).encode()) == pytest.approx(0.05)
    assert stamped_wait({"headers": []}) is None and stamped(b"12a") is None and stamped(b"-5") is None
    assert stamped(str(int((now + 3) * 1e6)).encode()) == 0.0


def test_a_stamped_request_is_held_to_its_wait_since_the_ingress(door):
    """FrontDoor dates an admitted request from HAProxy's stamp (200 ms ago here) and hands that
    wait to the lateness check."""
    seen = []
    door.admission.watch_lateness(lambda waited_ms: seen.append(waited_ms))
    door.install(only(max_in_flight=1), on_refusal=lambda: None)

    async def app(scope, receive, send):
        pass

    stamp = str(int((time.time() - 0.2) * 1e6)).encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": [(ARRIVED_STAMP, stamp)]}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    asyncio.run(FrontDoor(app, door)(scope, receive, send))
    assert time.perf_counter() - scope[ARRIVED] >= 0.2 and seen[0] >= 200


def test_the_door_reads_the_stamp_tiergate_haproxy_sets():
    """The header the door reads is the one the HAProxy wrapper sets."""
    assert ARRIVED_HEADER.lower().encode() == ARRIVED_STAMP
