"""Fuzzing the live gateway on Ray Serve over real HTTP: schemathesis against its own
OpenAPI schema, then hypothesis strategies for hostile tensors (v1 and v2), edge values for
every numeric and typed field, v2 binary framing, request ids and hostile images. Every
answer must come within a bounded time, never be a 5xx, and be a small JSON body with an
"error" field whenever it is an error; afterwards the same replica still serves.

``make test`` runs each fuzz test once on derandomized examples (the same on every run);
``make fuzz`` (FUZZ_SECONDS set) runs each on fresh random examples, again and again, for
that many seconds."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import struct
import time
import zlib
from typing import Any

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from schemathesis.generation import GenerationMode

from tests.integration.conftest import deployed

pytestmark = pytest.mark.integration

APP, PREFIX = "tiergate-fuzz", "/fuzz"
TIMEOUT_S = 10.0  # a request that hangs longer fails its test
INPUT_SHAPE = (1, 8, 8)  # the digits models' [C, H, W]
FUZZ_SECONDS = float(os.environ.get("FUZZ_SECONDS") or 0)  # make fuzz: random examples for this long
SMALL = 2048  # bytes: the most an error body may take (no answer reflects a large input)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=not FUZZ_SECONDS,  # make test: the same examples on every run, CI is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def fuzz(test, seconds: float = FUZZ_SECONDS) -> None:
    """Runs a hypothesis test once; with ``seconds`` (make fuzz), again and again, each run on
    fresh random examples, until that many seconds have passed."""
    stop = time.monotonic() + seconds
    test()
    while time.monotonic() < stop:
        test()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fuzz_url(digits_config):
    yield from deployed(digits_config(), APP, PREFIX)


@pytest.fixture(scope="module")
def client(fuzz_url):
    """An HTTP client on the application, once the proxy routes its prefix (just after
    serve.run the proxy has been seen to answer 404 for a moment)."""
    with httpx.Client(base_url=fuzz_url, timeout=TIMEOUT_S) as http:
        deadline = time.monotonic() + 30
        while http.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, f"{fuzz_url}/healthz never answered 200"
            time.sleep(0.2)
        yield http


@pytest.fixture(scope="module", autouse=True)
def replicas_before(fuzz_url):
    """The application's replica actors before any test here runs (a restart changes them)."""
    return _replica_actors()


@pytest.fixture(scope="module")
def model_names(client):
    """Every name /v2/models/{name} knows: the model, its tiers and its variants."""
    variants = client.get("/v1/variants").json()
    return [variants["model"], *client.get("/v1/tiers").json(), *(v["name"] for v in variants["variants"])]


@pytest.fixture(scope="module")
def api_schema(fuzz_url, client):
    """The OpenAPI schema the deployed application serves; its paths lack the route prefix,
    so the base URL (which has it) is set explicitly."""
    schema = schemathesis.openapi.from_url(f"{fuzz_url}/openapi.json", timeout=TIMEOUT_S)
    schema.config.update(base_url=fuzz_url, request_timeout=TIMEOUT_S)
    return schema


def _replica_actors() -> set[str]:
    import ray

    names = {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)}
    return {name for name in names if "REPLICA" in name.upper() and APP in name}


def _check_error_body(response: httpx.Response, what: str) -> None:
    """A 4xx must be JSON with an "error" field (5xx are failures in their own right)."""
    assert response.status_code < 500, f"{what} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"{what} -> {response.status_code} with a non-JSON body: {response.text[:300]!r}")
        assert isinstance(body, dict) and "error" in body, f"{what} -> {response.status_code}: {body}"
        assert len(response.content) < SMALL, f"{what} -> {len(response.content)}-byte error body"


def _post(client: httpx.Client, path: str, content: bytes, headers: dict[str, str | bytes] | None = None):
    try:
        return client.post(
            path, content=content, headers={"content-type": "application/json", **(headers or {})}
        )
    except httpx.TimeoutException:
        pytest.fail(f"POST {path} got no answer within {TIMEOUT_S} s: {content[:300]!r}")


