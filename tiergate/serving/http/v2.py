"""The Open Inference Protocol (KServe v2), as Triton and KServe clients speak it: server
and model metadata, readiness, and inference with JSON or binary tensor data. A model name
is a variant (pinned), a tier, or the model's own name (routed by ``parameters``).

    add_v2_routes(app, access)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, WithJsonSchema

from tiergate import __version__
from tiergate.serving import schemas
from tiergate.serving.auth import Target
from tiergate.serving.building import refuse_unready_pin
from tiergate.serving.errors import InvalidRequest, MalformedRequest, NotFound, capped, echo
from tiergate.serving.gateway import Gateway, Outcome
from tiergate.serving.http.access import Access
from tiergate.serving.http.direct import DirectRoutes
from tiergate.serving.http.errors import problems
from tiergate.serving.http.v1 import VARIANT_HEADER
from tiergate.serving.inputs import numbers
from tiergate.serving.schemas import error_responses as errors

BINARY_HEADER = "Inference-Header-Content-Length"  # the v2 binary tensor data extension
V2_DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}


MAX_DIMENSION = 2**31 - 1  # the largest extent a tensor's shape may give
_HEADER_LENGTH = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() takes '²' and '٣'


class V2Parameters(BaseModel):
    """The request parameters tiergate reads, JSON types strict (the string "false" is not a
    boolean, true is not a number); others pass through unread."""

    model_config = ConfigDict(extra="allow", strict=True)

    tier: str | None = Field(None, max_length=schemas.NAME_CHARS)
    strict: bool = False
    max_latency_ms: float | None = None  # RequestSlo bounds it
    min_accuracy: float | None = None
    timeout: float | None = Field(None, ge=1, lt=1e15, description="Triton's deadline, in microseconds")
    binary_data_output: bool = False


class V2TensorParameters(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    binary_data_size: int | None = Field(None, ge=0, description="bytes of this tensor's binary data")


class V2Tensor(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[Annotated[int, Strict(), Field(ge=0, le=MAX_DIMENSION)]] = Field(max_length=8)
    datatype: str
    data: list[Any] | None = None  # absent when the tensor travels as binary data
    parameters: V2TensorParameters = Field(default_factory=V2TensorParameters)


class V2OutputParameters(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    binary_data: bool = False


class V2Output(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    parameters: V2OutputParameters = Field(default_factory=V2OutputParameters)


class V2InferRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = Field(None, max_length=schemas.NAME_CHARS, description="echoed in the answer")
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2Output] = Field(default_factory=list)
    # typed (V2Parameters) by _model_request, where routing reads them
    parameters: Annotated[dict[str, Any], WithJsonSchema(V2Parameters.model_json_schema())] = Field(
        default_factory=dict
    )

    def wants_binary_output(self) -> bool:
        return self.parameters.get("binary_data_output") is True or any(
            output.parameters.binary_data for output in self.outputs
        )


def add_v2_routes(app: FastAPI, access: Access, direct: DirectRoutes) -> None:
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
        _known(current, access.authorize(request, _model_target(current, name, None)))
        return _metadata(name, current)

    @app.get("/v2/models/{name}/ready", responses=errors(401, 403, 404, 503))
    async def model_ready(name: str, request: Request):
        current = ready()
        _known(current, access.authorize(request, _model_target(current, name, None)))
        return {"name": name, "ready": True}

    @app.post("/v2/models/{name}/infer", responses=errors(400, 401, 403, 404, 408, 413, 422, 429, 503))
    async def infer(name: str, request: Request):
        """JSON tensors, or the binary tensor data extension that Triton clients use by default."""
        return await infer_direct(request)  # ``name`` is declared for the docs; the work reads it

    async def infer_direct(request: Request) -> Response:
        """The route's work, also served without FastAPI (``direct``): the body is read here."""
        name = request.path_params["name"]
        current = ready()
        body, binary = _parse_v2(await request.body(), request.headers.get(BINARY_HEADER))
        typed = _typed_parameters(body.parameters)
        routing = _model_request(typed, body.parameters)
        target = _known(current, access.admit(request, _model_target(current, name, typed.tier)))
        x = current.decoder.check_batch(
            _v2_tensor(body.inputs[0], binary, current.decoder.limits.max_batch_images), "inputs[0]"
        )
        request_id = body.id or request.state.request_id
        try:
            route = schemas.RouteRequest(**routing, **target.routing())
        except ValidationError as error:
            raise InvalidRequest(problems(error.errors(), prefix="parameters"), field="parameters") from None
        outcome = await current.run(x, route, trace=request.state.trace)
        access.replica.served(request_id, request.state.trace, outcome.logits.argmax(1).tolist())
        return _answer(name, request_id, outcome, body.wants_binary_output())

    direct.add("/v2/models/{name}/infer", infer_direct)


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
    """The JSON part of a v2 body and the binary data after it (``header_length`` bytes of
    JSON, from the binary extension's header; all of the body without it)."""
    split = len(raw)
    if header_length is not None:
        if not _HEADER_LENGTH.fullmatch(header_length) or int(header_length) > len(raw):
            raise MalformedRequest(
                f"{BINARY_HEADER}: {echo(header_length)} is not a byte count (ASCII digits) within the "
                f"{len(raw)}-byte body",
                field=BINARY_HEADER,
            )
        split = int(header_length)
    try:
        return V2InferRequest.model_validate_json(raw[:split]), raw[split:]
    except ValidationError as error:
        issues = error.errors()
        where = ".".join(str(part) for part in issues[0]["loc"]) if issues else ""
        raise InvalidRequest(problems(issues), field=capped(where) if where else None) from None


