"""The HTTP app over an in-process replica (real FastAPI, real ORT; no Ray): routes, the
error mapping and the live catalog."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.asgi import call as _call
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.config import AdmissionConfig, ServingConfig
from tiergate.serving.http import VARIANT_HEADER

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5)}
# each call runs on its own event loop (asyncio.run), and the loop-lag probe, started on the
# first, reads the later ones as late (503 on a loaded machine): admission is not tested here
SERVING = ServingConfig(admission=AdmissionConfig(max_loop_lag_ms=3_600_000))


@pytest.fixture(scope="module")
def replica(tiny_menu):
    return replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=SERVING)


def test_predict_answers_with_the_variant_and_its_header(replica, digits):
    """POST /v1/predict answers 200 with the variant in the body and X-Tiergate-Variant."""
    response = _call(replica, "POST", "/v1/predict", json={"inputs": digits.test.x[:2].tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["variant"] == response.headers[VARIANT_HEADER] and len(body["predictions"]) == 2
    assert response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"inputs": [[[0.0]]]}, 422, "inputs"),
        ({"inputs": [[[0.0] * 8] * 8], "tier": "turbo"}, 422, "tier"),
        ({"inputs": [[[0.0] * 8] * 8], "variant": "sparse"}, 404, "variant"),
        ({"inputs": [[[0.0] * 8] * 8], "slo": {"min_accuracy": 1.0}}, 422, None),
    ],
)
def test_errors_map_to_one_status_each_and_name_the_field(replica, body, status, field):
    """Domain errors become 4xx answers {"error", "field"} through the one mapping."""
    response = _call(replica, "POST", "/v1/predict", json=body)
    assert response.status_code == status and response.json()["error"]
    assert response.json().get("field") == field


def test_catalog_lists_each_variant_with_its_live_state(replica):
    """GET /v1/variants lists every variant of the live menu with its state and live figures."""
    rows = {row["name"]: row for row in _call(replica, "GET", "/v1/variants").json()["variants"]}
    assert set(rows) == {"fp32", "int8"}
    assert all(
        row["state"] == "serving" and row["ready"] and row["live"]["in_flight"] == 0 for row in rows.values()
    )


def test_readiness_and_v2_metadata_follow_the_registry(tiny_menu):
    """/readyz and v2 model metadata list what the registry serves; a retired variant leaves both."""
    replica = replica_for(tiny_menu, TIERS, variants=["fp32", "int8"])
    assert _call(replica, "GET", "/readyz").json()["variants"] == ["fp32", "int8"]
    model = replica.registry.info.model
    assert _call(replica, "GET", f"/v2/models/{model}").json()["versions"] == ["fp32", "int8"]
    asyncio.run(replica.retire_variant("int8", "test"))
    assert _call(replica, "GET", "/readyz").json()["variants"] == ["fp32"]
    assert _call(replica, "GET", "/v2/models/int8").status_code == 404