BEYOND_FLOAT = "<1e400>"  # written as the JSON number 1e400: no float holds it (the stdlib reads inf)


def _dumps(value: Any) -> bytes:
    """JSON as a lenient client writes it: NaN and Infinity tokens, big integers in full,
    and ``BEYOND_FLOAT`` as 1e400."""
    return json.dumps(value, allow_nan=True).replace(f'"{BEYOND_FLOAT}"', "1e400").encode()


def _missed_own_deadline(body: Any, status: int, text: str) -> bool:
    """The documented 503 for a request whose own ``timeout_ms`` (schemathesis generates any
    positive float) passed while it was queued: "timed out: ...", not a server fault. Which
    small timeouts get it rather than 200 or 429 depends on timing, so it is allowed here."""
    if status != 503 or not isinstance(body, dict) or body.get("timeout_ms") is None:
        return False
    try:
        return str(json.loads(text).get("error", "")).startswith("timed out")
    except ValueError:
        return False


# --------------------------------------------------------------------------- schemathesis
# schemathesis.pytest.from_fixture (lazy loading) would fit the session-scoped deployment, but
# schemathesis 4.32.5 sets the private ``Node._nodeid`` that pytest 9.2 no longer has
# (AttributeError), so each operation gets its own hypothesis run here instead.


def test_openapi_operations_never_answer_5xx(api_schema):
    """Every OpenAPI operation answers in time, with a status and body its schema documents
    (errors as JSON ``ErrorBody``), never a 5xx but a missed own-deadline 503."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    served = {
        (method.upper(), path) for path, item in api_schema.raw_schema["paths"].items() for method in item
    }
    assert {(op.method.upper(), op.path) for op in operations} == served and len(served) >= 12
    failures = []
    for operation in operations:
        strategy = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)
        )

        @settings(
            max_examples=25,
            deadline=None,
            derandomize=not FUZZ_SECONDS,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case):
            note(case.as_curl_command())
            response = case.call()
            if _missed_own_deadline(case.body, response.status_code, response.text):
                return
            case.validate_response(
                response, checks=[not_a_server_error, status_code_conformance, response_schema_conformance]
            )
            if response.status_code >= 400:
                headers = {name.lower(): values for name, values in response.headers.items()}
                content_type = headers.get("content-type", [""])[0]
                assert "json" in content_type, (response.status_code, content_type, response.text)
                response.json()  # parses

        try:
            fuzz(call, FUZZ_SECONDS / len(operations))  # make fuzz: the budget shared by the operations
        except Exception as error:  # every operation runs; all failures are reported together
            notes = "\n".join(getattr(error, "__notes__", []))
            failures.append(f"{operation.label}: {type(error).__name__}: {error}\n{notes}")
    assert not failures, "\n\n".join(failures)


# --------------------------------------------------------------------------- tensors

HUGE = [10**400, -(10**400), 2**64, 2**63, -(2**63) - 1, 1e308, -1e308, 3.4e39]
numbers = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-1000, 1000),
    st.sampled_from(HUGE),
)
junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=4), st.just({}), st.lists(st.integers(0, 1), max_size=2)
)


def _nest(flat: list, shape: list[int]) -> Any:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nest(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def tensors(draw) -> tuple[list[int], list]:
    """(shape, flat values): the model's shape or another rank/size, mostly numbers, sometimes
    one hostile entry (huge, non-finite, non-numeric)."""
    shape = draw(
        st.one_of(
            st.just(list(INPUT_SHAPE)),
            st.integers(0, 10).map(lambda n: [n, *INPUT_SHAPE]),
            st.lists(st.integers(0, 9), min_size=0, max_size=6),
        )
    )
    size = math.prod(shape)
    if size > 700:  # keeps bodies under serving.limits.max_body_bytes, mostly
        shape, size = list(INPUT_SHAPE), math.prod(INPUT_SHAPE)
    values = draw(st.lists(numbers, min_size=size, max_size=size))
    if values and draw(st.booleans()):
        values[draw(st.integers(0, len(values) - 1))] = draw(st.one_of(st.sampled_from(HUGE), junk))
    return shape, values


@st.composite
def predict_inputs(draw) -> Any:
    """A value for /v1/predict's "inputs": a nested tensor, a ragged one or a non-list."""
    shape, values = draw(tensors())
    kind = draw(st.sampled_from(["nested", "nested", "nested", "ragged", "flat", "scalar"]))
    if kind == "nested" and shape:
        return _nest(values, shape)
    if kind == "ragged":
        return [[[0.0] * 8] * 8, [[0.0] * 3]]
    if kind == "flat":
        return values
    return draw(st.one_of(numbers, junk))


