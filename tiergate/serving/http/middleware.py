"""ASGI plumbing around the FastAPI app: request ids and metrics traces, admission of
inference requests, body limits, and a faster JSON body parser.

    app = RequestContext(fastapi_app, replica)   # outermost: a refusal skips FastAPI entirely
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from tiergate.serving.frontdoor import ADMITTED, ID_REPLACED, REQUEST_ID, is_inference, json_error, refusal
from tiergate.serving.frontdoor import request_id as client_request_id
from tiergate.serving.logs import current_request_id
from tiergate.serving.replica import Replica
from tiergate.serving.trace import Trace


class FastJSONRequest(Request):
    """Parses a JSON body with orjson, several times faster than the standard library on an
    image as nested lists (the parse was a large share of the event loop's time per request).
    What orjson refuses but lenient clients write (NaN and Infinity tokens,
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
    outermost in the app: gives each request its id (a client's, when valid: see
    ``frontdoor.request_id``) and a metrics trace, admits inference
    requests (``Admission``) unless ``FrontDoor`` did, refuses oversized bodies before
    reading them, and records the answer's status for inference requests."""

    def __init__(self, app, replica: Replica) -> None:
        self.app, self.replica = app, replica

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        # under Ray Serve its ingress owns the id and its header (FrontDoor, outermost there,
        # replaced a client's invalid one); elsewhere the id is checked here the same way
        serve_id = current_request_id()
        request_id, replaced = (serve_id, False) if serve_id else client_request_id(scope["headers"])
        trace = Trace()
        state = scope.setdefault("state", {})
        state["request_id"], state["trace"] = request_id, trace
        status: int | None = None  # stays None when the client left before an answer

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if not serve_id:
                    message["headers"] = [*message.get("headers", []), (REQUEST_ID, request_id.encode())]
                if replaced:
                    message["headers"].append((ID_REPLACED, b"invalid"))
            await send(message)

        limits = self.replica.limits
        length, limit = headers.get(b"content-length", b""), limits.max_body_bytes
        inference = is_inference(scope)
        admission = self.replica.admission if inference and not scope.get(ADMITTED) else None
        refused = admission.enter(limits, scope.get("client")) if admission is not None else None
        try:
            if refused is not None:
                await refusal(refused)(scope, receive, send_with_id)
            elif length.isdigit() and int(length) > limit:
                response = json_error(413, f"body of {int(length)} bytes exceeds the limit of {limit}")
                await response(scope, receive, send_with_id)
            elif not length.isdigit() and scope["method"] in ("POST", "PUT", "PATCH"):
                # no length up front (chunked): read at most the limit before the app sees it
                body, receive = await _bounded_body(receive, limit)
                if body is None:
                    response = json_error(413, f"body exceeds the limit of {limit} bytes")
                    await response(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if admission is not None and refused is None:
                admission.leave()
            if inference and status is not None:
                self.replica.record(trace, status)


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
