"""The Open Inference Protocol (KServe v2), as Triton and KServe clients speak it: server
and model metadata, readiness, and inference with JSON or binary tensor data. A model name
is a variant (pinned), a tier, or the model's own name (routed by ``parameters``).

    add_v2_routes(app, access)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiergate import __version__
from tiergate.serving import schemas
from tiergate.serving.auth import Target
from tiergate.serving.errors import InvalidRequest, MalformedRequest, NotFound
from tiergate.serving.gateway import Gateway, Outcome
from tiergate.serving.http.access import Access
from tiergate.serving.http.errors import problems
from tiergate.serving.http.v1 import VARIANT_HEADER
from tiergate.serving.schemas import error_responses as errors

BINARY_HEADER = "Inference-Header-Content-Length"  # the v2 binary tensor data extension
V2_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


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


def add_v2_routes(app: FastAPI, access: Access) -> None:
    ready = access.ready

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

    @app.get("/v2/models/{name}", responses=errors(401, 403, 404, 503))
    async def model_metadata(name: str, request: Request):
        current = ready()
        _known(current, access.authorize(request, _model_target(current, name, {})))
        return _metadata(name, current)

    @app.get("/v2/models/{name}/ready", responses=errors(401, 403, 404, 503))
    async def model_ready(name: str, request: Request):
        current = ready()
        _known(current, access.authorize(request, _model_target(current, name, {})))
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", responses=errors(400, 401, 403, 404, 413, 422, 429, 503))
    async def infer(name: str, request: Request):
        """JSON tensors, or the binary tensor data extension that Triton clients use by default."""
        current = ready()
        body, binary = _parse_v2(await request.body(), request.headers.get(BINARY_HEADER))
        routing = _model_request(body.parameters)
        target = _known(current, access.admit(request, _model_target(current, name, body.parameters)))
        x = current.decoder.check_batch(_v2_tensor(body.inputs[0], binary), "inputs[0]")
        request_id = body.id or request.state.request_id
        try:
            route = schemas.RouteRequest(**routing, **target.routing())
        except ValidationError as error:
            raise InvalidRequest(problems(error.errors(), prefix="parameters"), field="parameters") from None
        outcome = await current.run(x, route, trace=request.state.trace)
        return _answer(name, request_id, outcome, body.wants_binary_output())


def _metadata(name: str, gateway: Gateway) -> dict[str, Any]:
    """A v2 model's metadata: every variant on the live menu is one of its versions."""
    info = gateway.registry.info
    channels, height, width = info.input_shape
    return {
        "name": name,
        "versions": [variant.name for variant in gateway.registry.known()],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, channels, height, width]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, len(info.classes)]}],
    }


def _answer(name: str, request_id: str, outcome: Outcome, binary: bool) -> Response:
    """The v2 inference response: JSON, or a JSON header followed by the raw logits."""
    logits = np.ascontiguousarray(outcome.logits, dtype=np.float32)
    output: dict[str, Any] = {"name": "logits", "datatype": "FP32", "shape": list(logits.shape)}
    if not binary:
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
    if not binary:
        return Response(orjson.dumps(header), media_type="application/json",
                        headers={VARIANT_HEADER: outcome.variant})  # fmt: skip
    encoded = orjson.dumps(header)
    return Response(
        encoded + logits.tobytes(),
        media_type="application/octet-stream",
        headers={BINARY_HEADER: str(len(encoded)), VARIANT_HEADER: outcome.variant},
    )


def _parse_v2(raw: bytes, header_length: str | None) -> tuple[V2InferRequest, bytes]:
    split = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise MalformedRequest(
                f"{BINARY_HEADER}: {header_length!r} does not fit a {len(raw)}-byte body", field=BINARY_HEADER
            )
        split = int(header_length)
    try:
        return V2InferRequest.model_validate_json(raw[:split]), raw[split:]
    except ValidationError as error:
        raise InvalidRequest(problems(error.errors())) from None


def _v2_tensor(tensor: V2Tensor, binary: bytes) -> np.ndarray:
    dtype = V2_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidRequest(
            f"inputs[0].datatype: {tensor.datatype} is not one of {sorted(V2_DTYPES)}",
            field="inputs[0].datatype",
        )
    try:
        if tensor.data is not None:
            x = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
        else:
            size = int(tensor.parameters.get("binary_data_size", len(binary)))
            x = np.frombuffer(binary[:size], dtype=dtype).reshape(tensor.shape).astype(np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidRequest(
            f"inputs[0]: the data does not fill shape {tensor.shape} with float32-range numbers",
            field="inputs[0]",
        ) from None
    return x[None] if x.ndim == 3 else x  # one image [C, H, W]; other ranks fail check_batch


def _model_request(parameters: dict[str, Any]) -> dict[str, Any]:
    """Routing fields from a v2 request's ``parameters`` other than its target (see ``_model_target``)."""
    slo = {k: parameters[k] for k in ("max_latency_ms", "min_accuracy") if k in parameters}
    routing: dict[str, Any] = {"slo": slo or None, "strict": bool(parameters.get("strict", False))}
    timeout = parameters.get("timeout")  # Triton's request parameter, in microseconds
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout < 1e15:
            raise InvalidRequest(
                f"parameters.timeout: microseconds, a number from 1, got {timeout!r}",
                field="parameters.timeout",
            )
        routing["timeout_ms"] = float(timeout) / 1000
    return routing


def _model_target(gateway: Gateway, name: str, parameters: dict[str, Any]) -> Callable[[str], Target]:
    """What a v2 model name reaches, given the default tier: a variant (pin), a tier, or the
    model itself (routed by ``parameters.tier``); for ``Access`` to resolve, then check."""
    variants = [variant.name for variant in gateway.registry.known()]
    model = gateway.registry.info.model
    return lambda default: Target.of_model(
        name, parameters.get("tier"), default, model=model, tiers=gateway.tiers, variants=variants
    )


def _known(gateway: Gateway, target: Target) -> Target:
    """404 for a model name that is none of the model, a tier or a variant (after the key's
    check: a tier-limited key gets 403 for it, so it learns no names)."""
    if not target.known:
        variants = [variant.name for variant in gateway.registry.known()]
        model = gateway.registry.info.model
        raise NotFound(
            f"model: unknown model {target.name!r}", field="model", known=[model, *gateway.tiers, *variants]
        )
    return target