# request deadlines (ms in v1, us in v2) that are refused (422), refused up front (429) or generous:
# none in the window (about 0.2-2 ms) where the documented 503 for a passed deadline depends on timing
DEADLINES = st.sampled_from(
    [math.nan, math.inf, -math.inf, 0, -1, 5e-324, 1e-300, 1e308, 10**400, "x", None, 10_000_000]
)
routing = st.fixed_dictionaries(
    {},
    optional={
        "tier": st.sampled_from(["fast", "accurate", "lenient", "turbo", ""]),
        "variant": st.sampled_from(["fp32", "int8", "distilled", "sparse"]),
        "slo": st.fixed_dictionaries(
            {}, optional={"max_latency_ms": numbers, "min_accuracy": st.floats(-1, 2)}
        ),
        "strict": st.booleans(),
        "top_k": st.integers(-1, 200),
        "timeout_ms": DEADLINES,
    },
)


def test_v1_predict_survives_hostile_tensors(client):
    """Any /v1/predict "inputs" (rank, size, NaN/Inf/huge/non-numeric) gets < 500 in time, JSON "error"."""

    @FUZZ
    @given(inputs=predict_inputs(), extra=routing)
    @example(inputs=[[[10**400] * 8] * 8], extra={})  # a JSON integer no float can hold
    @example(inputs=np.full((1, 8, 8), np.nan).tolist(), extra={})
    @example(inputs=[[[float("inf")] * 8] * 8], extra={})
    @example(inputs=[[[3e38, -3e38] * 4] * 8], extra={"variant": "fp32"})  # finite, overflows the logits
    @example(inputs=[[["0.5"] * 8] * 8], extra={})  # numbers as strings
    @example(inputs=[[[True] * 8] * 8], extra={})
    @example(inputs=[], extra={})
    @example(inputs=[[[[]]]], extra={})
    @example(inputs=np.zeros((9, 1, 8, 8)).tolist(), extra={})
    def check(inputs, extra):
        content = _dumps({"inputs": inputs, **extra})
        response = _post(client, "/v1/predict", content)
        _check_error_body(response, f"POST /v1/predict {content[:300]!r}")

    fuzz(check)


V2_DTYPES = ["FP32", "FP16", "FP64", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "fp32", ""]
outputs = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"name": st.just("logits")}, optional={"parameters": st.just({"binary_data": True})}
        ),
        st.fixed_dictionaries({"name": st.just("logits"), "parameters": st.one_of(junk, numbers)}),
    ),
    max_size=2,
)
v2_parameters = st.fixed_dictionaries(
    {},
    optional={
        "tier": st.one_of(st.sampled_from(["fast", "accurate", "nope"]), junk),
        "strict": st.one_of(st.booleans(), junk),
        "max_latency_ms": st.one_of(numbers, junk),
        "min_accuracy": st.one_of(numbers, junk),
        "binary_data_output": st.booleans(),
        "timeout": DEADLINES,  # Triton's, in microseconds
    },
)


