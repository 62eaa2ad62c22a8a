"""The gateway's overhead term, which routing adds to every variant's predicted latency:
it measures the gateway's own work, not the decoding a client's payload costs, and it is
capped (serving.routing.max_overhead_ms). Real HTTP app, real ORT, a decoder made slow."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.replicas import SlowDecoder, asgi_client, replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import ServingConfig
from tiergate.serving.gateway import Gateway

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5)}


async def _predicted_ms(client: httpx.AsyncClient) -> float:
    response = await client.post("/v1/route", json={"tier": "accurate"})
    assert response.status_code == 200, response.text
    return response.json()["predicted_latency_ms"]


def test_slow_decodes_leave_the_routing_prediction_as_it_was(tiny_menu, digits):
    """After 30 requests whose decoding takes 30 ms each, /v1/route's predicted latency for
    the tier is within 1 ms of what it was before them (the decode time is not overhead)."""
    replica = replica_for(tiny_menu, TIERS, variants=["fp32"])
    body = {"inputs": digits.test.x[:1].tolist(), "tier": "accurate"}

    async def main():
        async with asgi_client(replica) as client:
            for _ in range(10):  # the overhead settles on ordinary requests first
                assert (await client.post("/v1/predict", json=body)).status_code == 200
            before = await _predicted_ms(client)
            replica.gateway.decoder = SlowDecoder(replica.gateway.decoder, delay_s=0.03)
            for _ in range(30):
                assert (await client.post("/v1/predict", json=body)).status_code == 200
            return before, await _predicted_ms(client)

    before, after = asyncio.run(main())
    assert after - before < 1.0, f"predicted {before:.2f} ms before the slow decodes, {after:.2f} ms after"


@pytest.mark.parametrize("cap_ms", [0.5, 2.0])
def test_the_overhead_never_passes_its_cap(tiny_menu, cap_ms):
    """However large the samples, the overhead routing adds stays at most
    serving.routing.max_overhead_ms."""
    serving = ServingConfig(routing={"max_overhead_ms": cap_ms})
    gateway: Gateway = replica_for(tiny_menu, TIERS, variants=["fp32"], serving=serving).gateway
    for _ in range(200):
        gateway._observe_overhead(1000.0)
    assert gateway.overhead_ms <= cap_ms
    assert all(stats.overhead_ms <= cap_ms for stats in gateway.live().values())
