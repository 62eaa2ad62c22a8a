"""Hostile requests against the real HTTP app over an in-process replica (real FastAPI, real
ORT, no Ray): strict JSON types, bounded numbers, non-finite model outputs, capped echoes,
request ids and v2 framing. Each gets a 4xx with a small JSON body naming what is wrong."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import numpy as np
import pytest

from tests.support.asgi import call
from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.auth import AuthConfig
from tiergate.serving.config import AdmissionConfig, ServingConfig
from tiergate.serving.frontdoor import Door, FrontDoor

TIERS = {"accurate": Tier(max_latency_ms=1000.0, min_accuracy=0.5), "open": Tier()}
# each call runs on its own event loop (asyncio.run), and the loop-lag probe, started on the
# first, would read the later ones as late: admission is not what these tests are about
SERVING = ServingConfig(admission=AdmissionConfig(max_loop_lag_ms=3_600_000))
KEY = "tier-key-0123456789abcdef"
IMAGE = np.full((1, 8, 8), 0.5).tolist()
JSON = {"content-type": "application/json"}
SMALL = 2048  # bytes: the most an error body may take


@pytest.fixture(scope="module")
def replica(tiny_menu):
    return replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=SERVING)


@pytest.fixture(scope="module")
def keyed(tiny_menu, tmp_path_factory):
    """A replica with API keys on and one key allowed the "accurate" tier only."""
    keys = tmp_path_factory.mktemp("keys") / "keys.yaml"
    keys.write_text(f'keys: [{{name: limited, key: "{KEY}", tiers: [accurate]}}]\n')
    serving = SERVING.model_copy(update={"auth": AuthConfig(enabled=True, keys_file=keys)})
    return replica_for(tiny_menu, TIERS, variants=["fp32", "int8"], serving=serving)


def _call(replica, method: str, path: str, **kwargs) -> httpx.Response:
    return call(replica, method, path, raise_app_exceptions=False, **kwargs)  # 500s too, as responses


def _post(replica, path: str, content: bytes | str, headers: dict | None = None) -> httpx.Response:
    content = content.encode() if isinstance(content, str) else content
    return _call(replica, "POST", path, content=content, headers={**JSON, **(headers or {})})


def _refused(response: httpx.Response, status: int, field: str | None) -> str:
    """The answer is ``status`` with a small JSON body naming ``field``; returns its error."""
    assert response.status_code == status, response.text[:500]
    assert len(response.content) < SMALL, len(response.content)
    body = response.json()
    assert body.get("field") == field, body
    return body["error"]


def _v2(data, **extra) -> str:
    tensor = {"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor], **extra})


# ---------------------------------------------------------------------- strict JSON, /v1


@pytest.mark.parametrize(("pixel", "kind"), [("0.5", "a string"), (True, "a boolean"), (None, "null")])
def test_pixels_that_are_not_json_numbers_are_refused(replica, pixel, kind):
    """A pixel sent as a string, a boolean or null gets 422 naming inputs and its position."""
    image = [[[0.5] * 8 for _ in range(8)]]
    image[0][2][5] = pixel
    error = _refused(_post(replica, "/v1/predict", json.dumps({"inputs": image})), 422, "inputs")
    assert error == f"inputs[0][2][5]: must be a JSON number, got {kind}"


def test_image_count_is_checked_before_the_values(replica):
    """65 images (over the limit of 64) get the limit's 422, not the first bad value's."""
    error = _refused(_post(replica, "/v1/predict", json.dumps({"inputs": [[[["x"]]]] * 65})), 422, "inputs")
    assert error == "inputs: batch of 65 exceeds the limit of 64"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"slo": {"max_latency_ms": 1e400}}', "slo.max_latency_ms"),  # past float range: inf
        ('{"slo": {"max_latency_ms": 8.7e7}}', "slo.max_latency_ms"),  # over a day
        ('{"slo": {"max_latency_ms": "5"}}', "slo.max_latency_ms"),
        ('{"slo": {"min_accuracy": true}}', "slo.min_accuracy"),
        ('{"timeout_ms": 1e400}', "timeout_ms"),
        ('{"strict": "false"}', "strict"),
        ('{"strict": 0}', "strict"),
        ('{"batch_size": 100000000000}', "batch_size"),  # over serving.limits.max_batch_images
        ('{"batch_size": 2.0}', "batch_size"),
        ('{"tier": 5}', "tier"),
    ],
)
def test_route_fields_are_strictly_typed_and_bounded(replica, body, field):
    """/v1/route refuses a wrong JSON type or an out-of-range, infinite number with 422 naming the field."""
    _refused(_post(replica, "/v1/route", body), 422, field)


def test_top_k_must_be_an_integer(replica):
    """top_k true (not 1) gets 422 naming top_k."""
    _refused(_post(replica, "/v1/predict", json.dumps({"inputs": IMAGE, "top_k": True})), 422, "top_k")


# ---------------------------------------------------------------------- non-finite outputs

OVERFLOWING = np.tile([3e38, -3e38], 32).reshape(1, 8, 8).tolist()  # finite, but fp32 overflows on it


def test_v1_non_finite_model_output_is_refused(replica):
    """Finite pixels that overflow fp32's logits get 422 on inputs, not a 200 with a null score."""
    body = json.dumps({"inputs": OVERFLOWING, "variant": "fp32"})
    assert "not finite" in _refused(_post(replica, "/v1/predict", body), 422, "inputs")