@st.composite
def v2_requests(draw, names: list[str]) -> tuple[str, bytes, dict[str, str]]:
    """(model name, body, headers) for /v2/models/{name}/infer: JSON tensors or the binary
    extension, with random shapes (wrong rank, zero-size, huge, negative), datatypes,
    values, data sizes, parameters and outputs."""
    # mostly a known model and a supported datatype, so that most requests get past the 404/422
    name = draw(
        st.sampled_from(names) if draw(st.integers(0, 4)) else st.text("abc-_", min_size=1, max_size=8)
    )
    shape, values = draw(tensors())
    shape = draw(
        st.one_of(
            st.just(shape),
            st.just(shape),
            st.lists(
                st.one_of(st.integers(-2, 9), st.sampled_from([50000, 2**31, 2**63, 2**70])), max_size=5
            ),
        )
    )
    datatype = draw(st.sampled_from(V2_DTYPES[:3] if draw(st.integers(0, 2)) else V2_DTYPES))
    tensor: dict[str, Any] = {"name": "input", "shape": shape, "datatype": datatype}
    body: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        body["parameters"] = draw(v2_parameters)
    if draw(st.booleans()):
        body["outputs"] = draw(outputs)
    headers: dict[str, str] = {}
    if draw(st.integers(0, 3)) == 0:  # the binary tensor data extension
        dtype = {"FP16": np.float16, "FP64": np.float64}.get(tensor["datatype"], np.float32)
        with np.errstate(over="ignore"):  # floats past the dtype's range become inf, as a client's would
            raw = np.asarray([v if isinstance(v, float) else 0.0 for v in values], dtype=dtype).tobytes()
        raw = raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw
        if draw(st.booleans()):
            tensor["parameters"] = {
                "binary_data_size": draw(st.one_of(st.integers(-5, 10**6), numbers, junk))
            }
        header = _dumps(body)
        length = draw(st.one_of(st.just(str(len(header))), st.sampled_from(["0", "-1", "x", str(10**9)])))
        return name, header + raw, {"Inference-Header-Content-Length": length}
    nestable = shape and math.prod(shape) == len(values) and min(shape) >= 0
    tensor["data"] = _nest(values, shape) if nestable and not draw(st.integers(0, 3)) else values
    return name, _dumps(body), headers


def _v2_body(shape, data, **extra) -> bytes:
    return _dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": data}], **extra})


ZEROS = [0.0] * 64
INF_BINARY_SIZE = _dumps(
    {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 1, 8, 8],
                "datatype": "FP32",
                "parameters": {"binary_data_size": math.inf},
            }
        ]
    }
)


def test_v2_infer_survives_hostile_tensors(client, model_names):
    """Any v2 infer request (shape, datatype, values, binary data, parameters) gets < 500, JSON "error"."""

    @FUZZ
    @given(request=v2_requests(model_names))
    @example(request=("fp32", _v2_body([], [1.0]), {}))  # a rank-0 tensor
    @example(request=("fp32", _v2_body([1, 1, 8, 8], [10**400] * 64), {}))
    @example(
        request=("fp32", _v2_body([1, 1, 8, 8], ZEROS, outputs=[{"name": "logits", "parameters": []}]), {})
    )
    @example(request=("fp32", _v2_body([1, 1, 8, 8], ZEROS, parameters={"timeout": 10**400}), {}))
    @example(request=("fp32", _v2_body([50000, 50000, 50000], []), {}))
    @example(request=("fp32", _v2_body([0, 1, 8, 8], []), {}))
    @example(
        request=("fp32", INF_BINARY_SIZE, {"Inference-Header-Content-Length": str(len(INF_BINARY_SIZE))})
    )
    def check(request):
        name, content, headers = request
        response = _post(client, f"/v2/models/{name}/infer", content, headers)
        _check_error_body(response, f"POST /v2/models/{name}/infer {headers} {content[:300]!r}")

    fuzz(check)


def test_raw_bodies_get_json_errors(client):
    """Arbitrary bytes POSTed to /v1/predict, /v1/route and v2 infer get < 500 in time and a JSON "error"."""

    @FUZZ
    @given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
    @example(content=b"")
    @example(content=b"[" * 100_000)  # nesting deeper than any parser recurses
    @example(content=b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}")
    def check(content):
        for path in ("/v1/predict", "/v1/route", "/v2/models/fp32/infer"):
            response = _post(client, path, content)
            _check_error_body(response, f"POST {path} {content[:200]!r}")

    fuzz(check)


