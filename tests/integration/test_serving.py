"""The real application on Ray Serve, over real HTTP, on a small digits menu."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.integration.conftest import deployed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway_url(digits_config):
    """The colocated application (the default topology) at the root of the shared cluster."""
    yield from deployed(digits_config(), "tiergate", "/")


@pytest.fixture(scope="module")
def client(gateway_url):
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        yield http


def test_health_ready_and_catalog(client):
    """healthz, readyz, the variant catalog and the tier map all answer."""
    assert client.get("/healthz").json() == {"status": "ok"}
    assert set(client.get("/readyz").json()["variants"]) == {"fp32", "int8", "distilled"}
    variants = client.get("/v1/variants").json()["variants"]
    assert [v["name"] for v in variants] == ["fp32", "int8", "distilled"]
    assert all(v["ready"] and "p95" in v["latency_ms"]["1"] for v in variants)
    tiers = client.get("/v1/tiers").json()
    assert set(tiers) == {"fast", "accurate", "lenient"} and all(t["variant"] for t in tiers.values())


def test_predict_by_tier_returns_variant_reason_and_request_id(client, digits):
    """A tier request is served, names its variant in body and header, echoes X-Request-Id."""
    response = client.post("/v1/predict", json={"inputs": digits.test.x[:3].tolist(), "tier": "fast"},
                           headers={"X-Request-Id": "abc-123"})  # fmt: skip
    body = response.json()
    assert response.status_code == 200, body
    assert body["tier"] == "fast" and body["variant"] == response.headers["X-Tiergate-Variant"]
    assert body["request_id"] == "abc-123" == response.headers["X-Request-Id"]
    assert len(body["predictions"]) == 3 and body["latency_ms"] > 0 and "reason" in body


def test_png_image_is_classified(client, digits):
    """A base64 PNG is decoded, resized to the model input and classified."""
    pixels = (digits.test.x[0, 0] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32, 32)).save(buffer, format="PNG")
    body = {"image": base64.b64encode(buffer.getvalue()).decode(), "variant": "fp32", "top_k": 3}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["top_k"]) == 3


def test_route_is_a_dry_run(client):
    """/v1/route answers which variant would serve a request and why."""
    body = client.post("/v1/route", json={"tier": "accurate"}).json()
    assert body["variant"] in {"fp32", "int8", "distilled"} and body["reason"] in {"best", "degraded"}


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"inputs": np.zeros((3, 8, 8)).tolist()}, 422, "3 channels"),
        ({"inputs": np.full((1, 8, 8), np.nan).tolist()}, 422, None),
        ({"inputs": []}, 422, "empty"),
        ({"inputs": np.zeros((9, 1, 8, 8)).tolist()}, 422, "exceeds the limit"),
        ({"image": "%%%"}, 422, "base64"),
        ({"inputs": np.zeros((1, 8, 8)).tolist(), "tier": "turbo"}, 422, "unknown tier"),
        ({"inputs": np.zeros((1, 8, 8)).tolist(), "variant": "sparse"}, 404, "unknown variant"),
        ({"inputs": np.zeros((1, 8, 8)).tolist(), "slo": {"max_latency_ms": -1}}, 422, "slo.max_latency_ms"),
        ({"inputs": np.zeros((1, 8, 8)).tolist(), "slo": {"min_accuracy": 1.5}}, 422, "slo.min_accuracy"),
        ({"inputs": np.zeros((1, 8, 8)).tolist(), "slo": {"min_accuracy": 1.0}}, 422, "best ready variant"),
        (
            {"inputs": np.zeros((1, 8, 8)).tolist(), "slo": {"max_latency_ms": 1e-6}, "strict": True},
            422,
            "strict",
        ),
    ],
)
def test_bad_requests_get_json_errors_and_serving_continues(client, digits, body, status, needle):
    """Each malformed request is answered with a JSON error naming the problem, and the
    next good request is served."""
    if body.get("inputs") is not None and np.isnan(np.asarray(body["inputs"], dtype=float)).any():
        content = '{"inputs": ' + str(body["inputs"]).replace("nan", "NaN") + "}"
        response = client.post("/v1/predict", content=content, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/predict", json=body)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    if needle:
        assert needle in response.json()["error"]
    good = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist()})
    assert good.status_code == 200


def test_oversized_body_is_413(client):
    """A body over serving.limits.max_body_bytes is refused with 413 before it is parsed."""
    response = client.post("/v1/predict", content=b"{" + b" " * 300_000 + b"}",
                           headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]


def test_chunked_bodies_are_capped_too(client, digits):
    """A chunked body (no Content-Length) over the limit gets 413; a small one is served."""

    def chunks(payload: bytes, size: int = 4096):
        for start in range(0, len(payload), size):
            yield payload[start : start + size]

    headers = {"content-type": "application/json"}
    big = client.post("/v1/predict", content=chunks(b"{" + b" " * 300_000 + b"}"), headers=headers)
    assert big.status_code == 413 and "exceeds the limit" in big.json()["error"]
    body = json.dumps({"inputs": digits.test.x[:1].tolist()}).encode()
    small = client.post("/v1/predict", content=chunks(body), headers=headers)
    assert small.status_code == 200, small.text


def test_open_inference_protocol_v2(client, digits):
    """v2 metadata, readiness and inference by variant, by tier and by the model's name."""
    assert client.get("/v2").json()["name"] == "tiergate"
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/digits-tiny").json()
    assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8] and meta["outputs"][0]["shape"] == [-1, 10]
    x = digits.test.x[:2]
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    for name, parameters in [("int8", {}), ("fast", {}), ("digits-tiny", {"tier": "accurate"})]:
        response = client.post(
            f"/v2/models/{name}/infer", json={"inputs": [tensor], "parameters": parameters}
        )
        body = response.json()
        assert response.status_code == 200, body
        assert (
            body["outputs"][0]["shape"] == [2, 10] and body["model_version"] == body["parameters"]["variant"]
        )
    assert client.get("/v2/models/nope").status_code == 404