def test_v2_non_finite_model_output_is_refused(replica):
    """The same input over v2 gets 422, not logits of null."""
    body = _v2(np.ravel(OVERFLOWING).tolist())
    assert "not finite" in _refused(_post(replica, "/v2/models/fp32/infer", body), 422, "inputs")


# ---------------------------------------------------------------------- v2


@pytest.mark.parametrize("length", [b"\xb2", b"1\xb3", b"-1", b" 10", b"9" * 40])
def test_v2_binary_header_must_be_ascii_digits(replica, length):
    """Inference-Header-Content-Length other than ASCII digits ('²' passes str.isdigit) gets 400."""
    response = _post(
        replica, "/v2/models/fp32/infer", _v2([0.0] * 64), {"Inference-Header-Content-Length": length}
    )
    assert "ASCII digits" in _refused(response, 400, "Inference-Header-Content-Length")


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({"strict": "false"}, "parameters.strict"),
        ({"binary_data_output": "false"}, "parameters.binary_data_output"),
        ({"tier": ["accurate"]}, "parameters.tier"),
        ({"max_latency_ms": True}, "parameters.max_latency_ms"),
        ({"min_accuracy": "0.9"}, "parameters.min_accuracy"),
        ({"timeout": "100000"}, "parameters.timeout"),
        ({"tier": {"a": 1}}, "parameters.tier"),
    ],
)
@pytest.mark.parametrize("keys", [False, True], ids=["keys-off", "keys-on"])
def test_v2_parameters_are_strictly_typed(replica, keyed, parameters, field, keys):
    """A v2 parameter of the wrong JSON type gets 422 naming it, with API keys off and on
    (with them on, a list as tier reached the key's tier check and answered 500)."""
    server, headers = (keyed, {"authorization": f"Bearer {KEY}"}) if keys else (replica, {})
    body = _v2([0.0] * 64, parameters=parameters)
    _refused(_post(server, "/v2/models/digits-tiny/infer", body, headers), 422, field)


def test_v2_output_binary_data_must_be_a_boolean(replica):
    """outputs[].parameters.binary_data "false" gets 422 (it used to ask for binary output)."""
    body = _v2([0.0] * 64, outputs=[{"name": "logits", "parameters": {"binary_data": "false"}}])
    response = _post(replica, "/v2/models/fp32/infer", body)
    assert response.status_code == 422 and "binary_data" in response.json()["error"]


def test_v2_values_must_be_json_numbers(replica):
    """v2 data with a string in it gets 422, not a classification."""
    data = [0.0] * 64
    data[7] = "0.5"
    error = _refused(_post(replica, "/v2/models/fp32/infer", _v2(data)), 422, "inputs[0].data")
    assert error == "inputs[0].data[7]: must be a JSON number, got a string"