# --------------------------------------------------------------------------- every field's edges

NUMERIC_EDGES = [0, -0.0, 5e-324, 1e-300, -1, 1e308, -1e308, 2**53 + 1, 2**64, 10**400,
                 math.inf, -math.inf, math.nan, BEYOND_FLOAT]  # fmt: skip
WRONG_TYPES = [True, False, "1", "0.5", "false", "", None, [], {}, [1], {"a": 1}, [[0.5]]]
edges = st.sampled_from(NUMERIC_EDGES + WRONG_TYPES)


def _field(valid: st.SearchStrategy) -> st.SearchStrategy:
    """A field's value: a valid one, a numeric edge or a wrong JSON type."""
    return st.one_of(valid, edges)


# /v1/route and /v1/predict: each field valid or at an edge (no deadline in the 0.2-2 ms window
# where the documented 503 for a passed deadline depends on timing)
v1_fields = st.fixed_dictionaries(
    {},
    optional={
        "tier": _field(st.sampled_from(["fast", "accurate", "t" * 200])),
        "variant": _field(st.sampled_from(["fp32", "int8"])),
        "strict": _field(st.booleans()),
        "batch_size": _field(st.integers(1, 9)),
        "timeout_ms": _field(st.just(10_000)),
        "top_k": _field(st.integers(1, 10)),
        "slo": _field(
            st.fixed_dictionaries(
                {},
                optional={
                    "max_latency_ms": _field(st.sampled_from([5.0, 1000.0, 86_400_000])),
                    "min_accuracy": _field(st.floats(0, 1)),
                },
            )
        ),
    },
)
v2_fields = st.fixed_dictionaries(
    {},
    optional={
        "tier": _field(st.sampled_from(["fast", "accurate", "nope"])),
        "strict": _field(st.booleans()),
        "max_latency_ms": _field(st.sampled_from([5.0, 1000.0])),
        "min_accuracy": _field(st.floats(0, 1)),
        "timeout": _field(st.just(10_000_000)),
        "binary_data_output": _field(st.booleans()),
    },
)
IMAGE = [[[0.5] * 8] * 8]
V1_KINDS = {"tier": "str?", "variant": "str?", "strict": "bool", "batch_size": "int", "timeout_ms": "number?",
            "top_k": "int", "slo": "object?"}  # fmt: skip
SLO_KINDS = {"max_latency_ms": "number?", "min_accuracy": "number?"}
V2_KINDS = {"tier": "str?", "strict": "bool", "max_latency_ms": "number?", "min_accuracy": "number?",
            "timeout": "number?", "binary_data_output": "bool"}  # fmt: skip