def test_generated_request_id_matches_header(client, digits):
    """Without a client id, the body's request_id is the one in the X-Request-Id header."""
    response = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist()})
    assert response.json()["request_id"] == response.headers["X-Request-Id"] != ""


def test_triton_http_client_works_unchanged(gateway_url, digits):
    """The real tritonclient (binary tensors by default, JSON on request) reads metadata and
    gets the same logits through the v2 endpoints, routed by tier and pinned by name."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=gateway_url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-tiny")
    assert client.get_model_metadata("digits-tiny")["inputs"][0]["shape"] == [-1, 1, 8, 8]
    x = digits.test.x[:3]
    results = {}
    for binary in (True, False):
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
        result = client.infer("int8", [tensor], outputs=outputs)
        results[binary] = result.as_numpy("logits")
        assert result.get_response()["model_version"] == "int8"
    np.testing.assert_allclose(results[True], results[False], rtol=1e-5)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    routed = client.infer("digits-tiny", [tensor], parameters={"tier": "fast"})
    assert routed.as_numpy("logits").shape == (3, 10) and routed.get_response()["parameters"]["variant"]


def test_concurrent_mixed_requests_each_get_their_own_answer(gateway_url, digits, digits_config):
    """Under concurrent load with mixed tiers, pins and batch sizes (so the batcher stacks
    different requests into one ORT run), every response's predictions are those of a
    direct ORT call of the variant that served it on that request's own input."""
    import asyncio

    from tiergate.build import build_menu
    from tiergate.profiles.measure import open_session

    sessions = {e.name: open_session(e.path, threads=1) for e in build_menu(digits_config()).variants}
    rng = np.random.default_rng(0)
    routes = [{"tier": "fast"}, {"tier": "accurate"}, {"variant": "int8"}, {"variant": "distilled"}, {}]
    jobs = []
    for i in range(60):
        start = int(rng.integers(0, len(digits.test.x) - 4))
        x = digits.test.x[start : start + int(rng.integers(1, 5))]
        jobs.append((x, {"inputs": x.tolist(), "top_k": 1, **routes[i % len(routes)]}))

    async def send_all():
        async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/predict", json=body) for _, body in jobs))

    responses = asyncio.run(send_all())
    for (x, _), response in zip(jobs, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        logits = sessions[body["variant"]].run(None, {"input": x})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores = (shifted / shifted.sum(axis=1, keepdims=True)).max(axis=1)
        # the served class is a top class of this request's own logits (int8's quantized
        # logits tie exactly at times, and a batch's summation order may break a tie either way)
        served = [p["index"] for p in body["predictions"]]
        np.testing.assert_allclose(logits[np.arange(len(x)), served], logits.max(axis=1), atol=1e-4)
        np.testing.assert_allclose([p["score"] for p in body["predictions"]], scores, rtol=1e-4, atol=1e-5)


def test_failed_variant_is_retried_once_on_the_next_best(client, digits):
    """When the variant a tier routes to fails, the request is served by the next-best
    variant meeting the floor, and the answer says which one failed."""
    from ray import serve

    ingress = serve.get_deployment_handle("Ingress", app_name="tiergate")
    chosen = client.post("/v1/route", json={"tier": "lenient", "batch_size": 2}).json()["variant"]
    ingress.set_fault.remote(chosen, 1.0).result()
    try:
        response = client.post("/v1/predict", json={"inputs": digits.test.x[:2].tolist(), "tier": "lenient"})
        body = response.json()
        assert response.status_code == 200, body
        assert body["retried_from"] == chosen and body["variant"] != chosen, body
        pinned = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": chosen})
        assert pinned.status_code == 503 and chosen in pinned.json()["error"]
    finally:
        ingress.set_fault.remote(chosen, 0.0).result()
    assert (
        client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": chosen}).status_code
        == 200
    )


def test_request_that_cannot_meet_its_deadline_is_refused_at_once(client, digits):
    """With every fp32 run 2 s slower (and its profile saying so), a pinned request with a
    300 ms deadline (timeout_ms in /v1, Triton's `timeout` in microseconds in v2) gets 429
    with Retry-After at once, naming the deadline, instead of waiting for the slow run."""
    import time

    from ray import serve

    ingress = serve.get_deployment_handle("Ingress", app_name="tiergate")
    ingress.set_fault.remote("fp32", 0.0, 2.0).result()  # every fp32 run now takes 2 s longer
    try:
        started = time.monotonic()
        v1 = client.post("/v1/predict", json={"inputs": digits.test.x[:1].tolist(), "variant": "fp32",
                                              "timeout_ms": 300})  # fmt: skip
        v1_s = time.monotonic() - started
        tensor = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                  "data": digits.test.x[:1].ravel().tolist()}  # fmt: skip
        started = time.monotonic()
        v2_body = {"inputs": [tensor], "parameters": {"timeout": 300_000}}
        v2 = client.post("/v2/models/fp32/infer", json=v2_body)
        v2_s = time.monotonic() - started
    finally:
        ingress.set_fault.remote("fp32", 0.0, 0.0).result()
    for response, elapsed_s in ((v1, v1_s), (v2, v2_s)):
        assert response.status_code == 429, response.text
        assert "deadline" in response.json()["error"] and response.headers["retry-after"] == "1"
        assert elapsed_s < 1.5, f"answered after {elapsed_s:.2f} s: it waited for the slow run"