@pytest.mark.parametrize(("size", "status"), [(10**6, 400), (-4, 422), ("256", 422), (3, 422)])
def test_v2_binary_data_size_must_fit(replica, size, status):
    """binary_data_size beyond the body (400), negative, not an integer or not whole values (422)."""
    tensor = {
        "name": "input",
        "shape": [1, 1, 8, 8],
        "datatype": "FP32",
        "parameters": {"binary_data_size": size},
    }
    header = json.dumps({"inputs": [tensor]}).encode()
    response = _post(
        replica,
        "/v2/models/fp32/infer",
        header + bytes(256),
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == status, response.text


# ---------------------------------------------------------------------- echoes and request ids


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/route", json.dumps({"tier": "t" * 8_000_000})),
        ("/v1/route", json.dumps({"k" * 1_000_000: 1})),  # an unknown key, named in the error
        ("/v1/route", json.dumps({f"extra{i}": i for i in range(10_000)})),  # 10,000 errors
        ("/v2/models/" + "m" * 60_000 + "/infer", _v2([0.0] * 64)),
        ("/v2/models/fp32/infer", _v2([0.0] * 64, id="i" * 1_000_000)),
    ],
)
def test_error_bodies_stay_small(replica, path, body):
    """A huge tier, key, error count, model name or v2 id gets a 4xx whose body is under 2 KB."""
    response = _post(replica, path, body)
    assert 400 <= response.status_code < 500 and len(response.content) < SMALL, len(response.content)


def test_unknown_tier_is_named_in_a_capped_echo(replica):
    """An unknown tier of 128 characters comes back cut to 64 with its length."""
    error = _refused(_post(replica, "/v1/route", json.dumps({"tier": "t" * 128})), 422, "tier")
    assert "(128 characters)" in error and "t" * 100 not in error


VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@pytest.mark.parametrize("given", ["a b", "x" * 129, "ü", "", "id\t1", "<script>"])
def test_invalid_request_id_is_replaced_and_said_so(replica, given):
    """An X-Request-Id with other characters or over 128 is replaced, with X-Request-Id-Replaced."""
    response = _post(replica, "/v1/predict", json.dumps({"inputs": IMAGE}), {"X-Request-Id": given.encode()})
    assert response.status_code == 200
    assert VALID_ID.fullmatch(response.headers["x-request-id"]) and response.headers["x-request-id"] != given
    assert response.headers["x-request-id-replaced"] == "invalid"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_valid_request_id_is_kept(replica):
    """A valid X-Request-Id is echoed as given, and nothing says it was replaced."""
    given = "trace-01.AB:cd_" + "x" * 113  # 128 characters
    response = _post(replica, "/v1/predict", json.dumps({"inputs": IMAGE}), {"X-Request-Id": given})
    assert response.headers["x-request-id"] == given and "x-request-id-replaced" not in response.headers


def test_a_normal_request_is_served_after_hostile_ones(replica, digits):
    """After the hostile requests above, a good /v1 and v2 request get 200."""
    assert (
        _post(replica, "/v1/predict", json.dumps({"inputs": digits.test.x[:2].tolist()})).status_code == 200
    )
    assert _post(replica, "/v2/models/fp32/infer", _v2(digits.test.x[0].ravel().tolist())).status_code == 200


def _through_front_door(request_id: bytes) -> tuple[bytes | None, dict[bytes, bytes]]:
    """(the X-Request-Id the app inside FrontDoor saw, the answer's headers) for one request."""
    seen: list[bytes | None] = []

    async def app(scope, receive, send):
        seen.append(dict(scope["headers"]).get(b"x-request-id"))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/healthz", "headers": [(b"x-request-id", request_id)]}
    asyncio.run(FrontDoor(app, Door())(scope, receive, send))
    return seen[0], dict(sent[0]["headers"])


def test_front_door_replaces_an_invalid_id_before_serve_sees_it():
    """Under Ray Serve (which takes and echoes X-Request-Id as it finds it), FrontDoor, outermost,
    hands the app a valid id in place of an invalid one and marks the answer X-Request-Id-Replaced."""
    inner, headers = _through_front_door(b"bad id\x01" + b"x" * 200)
    assert (
        inner is not None
        and VALID_ID.fullmatch(inner.decode())
        and headers[b"x-request-id-replaced"] == b"invalid"
    )
    inner, headers = _through_front_door(b"good-id")
    assert inner == b"good-id" and b"x-request-id-replaced" not in headers
