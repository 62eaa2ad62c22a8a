"""A client that sends its headers and then its body slowly, or never, cannot keep the
admission slot it was given: the app's outer layer reads the body within
serving.limits.body_read_timeout_s and answers 408 past it. The real HTTP app over a replica
with real ORT; the client is an ASGI receive() that stalls."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.support.metrics import Statuses
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.http import create_app

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5)}


@pytest.fixture(scope="module")
def sink():
    return Statuses()


@pytest.fixture(scope="module")
def replica(tiny_menu, sink):
    serving = ServingConfig(limits={"body_read_timeout_s": 0.2}, admission={"max_loop_lag_ms": 10_000})
    return replica_for(tiny_menu, TIERS, variants=["fp32"], serving=serving, metrics=lambda registry: sink)


def _scope(path: str, length: int | None) -> dict:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
        "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": headers,
        "client": ("10.0.0.1", 40000), "server": ("test", 80),
    }  # fmt: skip


async def _dribble(replica, path: str, length: int | None):
    """One request whose client sends 10 bytes of its body, then nothing more; what the app
    sent back and how many requests were in flight while it waited for the rest."""
    sent, in_flight_while_waiting = [], []

    async def receive():
        if not in_flight_while_waiting:
            in_flight_while_waiting.append(0)
            return {"type": "http.request", "body": b'{"inputs":', "more_body": True}
        in_flight_while_waiting[0] = replica.admission.in_flight
        await asyncio.Event().wait()  # the rest never comes

    async def send(message):
        sent.append(message)

    # the guard only bounds a failure: the 408 comes after body_read_timeout_s (0.2 s)
    await asyncio.wait_for(create_app(replica)(_scope(path, length), receive, send), 30)
    return sent, in_flight_while_waiting[0]


@pytest.mark.parametrize("length", [1000, None], ids=["content-length", "chunked"])
def test_a_stalled_body_gets_408_and_frees_its_slot(replica, sink, length):
    """A /v1/predict whose body stops after 10 bytes holds one admission slot while it is
    read, then gets 408 naming serving.limits.body_read_timeout_s; afterwards nothing is in
    flight and the request metrics counted a 408."""
    before = len(sink.statuses)
    sent, waiting = asyncio.run(_dribble(replica, "/v1/predict", length))
    start, body = sent
    assert start["status"] == 408 and waiting == 1
    assert "serving.limits.body_read_timeout_s" in json.loads(body["body"])["error"]
    assert replica.admission.in_flight == 0 and sink.statuses[before:] == [408]


def test_a_stalled_admin_body_gets_408_too(replica):
    """A POST /v1/admin/reload-keys whose body stalls gets 408 and leaves nothing in flight."""
    sent, waiting = asyncio.run(_dribble(replica, "/v1/admin/reload-keys", 1000))
    assert sent[0]["status"] == 408 and waiting == 1 and replica.admission.in_flight == 0


def test_a_body_sent_in_pieces_in_time_is_served(replica, digits):
    """A /v1/predict body that arrives in three pieces within the time limit is answered 200."""
    payload = json.dumps({"inputs": digits.test.x[:1].tolist()}).encode()
    pieces = [payload[:10], payload[10:100], payload[100:]]
    sent = []

    async def receive():
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message):
        sent.append(message)

    asyncio.run(create_app(replica)(_scope("/v1/predict", len(payload)), receive, send))
    assert sent[0]["status"] == 200, sent