def test_admin_reprofile_retimes_every_variant_and_routes_on_it(client):
    """POST /v1/admin/reprofile (open while API keys are off) returns a fresh batch-1 p95 for
    every variant, and the catalog routes on exactly those timings afterwards."""
    response = client.post("/v1/admin/reprofile")
    assert response.status_code == 200, response.text
    timings = response.json()["variants"]
    assert set(timings) == {"fp32", "int8", "distilled"} and all(t["1"] > 0 for t in timings.values())
    catalog = {v["name"]: v["live"]["serving_p95_ms"] for v in client.get("/v1/variants").json()["variants"]}
    assert catalog == timings


def test_log_lines_carry_the_request_id_and_no_secret_or_payload(client, digits):
    """The warning a failed variant logs is in the replica's log file with the request's id,
    and no Serve log file holds the request's bearer token or its input values."""
    import time
    from pathlib import Path

    from ray import serve

    secret, marker = "Bearer sk-never-log-me-0123456789", 0.123456789
    x = digits.test.x[:1].copy()
    x.flat[0] = marker
    ingress = serve.get_deployment_handle("Ingress", app_name="tiergate")
    ingress.set_fault.remote("int8", 1.0).result()
    try:
        response = client.post("/v1/predict", json={"inputs": x.tolist(), "variant": "int8"},
                               headers={"Authorization": secret})  # fmt: skip
    finally:
        ingress.set_fault.remote("int8", 0.0).result()
    assert response.status_code == 503
    request_id = response.headers["x-request-id"]
    replica_logs = [Path(name) for name in ingress.log_files.remote().result()]
    assert replica_logs, "the replica logs to no file"
    logs = replica_logs[0].parent  # Ray Serve's log folder: every replica's and the proxy's
    deadline, lines = time.monotonic() + 10, []
    while time.monotonic() < deadline and not lines:
        text = "\n".join(p.read_text(errors="replace") for p in replica_logs)
        lines = [line for line in text.splitlines() if "injected fault" in line and request_id in line]
        time.sleep(0.2)
    assert lines, f"no log line of request {request_id} about its failure in {logs}"
    every_log = "\n".join(p.read_text(errors="replace") for p in logs.glob("*.log"))
    assert "sk-never-log-me" not in every_log and str(marker) not in every_log