def _v2_tensor(tensor: V2Tensor, binary: bytes, max_images: int | None = None) -> np.ndarray:
    """The first input's values as float32 [N, C, H, W] (a rank-3 tensor is one image): JSON
    numbers from ``data`` (strict: no strings or booleans), else its binary data. A shape of
    more than ``max_images`` images is refused before any value is read."""
    if max_images is not None and len(tensor.shape) == 4 and tensor.shape[0] > max_images:
        raise InvalidRequest(
            f"inputs[0].shape: batch of {tensor.shape[0]} exceeds the limit of {max_images}",
            field="inputs[0].shape",
        )
    dtype = V2_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidRequest(
            f"inputs[0].datatype: {echo(tensor.datatype)} is not one of {sorted(V2_DTYPES)}",
            field="inputs[0].datatype",
        )
    if tensor.data is not None:
        x = numbers(tensor.data, "inputs[0].data")
    else:
        x = _binary_tensor(tensor, dtype, binary)
    try:
        x = x.reshape(tensor.shape)
    except ValueError:
        raise InvalidRequest(
            f"inputs[0]: {x.size} values do not fill shape {tensor.shape}", field="inputs[0]"
        ) from None
    return x[None] if x.ndim == 3 else x  # one image [C, H, W]; other ranks fail check_batch


def _binary_tensor(tensor: V2Tensor, dtype: type[np.floating], binary: bytes) -> np.ndarray:
    """The tensor's values from the binary data that followed the JSON: ``binary_data_size``
    bytes (all of them when it is absent), a whole number of ``dtype`` values."""
    size = tensor.parameters.binary_data_size
    size = len(binary) if size is None else size
    field = "inputs[0].parameters.binary_data_size"
    if size > len(binary):
        raise MalformedRequest(f"{field}: {size} bytes, but {len(binary)} follow the JSON", field=field)
    if size % np.dtype(dtype).itemsize:
        raise InvalidRequest(
            f"{field}: {size} bytes is not a whole number of {tensor.datatype} values", field=field
        )
    with np.errstate(over="ignore"):  # FP64 past float32's range becomes inf, refused as not finite
        return np.frombuffer(binary[:size], dtype=dtype).astype(np.float32)


def _typed_parameters(parameters: dict[str, Any]) -> V2Parameters:
    """A v2 request's ``parameters``, typed strictly (422 naming the parameter), so that only a
    string tier reaches the API-key check and only real booleans and numbers reach routing."""
    try:
        return V2Parameters.model_validate(parameters)
    except ValidationError as error:
        issues = error.errors()
        raise InvalidRequest(
            problems(issues, prefix="parameters"), field=capped(f"parameters.{issues[0]['loc'][0]}")
        ) from None


def _model_request(typed: V2Parameters, parameters: dict[str, Any]) -> dict[str, Any]:
    """Routing fields from a v2 request's parameters other than its target (see ``_model_target``)."""
    slo = {k: parameters[k] for k in ("max_latency_ms", "min_accuracy") if parameters.get(k) is not None}
    routing: dict[str, Any] = {"slo": slo or None, "strict": typed.strict}
    if typed.timeout is not None:  # Triton's request parameter, in microseconds
        routing["timeout_ms"] = typed.timeout / 1000
    return routing


def _model_target(gateway: Gateway, name: str, tier: str | None) -> Callable[[str], Target]:
    """What a v2 model name reaches, given the default tier: a variant (pin), a tier, or the
    model itself (routed by ``parameters.tier``); for ``Access`` to resolve, then check."""
    variants = [variant.name for variant in gateway.registry.known()]
    model = gateway.registry.info.model
    return lambda default: Target.of_model(
        name, tier, default, model=model, tiers=gateway.tiers, variants=variants
    )


def _known(gateway: Gateway, target: Target) -> Target:
    """404 for a model name that is none of the model, a tier or a variant (after the key's
    check: a tier-limited key gets 403 for it, so it learns no names); a variant announced but
    not serving yet is not ready: 503 with Retry-After while it is built."""
    if not target.known:
        refuse_unready_pin(gateway.registry, target.name)
        variants = [variant.name for variant in gateway.registry.known()]
        model = gateway.registry.info.model
        raise NotFound(
            f"model: unknown model {echo(target.name)}",
            field="model",
            known=[model, *gateway.tiers, *variants],
        )
    return target
