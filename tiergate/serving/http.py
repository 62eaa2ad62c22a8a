"""The HTTP surface: FastAPI routes for /v1 and the Open Inference Protocol (v2),
JSON errors, request ids. Everything it decides comes from ``Gateway``.

    app = create_app(lambda: gateway, lambda: Limits.from_config(serving))  # getters: None until ready
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tiergate import __version__
from tiergate.serving import schemas
from tiergate.serving.auth import AuthError, KeyRing
from tiergate.serving.frontdoor import ADMITTED, Admission, Door, Limits, is_inference, json_error, refusal
from tiergate.serving.gateway import Gateway, GatewayError
from tiergate.serving.inputs import InputError
from tiergate.serving.logs import current_request_id
from tiergate.serving.metrics import Trace
from tiergate.serving.schemas import error_responses as errors

log = logging.getLogger(__name__)

REQUEST_ID = "X-Request-Id"
VARIANT_HEADER = "X-Tiergate-Variant"


class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None  # absent when the tensor travels as binary data
    parameters: dict[str, Any] = Field(default_factory=dict)


class V2InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)

    def wants_binary_output(self) -> bool:
        def asks(output: dict[str, Any]) -> bool:
            parameters = output.get("parameters")
            return isinstance(parameters, dict) and bool(parameters.get("binary_data"))

        return bool(self.parameters.get("binary_data_output")) or any(asks(o) for o in self.outputs)


class AdminOps(Protocol):
    """What /v1/admin/* runs, provided by the Serve replica."""

    async def reprofile(self) -> dict[str, dict[int, float]]: ...

    def reload_keys(self) -> int: ...


BINARY_HEADER = "Inference-Header-Content-Length"  # the v2 binary tensor data extension
V2_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


class FastJSONRequest(Request):
    """Parses a JSON body with orjson: a 28x28 image as nested lists parses ~5x faster than
    with the standard library (measured: the parse was a sixth of the event loop's time per
    request). What orjson refuses but lenient clients write (NaN and Infinity tokens,
    integers past 64 bits) goes to the standard library, so it still reaches the input
    checks that name the problem."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:
                self._json = json.loads(body)  # invalid JSON raises here, as FastAPI expects
        return self._json


class FastJSONRoute(APIRoute):
    """FastAPI's documented hook for a custom ``Request`` class on every route."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def with_fast_json(request: Request) -> Response:
            return await handler(FastJSONRequest(request.scope, request.receive))

        return with_fast_json


class RequestContext:
    """Plain ASGI middleware (Starlette's BaseHTTPMiddleware costs a task group per request),
    outermost in the app: gives each request its id and a metrics trace, admits inference
    requests (``Admission``) unless ``FrontDoor`` did, refuses oversized bodies before
    reading them, and records the answer's status for inference requests."""

    def __init__(self, app, gateway: Callable[[], Gateway | None], limits: Callable[[], Limits],
                 admission: Callable[[], Admission]):  # fmt: skip
        self.app, self.gateway, self.limits, self.admission = app, gateway, limits, admission

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        serve_id = current_request_id()  # under Ray Serve the proxy owns the id and its header
        request_id = serve_id or headers.get(b"x-request-id", b"").decode("latin-1") or uuid.uuid4().hex
        trace = Trace()
        state = scope.setdefault("state", {})
        state["request_id"], state["trace"] = request_id, trace
        status: int | None = None  # stays None when the client left before an answer

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if not serve_id:
                    message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        limits = self.limits()
        length, limit = headers.get(b"content-length", b""), limits.max_body_bytes
        inference = is_inference(scope)
        admission = self.admission() if inference and not scope.get(ADMITTED) else None
        refused = admission.enter(limits, scope.get("client")) if admission is not None else None
        try:
            if refused is not None:
                await refusal(refused)(scope, receive, send_with_id)
            elif length.isdigit() and int(length) > limit:
                response = _error(413, f"body of {int(length)} bytes exceeds the limit of {limit}")
                await response(scope, receive, send_with_id)
            elif not length.isdigit() and scope["method"] in ("POST", "PUT", "PATCH"):
                # no length up front (chunked): read at most the limit before the app sees it
                body, receive = await _bounded_body(receive, limit)
                if body is None:
                    response = _error(413, f"body exceeds the limit of {limit} bytes")
                    await response(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if admission is not None and refused is None:
                admission.leave()
            current = self.gateway()
            if inference and status is not None and current is not None and current.metrics is not None:
                current.metrics.request(trace, status)


async def _bounded_body(receive, limit: int):
    """(the body, a receive that replays it), or (None, receive) once it passes ``limit``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None, receive
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None, receive
        if not message.get("more_body", False):
            break
    body, replayed = b"".join(chunks), False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def create_app(
    gateway: Callable[[], Gateway | None],
    limits: Callable[[], Limits],
    keys: Callable[[], KeyRing | None] = lambda: None,
    admin_ops: Callable[[], AdminOps | None] = lambda: None,
    admission: Callable[[], Admission] = lambda: Door.admission,  # one count per process
) -> RequestContext:
    """The FastAPI app inside ``RequestContext``: outermost, so that a refusal at the front
    door skips FastAPI's own middleware stack too."""
    app = FastAPI(
        title="tiergate", version=__version__, description="Routes each request to a compressed variant"
    )
    app.router.route_class = FastJSONRoute

    def ready() -> Gateway:
        current = gateway()
        if current is None:
            raise GatewayError(503, "not ready: variants are still being built or profiled", retry_after_s=5)
        return current

    def admit(request: Request, routing: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """With API keys on: 401 without a valid key; for a routed request (``routing`` has
        tier/variant), 403 outside the key's tiers and 429 over its rate. Returns the routing
        with the tier the key runs under."""
        ring = keys()
        if ring is None:
            return routing
        grant = ring.authenticate(request.headers.get("authorization"))
        if routing is None:
            return None
        tier = grant.allow(routing.get("tier"), routing.get("variant"), ready().default_tier)
        grant.take()
        return {**routing, "tier": tier}

    def admin(request: Request) -> AdminOps:
        """With API keys on, only an admin key passes (401/403); with them off, anyone who
        can reach the port (keep it on 127.0.0.1, or turn keys on)."""
        ring = keys()
        if ring is not None:
            grant = ring.authenticate_admin(request.headers.get("authorization"))
            log.info("admin %s by key %s", request.url.path, grant.name)
        ops = admin_ops()
        if ops is None or gateway() is None:
            raise GatewayError(503, "not ready: admin operations start with the gateway", retry_after_s=5)
        return ops

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: GatewayError):
        return _error(error.status, str(error), **error.extra)

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, error: AuthError):
        extra: dict[str, Any] = {}
        if error.retry_after_s is not None:
            extra["retry_after_s"] = error.retry_after_s
        response = _error(error.status, str(error), **extra)
        if error.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError):
        return _error(error.status, str(error), field=error.field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        """Starlette's own answers (404 unknown path, 405, 400 unparsable body) as JSON errors."""
        response = _error(error.status_code, str(error.detail))
        for name, value in (error.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        return _error(422, _problems(error.errors()))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", responses=errors(503))
    async def readyz():
        current = ready()
        return {"status": "ready", "variants": sorted(current.engines)}

    @app.post("/v1/predict", response_model=schemas.PredictResponse,
              responses=errors(400, 401, 403, 404, 413, 422, 429, 503))  # fmt: skip
    async def predict(body: schemas.PredictRequest, request: Request):
        body = body.model_copy(update=admit(request, {"tier": body.tier, "variant": body.variant}))
        response = await ready().predict(body, request.state.request_id, request.state.trace)
        # serialized by pydantic-core in one pass (not model_dump, then the json module)
        return Response(response.model_dump_json(), media_type="application/json",
                        headers={VARIANT_HEADER: response.variant})  # fmt: skip

    @app.post("/v1/route", response_model=schemas.Decision,
              responses=errors(400, 401, 403, 404, 413, 422, 429, 503))  # fmt: skip
    async def route(body: schemas.RouteRequest, request: Request):
        body = body.model_copy(update=admit(request, {"tier": body.tier, "variant": body.variant}))
        return ready().route(body)

    @app.get("/v1/variants", responses=errors(401, 503))
    async def variants(request: Request):
        admit(request)
        current = ready()
        routed_on = {profile.name: profile.latency_ms for profile in current.catalog()}
        rows = []
        for entry in current.menu.variants:
            engine = current.engines.get(entry.name)
            live = None
            if engine is not None:
                live = {
                    "in_flight": engine.stats.in_flight, "recent_ms": engine.stats.ewma_ms,
                    "replicas": engine.replicas, "hop_ms": engine.stats.hop_ms,
                    # false while a remote variant is down, until a live replica re-times it
                    "available": engine.available, "reprofiles": getattr(engine, "reprofiles", 0),
                    # what routing predicts from: p95 timed inside the serving replica
                    "serving_p95_ms": {str(b): ms for b, ms in routed_on[entry.name].items()},
                }  # fmt: skip
            rows.append({**entry.model_dump(mode="json", exclude={"path"}), "ready": engine is not None,
                         "live": live})  # fmt: skip
        return {"model": current.menu.model, "quality_metric": current.menu.quality_metric, "variants": rows}

    @app.get("/v1/tiers", responses=errors(401, 503))
    async def tiers(request: Request):
        admit(request)
        current = ready()
        return {
            name: {**tier.model_dump(), "variant": current.route(schemas.RouteRequest(tier=name)).variant}
            for name, tier in current.tiers.items()
        }

    @app.post("/v1/admin/reprofile", responses=errors(401, 403, 413, 503))
    async def reprofile(request: Request):
        """Time every variant again on this replica, as it runs now, and route on that."""
        timings = await admin(request).reprofile()
        return {"variants": {name: {str(b): ms for b, ms in p95.items()} for name, p95 in timings.items()}}

    @app.post("/v1/admin/reload-keys", responses=errors(401, 403, 409, 413, 503))
    async def reload_keys(request: Request):
        """Read the API keys again (rotation without a restart); rate-limit buckets carry over."""
        ops = admin(request)
        if keys() is None:
            raise GatewayError(409, "serving.auth.enabled is false: there are no keys to reload")
        return {"keys": ops.reload_keys()}

    _add_v2_routes(app, ready, admit)
    _document(app)
    return RequestContext(app, gateway, limits, admission)


def _document(app: FastAPI) -> None:
    """Two corrections to the OpenAPI schema FastAPI derives. Errors: FastAPI documents a 422
    with its own {"detail": [...]} body on every route with a parameter, but validation
    errors answer as ``ErrorBody`` and the routes that can have them declare it. And the v2
    infer route reads its body raw (it may carry binary tensor data after the JSON), so its
    JSON part, ``V2InferRequest``, is documented here."""
    derive = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = derive()
        for item in spec["paths"].values():
            for operation in item.values():
                if operation["responses"].get("422", {}).get("description") == "Validation Error":
                    del operation["responses"]["422"]
        components = spec["components"]["schemas"]
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        v2 = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(v2.pop("$defs", {}), V2InferRequest=v2)
        spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"] = {
            "required": True,
            "description": f"JSON; with the binary tensor data extension, this JSON is the first "
            f"{BINARY_HEADER} bytes and the tensors' raw bytes follow",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}},
        }
        return spec

    app.openapi = openapi


def _add_v2_routes(app: FastAPI, ready: Callable[[], Gateway], admit: Callable) -> None:
    @app.get("/v2")
    async def server_metadata():
        return {"name": "tiergate", "version": __version__, "extensions": []}

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", responses=errors(503))
    async def v2_ready():
        ready()
        return {"ready": True}

    @app.get("/v2/models/{name}", responses=errors(401, 404, 503))
    async def model_metadata(name: str, request: Request):
        admit(request)
        current = ready()
        _model_request(current, name, {})
        channels, height, width = current.menu.input_shape
        return {
            "name": name,
            "versions": [e.name for e in current.menu.variants],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, channels, height, width]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, len(current.classes)]}],
        }

    @app.get("/v2/models/{name}/ready", responses=errors(401, 404, 503))
    async def model_ready(name: str, request: Request):
        admit(request)  # with keys on, names (tiers, variants) are not told to callers without one
        _model_request(ready(), name, {})
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", responses=errors(400, 401, 403, 404, 413, 422, 429, 503))
    async def infer(name: str, request: Request):
        """JSON tensors, or the binary tensor data extension that Triton clients use by default."""
        current = ready()
        admit(request)  # the key first: a caller without one learns nothing from the answer
        body, binary = _parse_v2(await request.body(), request.headers.get(BINARY_HEADER))
        routing = admit(request, _model_request(current, name, body.parameters))
        x = current.decoder.check_batch(_v2_tensor(body.inputs[0], binary), "inputs[0]")
        request_id = body.id or request.state.request_id
        try:
            route = schemas.RouteRequest(**routing)
        except ValidationError as error:
            raise GatewayError(422, _problems(error.errors(), prefix="parameters")) from None
        outcome = await current.run(x, route, request_id, trace=request.state.trace)
        logits = np.ascontiguousarray(outcome.logits, dtype=np.float32)
        output: dict[str, Any] = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
        if not body.wants_binary_output():
            output["data"] = logits.ravel().tolist()
        else:
            output["parameters"] = {"binary_data_size": logits.nbytes}
        header = {
            "model_name": name,
            "model_version": outcome.variant,
            "id": request_id,
            "parameters": {"variant": outcome.variant, "reason": outcome.decision.reason,
                           "latency_ms": outcome.latency_ms, "slo_met": outcome.slo_met},
            "outputs": [output],
        }  # fmt: skip
        if not body.wants_binary_output():
            return Response(orjson.dumps(header), media_type="application/json",
                            headers={VARIANT_HEADER: outcome.variant})  # fmt: skip
        encoded = orjson.dumps(header)
        return Response(
            encoded + logits.tobytes(),
            media_type="application/octet-stream",
            headers={BINARY_HEADER: str(len(encoded)), VARIANT_HEADER: outcome.variant},
        )


def _problems(errors: list[dict[str, Any]], prefix: str = "") -> str:
    """Pydantic errors as one message, each naming its field: ``slo.min_accuracy: ...``."""
    parts = []
    for issue in errors:
        path = ".".join(str(p) for p in issue["loc"] if p != "body")
        path = ".".join(filter(None, (prefix, path))) or "body"
        parts.append(f"{path}: {issue['msg']}")
    return "; ".join(parts)


def _parse_v2(raw: bytes, header_length: str | None) -> tuple[V2InferRequest, bytes]:
    split = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise GatewayError(400, f"{BINARY_HEADER}: {header_length!r} does not fit a {len(raw)}-byte body")
        split = int(header_length)
    try:
        return V2InferRequest.model_validate_json(raw[:split]), raw[split:]
    except ValidationError as error:
        raise GatewayError(422, _problems(error.errors())) from None


def _v2_tensor(tensor: V2Tensor, binary: bytes) -> np.ndarray:
    dtype = V2_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise GatewayError(422, f"inputs[0].datatype: {tensor.datatype} is not one of {sorted(V2_DTYPES)}")
    try:
        if tensor.data is not None:
            x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        else:
            size = int(tensor.parameters.get("binary_data_size", len(binary)))
            x = np.frombuffer(binary[:size], dtype=dtype).reshape(tensor.shape).astype(np.float32)
    except (ValueError, TypeError, OverflowError):
        raise GatewayError(
            422, f"inputs[0]: the data does not fill shape {tensor.shape} with float32-range numbers"
        ) from None
    return x[None] if x.ndim == 3 else x  # one image [C, H, W]; other ranks fail check_batch


def _model_request(gateway: Gateway, name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Routing fields for a v2 model name: a variant (pin), a tier, or the model itself."""
    slo = {k: parameters[k] for k in ("max_latency_ms", "min_accuracy") if k in parameters}
    routing: dict[str, Any] = {"slo": slo or None, "strict": bool(parameters.get("strict", False))}
    timeout = parameters.get("timeout")  # Triton's request parameter, in microseconds
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout < 1e15:
            raise GatewayError(422, f"parameters.timeout: microseconds, a number from 1, got {timeout!r}")
        routing["timeout_ms"] = float(timeout) / 1000
    if name in gateway.entries:
        return {**routing, "variant": name}
    if name in gateway.tiers:
        return {**routing, "tier": name}
    if name == gateway.menu.model:
        return {**routing, "tier": parameters.get("tier")}
    known = [gateway.menu.model, *gateway.tiers, *gateway.entries]
    raise GatewayError(404, f"model: unknown model {name!r}", known=known)


_error = json_error
