"""The hot routes (POST /v1/predict, v2 infer) are served without FastAPI, by the same
endpoints, with the same answers (tiergate.serving.http.direct)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.replicas import replica_for
from tests.unit.serving.http.test_app import SERVING, TIERS
from tiergate.serving.http import create_app
from tiergate.serving.http.direct import DirectRoutes


@pytest.fixture(scope="module")
def replica(tiny_menu):
    return replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=SERVING)


async def _no_fastapi(scope, receive, send):
    raise AssertionError(f"FastAPI was called for {scope['method']} {scope['path']}")


def _call_without_fastapi(replica, method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the app with FastAPI replaced by an app that fails the test."""

    async def go():
        app = create_app(replica)
        app.app = _no_fastapi
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_predict_is_answered_without_fastapi(replica, digits):
    """POST /v1/predict answers 200 with predictions though FastAPI is not there."""
    response = _call_without_fastapi(
        replica, "POST", "/v1/predict", json={"inputs": digits.test.x[:1].tolist()}
    )
    assert response.status_code == 200 and len(response.json()["predictions"]) == 1


def test_v2_infer_is_answered_without_fastapi(replica, digits):
    """POST /v2/models/{name}/infer answers 200 with logits though FastAPI is not there."""
    x = digits.test.x[:1]
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    response = _call_without_fastapi(replica, "POST", "/v2/models/fp32/infer", json=body)
    assert response.status_code == 200 and response.json()["outputs"][0]["name"] == "logits"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [(b'{"inputs": [[[0.0]]]}', 422, "inputs"), (b'{"inputs": [1,', 422, "14"), (b"", 422, "body")],
)
def test_direct_errors_answer_as_fastapi_did(replica, body, status, field):
    """The direct path maps a bad body to the same status and field as the FastAPI handlers."""
    headers = {"content-type": "application/json"}
    response = _call_without_fastapi(replica, "POST", "/v1/predict", content=body, headers=headers)
    assert response.status_code == status and response.json()["field"] == field


def test_routes_match_templates_and_post_only():
    """A template matches POST paths with its parameters, and nothing else."""
    routes = DirectRoutes()

    async def endpoint(request):  # pragma: no cover - never called
        raise AssertionError

    routes.add("/v2/models/{name}/infer", endpoint)
    assert routes.match("POST", "/v2/models/int8/infer") == (endpoint, {"name": "int8"})
    assert routes.match("GET", "/v2/models/int8/infer") is None
    assert routes.match("POST", "/v2/models/a/b/infer") is None