def _wrong(value: Any, kind: str) -> bool:
    """Whether ``value`` is of the wrong JSON type for a field of ``kind`` ("number?": a number
    or null), a number no float holds (inf, NaN, 1e400) counting as wrong: such a request must
    never be served."""
    if value is None:
        return not kind.endswith("?")
    kind = kind.rstrip("?")
    if kind == "bool":
        return not isinstance(value, bool)
    if kind == "str":
        return not isinstance(value, str)
    if kind == "object":
        return not isinstance(value, dict) or any(
            k not in SLO_KINDS or _wrong(v, SLO_KINDS[k]) for k, v in value.items()
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    if kind == "int":
        return not isinstance(value, int)
    return not math.isfinite(float(value)) if abs(value) < 2**1024 else True  # 10**400: no float holds it


def _any_wrong(fields: dict[str, Any], kinds: dict[str, str]) -> bool:
    return any(_wrong(value, kinds[name]) for name, value in fields.items())


def test_every_field_survives_edge_values(client, model_names):
    """Each field of /v1/route, /v1/predict and v2 parameters at a numeric edge (±0, tiny, huge,
    1e308, 1e400, ±inf, NaN) or of a wrong JSON type gets < 500, a small JSON "error"; a wrong
    type or a non-finite number is never served (2xx)."""

    @FUZZ
    @given(
        fields=v1_fields,
        parameters=v2_fields,
        output=_field(st.booleans()),
        name=st.sampled_from(model_names),
    )
    @example(fields={"slo": {"max_latency_ms": BEYOND_FLOAT}}, parameters={}, output=False, name="fp32")
    @example(fields={"strict": "false"}, parameters={"tier": ["fast"]}, output="false", name="fp32")
    def check(fields, parameters, output, name):
        for path, body in (("/v1/route", fields), ("/v1/predict", {**fields, "inputs": IMAGE})):
            content = _dumps(body)
            response = _post(client, path, content)
            _check_error_body(response, f"POST {path} {content[:300]!r}")
            assert not (_any_wrong(fields, V1_KINDS) and response.is_success), f"served: {content[:300]!r}"
        tensor = {"name": "input", "shape": [1, *INPUT_SHAPE], "datatype": "FP32", "data": [0.5] * 64}
        outputs = [{"name": "logits", "parameters": {"binary_data": output}}]
        content = _dumps({"inputs": [tensor], "parameters": parameters, "outputs": outputs})
        response = _post(client, f"/v2/models/{name}/infer", content)
        _check_error_body(response, f"POST /v2/models/{name}/infer {content[:300]!r}")
        wrong = _any_wrong(parameters, V2_KINDS) or _wrong(output, "bool")
        assert not (wrong and response.is_success), f"served: {content[:300]!r}"

    fuzz(check)


# v2 binary framing: header lengths that str.isdigit() takes but are not ASCII digits, overlong,
# signed or spaced ones (not at either end: HTTP strips those), and data sizes that do not match
# the bytes that follow
HEADER_LENGTHS = ["²", "1²", "٣", "０", "1 2", "+12", "-0", "0x10", "1e3", "", "9" * 40]


@st.composite
def v2_framing(draw) -> tuple[bytes, dict[str, bytes]]:
    shape = [1, *INPUT_SHAPE]
    size = draw(st.one_of(st.none(), st.integers(-8, 600), st.sampled_from([2**63, 10**400]), edges))
    tensor: dict[str, Any] = {"name": "input", "shape": shape, "datatype": "FP32"}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    header = _dumps({"inputs": [tensor]})
    data = np.zeros(draw(st.integers(0, 130)), dtype=np.float32).tobytes()
    true_length = str(len(header) + draw(st.integers(-3, 3)))
    length = draw(st.one_of(st.just(str(len(header))), st.just(true_length), st.sampled_from(HEADER_LENGTHS)))
    return header + data, {"Inference-Header-Content-Length": _raw(length)}


def _raw(text: str) -> bytes:
    """A header value as bytes: Latin-1 where it can be, as servers decode it ('²' is b"\\xb2",
    which str.isdigit() takes once decoded), else UTF-8."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def test_v2_binary_framing_survives_hostile_headers_and_sizes(client):
    """A v2 binary-extension body with a non-ASCII-digit, overlong or wrong header length, or a
    binary_data_size that does not fit, gets 400/422 with a small JSON "error", never a 5xx."""

    @FUZZ
    @given(request=v2_framing())
    def check(request):
        content, headers = request
        response = _post(client, "/v2/models/fp32/infer", content, headers)
        _check_error_body(response, f"POST /v2/models/fp32/infer {headers} {content[:300]!r}")

    fuzz(check)


VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@pytest.mark.parametrize(
    "given_id", ["a b", "<script>alert(1)</script>", "x" * 129, "id/with/slash", "%0d%0a", "ok\\n"]
)
def test_invalid_request_ids_are_replaced_over_serve(client, given_id):
    """Over Ray Serve (which echoes X-Request-Id as it finds it), an id of other characters or over
    128 comes back replaced by a valid one, with X-Request-Id-Replaced, in the header and the body."""
    response = client.post("/v1/predict", json={"inputs": IMAGE}, headers={"X-Request-Id": given_id})
    assert response.status_code == 200, response.text
    echoed = response.headers.get_list("x-request-id")
    assert len(echoed) == 1 and VALID_ID.fullmatch(echoed[0]) and echoed[0] != given_id, echoed
    assert response.headers["x-request-id-replaced"] == "invalid"
    assert response.json()["request_id"] == echoed[0]


def test_valid_request_id_is_echoed_over_serve(client):
    """A valid X-Request-Id comes back as sent, in the header and the body, with no replaced mark."""
    given_id = "trace-01.AB:cd_" + "x" * 113
    response = client.post("/v1/predict", json={"inputs": IMAGE}, headers={"X-Request-Id": given_id})
    assert (
        response.headers.get_list("x-request-id") == [given_id]
        and "x-request-id-replaced" not in response.headers
    )
    assert response.json()["request_id"] == given_id


# --------------------------------------------------------------------------- images


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, depth: int = 8, colour: int = 0) -> bytes:
    """A PNG written by hand, so its header may declare any size whatever the data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _encoded(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _split_idat(png: bytes, at: int, between: bytes) -> bytes:
    """``png`` with its (single) IDAT cut in two at ``at`` and ``between`` spliced in."""
    start = png.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", png[start : start + 4])
    data = png[start + 8 : start + 8 + length]
    at = max(1, min(at, length - 1))
    return (
        png[:start]
        + _chunk(b"IDAT", data[:at])
        + between
        + _chunk(b"IDAT", data[at:])
        + png[start + 12 + length :]
    )


MODES = {"PNG": ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"], "JPEG": ["L", "RGB", "CMYK"]}
OTHER_FORMATS = [
    ("GIF", "P"),
    ("BMP", "RGB"),
    ("TIFF", "RGB"),
    ("WEBP", "RGB"),
    ("ICO", "RGBA"),
    ("PPM", "RGB"),
]


@st.composite
def images(draw) -> tuple[str, bytes]:
    """(what, encoded bytes): a PNG or JPEG of random mode and size, then truncated, bit-flipped,
    with garbage spliced into its IDAT or appended; or another format; or not an image."""
    kind = draw(st.sampled_from(["valid", "truncated", "flipped", "spliced", "appended", "other", "noise"]))
    if kind == "noise":
        return kind, draw(st.binary(max_size=300))
    if kind == "other":
        fmt, mode = draw(st.sampled_from(OTHER_FORMATS))
        return fmt, _encoded(mode, (draw(st.integers(1, 40)), draw(st.integers(1, 40))), fmt, 0)
    fmt = "PNG" if kind == "spliced" else draw(st.sampled_from(["PNG", "JPEG"]))
    mode = draw(st.sampled_from(MODES[fmt]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    raw = _encoded(mode, size, fmt, draw(st.integers(0, 3)))
    if kind == "truncated":
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "flipped":
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif kind == "spliced":
        between = draw(
            st.one_of(
                st.binary(max_size=16), st.binary(min_size=4, max_size=4).map(lambda t: _chunk(t, b"x"))
            )
        )
        raw = _split_idat(raw, draw(st.integers(1, 200)), between)
    elif kind == "appended":
        raw += draw(st.binary(min_size=1, max_size=64))
    return f"{kind} {fmt} {mode} {size}", raw


@st.composite
def image_texts(draw) -> str:
    """The "image" field: base64 of a hostile image, or text that is not valid base64."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.text(max_size=40))
    what, raw = draw(images())
    note(f"image: {what}, {len(raw)} bytes")
    text = base64.b64encode(raw).decode()
    if draw(st.integers(0, 5)) == 0:
        text = text.rstrip("=") or "="  # missing padding
    return text


# a 1x1 PNG (91 bytes) whose IDAT is cut after 3 bytes, an empty chunk of type 01020304 between
_SPLICED = _split_idat(
    _png(1, 1, zlib.compress(b"\x00\x00")), 3, b"\x00" * 4 + b"\x01\x02\x03\x04" + b"\x00" * 4
)


def test_v1_predict_survives_hostile_images(client):
    """Any /v1/predict "image" (truncated, corrupt, other format, not base64) gets < 500, JSON "error"."""

    @FUZZ
    @given(text=image_texts(), extra=routing)
    @example(text=base64.b64encode(_SPLICED).decode(), extra={})  # a bad chunk between two IDATs
    @example(text=base64.b64encode(_png(8, 8, b"garbage")).decode(), extra={})
    @example(text="%%%", extra={})
    @example(text="", extra={})
    def check(text, extra):
        content = _dumps({"image": text, **extra})
        response = _post(client, "/v1/predict", content)
        _check_error_body(response, f"POST /v1/predict image={text[:200]!r} {extra}")

    fuzz(check)


LIMIT = 4096 * 4096  # serving.limits.max_image_pixels, the default the digits config keeps


@st.composite
def oversized(draw) -> tuple[str, int, int, tuple[int, int]]:
    """(format, width, height, PNG bit depth and colour type) declaring more than LIMIT pixels."""
    fmt = draw(st.sampled_from(["PNG", "JPEG"]))
    top = 65_535 if fmt == "JPEG" else 2**31 - 1  # the largest side each format can declare
    width = draw(st.integers(LIMIT // top + 1, top))
    height = draw(st.integers(LIMIT // width + 1, top))
    return fmt, width, height, draw(st.sampled_from([(8, 0), (8, 2), (8, 6), (16, 6), (1, 0)]))


def test_images_declaring_too_many_pixels_get_413(client):
    """A tiny PNG/JPEG declaring more pixels than serving.limits.max_image_pixels gets 413 and a JSON
    "error"."""

    @FUZZ
    @given(declared=oversized())
    @example(declared=("PNG", 50_000, 50_000, (8, 0)))
    @example(declared=("PNG", 4097, 4096, (16, 6)))
    @example(declared=("JPEG", 65_535, 65_535, (8, 0)))
    def check(declared):
        _declares_too_many_pixels(client, declared)

    fuzz(check)


def _declares_too_many_pixels(client: httpx.Client, declared: tuple[str, int, int, tuple[int, int]]) -> None:
    fmt, width, height, (depth, colour) = declared
    assert width * height > LIMIT
    if fmt == "JPEG":  # a 16x16 JPEG whose SOF0 marker is rewritten to the declared size
        raw = bytearray(_encoded("L", (16, 16), "JPEG", 0))
        sof = raw.index(b"\xff\xc0")
        raw[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
        raw = bytes(raw)
    else:
        raw = _png(width, height, zlib.compress(b"\x00" * 64), depth, colour)
    response = _post(client, "/v1/predict", _dumps({"image": base64.b64encode(raw).decode()}))
    _check_error_body(response, f"{fmt} declaring {width}x{height}")
    assert response.status_code == 413, (width, height, response.status_code, response.text)


def test_real_decompression_bomb_within_the_pixel_limit_is_answered_in_time(client):
    """A 16 KB PNG inflating to 4096x4096 pixels (at the limit) is classified with 200 within the timeout."""
    bomb = _png(4096, 4096, zlib.compress(b"\x00" * (4097 * 4096), 9))
    assert len(bomb) < 20_000
    response = _post(client, "/v1/predict", _dumps({"image": base64.b64encode(bomb).decode()}))
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


# --------------------------------------------------------------------------- afterwards


def test_gateway_still_serves_after_fuzzing(client, digits, replicas_before):
    """After the fuzzing, the same replicas (none restarted) answer good v1 and v2 requests with 200."""
    response = client.post("/v1/predict", json={"inputs": digits.test.x[:2].tolist()})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2
    infer = client.post(
        "/v2/models/fp32/infer",
        json={"inputs": [{"name": "input", "shape": [1, *INPUT_SHAPE], "datatype": "FP32",
                          "data": digits.test.x[0].ravel().tolist()}]},
    )  # fmt: skip
    assert infer.status_code == 200, infer.text
    assert len(infer.json()["outputs"][0]["data"]) == 10
    assert replicas_before and _replica_actors() == replicas_before
