"""Overload on Ray Serve over real HTTP (the fast version of `make soak`): at 5x what the
gateway can carry, every request is answered (a prediction, or 429/503) by its deadline,
and the gateway serves normally once the load stops."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.conftest import deployed
from tests.loadgen import open_loop

pytestmark = pytest.mark.integration

DELAY_S = 0.05  # every ORT run takes this much longer: one batch of one image each (max_batch_size 1)
TIMEOUT_S = 0.5  # serving.admission.request_timeout_s
MARGIN_S = 1.0


@pytest.fixture(scope="module")
def gateway_url(digits_config):
    config = digits_config(
        batching={"max_batch_size": 1},
        admission={"request_timeout_s": TIMEOUT_S},
        routing={"variant_timeout_s": 0.25},
    )
    yield from deployed(config, "tiergate-overload", "/overload")


def test_five_times_capacity_is_answered_by_the_deadline_then_served_normally(gateway_url, digits):
    """With three variants each carrying 1/DELAY_S requests/s, 5x that load for 3 s: every
    request gets 200, 429 or 503 (no connection error), none later than its deadline plus
    MARGIN_S, both served and shed answers occur, and a request after the load is served."""
    from ray import serve

    ingress = serve.get_deployment_handle("Ingress", app_name="tiergate-overload")
    for variant in ("fp32", "int8", "distilled"):
        ingress.set_fault.remote(variant, 0.0, DELAY_S).result()
    capacity = 3 / DELAY_S
    body = json.dumps({"inputs": digits.test.x[:1].tolist(), "tier": "lenient"}).encode()
    path = f"{urlsplit(gateway_url).path}/v1/predict"
    answers = asyncio.run(
        open_loop(urlsplit(gateway_url).port, body, 5 * capacity, seconds=3, timeout_s=10, path=path)
    )
    statuses = {}
    for answer in answers:
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.get(200) and statuses.get(429, 0) + statuses.get(503, 0), statuses
    slowest_s = max(answer.latency_ms for answer in answers) / 1000
    print(f"{len(answers)} requests at 5x: {statuses}; slowest answer {slowest_s:.2f} s")
    assert slowest_s <= TIMEOUT_S + MARGIN_S, f"an answer took {slowest_s:.2f} s; statuses {statuses}"
    for variant in ("fp32", "int8", "distilled"):
        ingress.set_fault.remote(variant, 0.0, 0.0).result()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = httpx.post(f"{gateway_url}/v1/predict", json={"inputs": digits.test.x[:1].tolist()})
        if after.status_code == 200:
            break
        time.sleep(0.2)
    assert after.status_code == 200, after.text


@pytest.fixture(scope="module")
def one_at_a_time_url(digits_config):
    config = digits_config(admission={"max_in_flight": 1})
    yield from deployed(config, "tiergate-one-at-a-time", "/one")


def test_past_max_in_flight_the_front_door_refuses_with_a_json_503(one_at_a_time_url, digits):
    """With max_in_flight 1 and a request held 1 s in the model, a second request is
    refused at once: 503, the gateway's JSON error naming serving.admission.max_in_flight,
    Retry-After and a request id; once the first is answered, the next is served."""
    from ray import serve

    ingress = serve.get_deployment_handle("Ingress", app_name="tiergate-one-at-a-time")
    body = {"inputs": digits.test.x[:1].tolist(), "variant": "fp32"}
    ingress.set_fault.remote("fp32", 0.0, 1.0).result()
    try:
        with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=one_at_a_time_url, timeout=10) as client:
            held = pool.submit(httpx.post, f"{one_at_a_time_url}/v1/predict", json=body, timeout=10)
            time.sleep(0.3)
            started = time.monotonic()
            refused = client.post("/v1/predict", json=body)
            refused_s = time.monotonic() - started
            assert held.result().status_code == 200, held.result().text
            assert refused.status_code == 503 and refused_s < 0.5, (refused.status_code, refused_s)
            assert "serving.admission.max_in_flight 1" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1" and refused.headers["x-request-id"]
            ingress.set_fault.remote("fp32", 0.0, 0.0).result()
            assert client.post("/v1/predict", json=body).status_code == 200
    finally:
        ingress.set_fault.remote("fp32", 0.0, 0.0).result()
