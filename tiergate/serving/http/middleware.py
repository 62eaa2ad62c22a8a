"""ASGI plumbing around the FastAPI app: request ids and metrics traces, admission of
inference, route and admin requests, body limits (size and read time), and a faster JSON
body parser.

    app = RequestContext(fastapi_app, replica)   # outermost: a refusal skips FastAPI entirely
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from tiergate.serving.errors import BodyTimeout
from tiergate.serving.frontdoor import (
    ADMITTED,
    ARRIVED,
    ID_REPLACED,
    REQUEST_ID,
    arrival,
    is_admitted,
    is_inference,
    json_error,
    refusal,
)
from tiergate.serving.frontdoor import request_id as client_request_id
from tiergate.serving.http.access import authenticate_scope, route_path
from tiergate.serving.http.direct import DirectRoutes, serve_direct
from tiergate.serving.http.errors import answer
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
    ``frontdoor.request_id``) and a metrics trace, admits inference, /v1/route and admin
    requests (``Admission``) unless ``FrontDoor`` did, with API keys on answers 401 to a
    request without a valid key (``authenticate_scope``), refuses oversized bodies before
    reading them, reads bodies within a time limit (408), and records the answer's status
    for inference requests."""

    def __init__(self, app, replica: Replica, direct: DirectRoutes | None = None) -> None:
        self.app, self.replica = app, replica
        self.direct = direct or DirectRoutes()  # routes served without FastAPI (``direct``)

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
        inference = is_inference(scope)  # the request metrics count these only
        admitted = is_admitted(scope) and not scope.get(ADMITTED)  # inference, route, admin
        admission = self.replica.admission if admitted else None
        refused = admission.enter(limits, scope.get("client")) if admission is not None else None
        if inference and refused is None:
            trace.arrived = scope.get(ARRIVED) if admission is None else arrival(admission)
        try:
            if refused is not None:
                await refusal(refused)(scope, receive, send_with_id)
            elif (unauthenticated := authenticate_scope(scope, self.replica.keys)) is not None:
                await unauthenticated(scope, receive, send_with_id)  # 401 before the body is read
            elif length.isdigit() and int(length) > limit:
                response = json_error(413, f"body of {int(length)} bytes exceeds the limit of {limit}")
                await response(scope, receive, send_with_id)
            elif scope["method"] in ("POST", "PUT", "PATCH"):
                await self._with_body(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if admission is not None and refused is None:
                admission.leave()
            if inference and status is not None:
                self.replica.record(trace, status)

    async def _with_body(self, scope, receive, send) -> None:
        """Read the whole body here, at most ``max_body_bytes`` (413 past it: a chunked body
        has no length up front) within ``body_read_timeout_s`` (408 past it), and run the app
        on it. Admission took its slot before the body was read: a client that sends its body
        slowly, or stops, must not keep it (nor HAProxy's hour-long client timeout decide)."""
        limits = self.replica.limits
        try:
            async with asyncio.timeout(limits.body_read_timeout_s):
                body, replay = await _bounded_body(receive, limits.max_body_bytes)
        except TimeoutError:
            error = BodyTimeout(
                f"body not received in full within {limits.body_read_timeout_s:g} s "
                "(serving.limits.body_read_timeout_s)"
            )
            return await answer(error)(scope, receive, send)
        if body is _GONE:
            return  # the client left: nobody to answer
        if body is None:
            response = json_error(413, f"body exceeds the limit of {limits.max_body_bytes} bytes")
            return await response(scope, receive, send)
        found = self.direct.match(scope["method"], route_path(scope))
        if found is not None:
            return await serve_direct(*found, scope, replay, send)
        await self.app(scope, replay, send)


_GONE = object()  # _bounded_body's answer when the client disconnected


async def _bounded_body(receive, limit: int):
    """(the body, a receive that replays it); (None, receive) once it passes ``limit``, and
    (_GONE, receive) when the client disconnects first."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE, receive
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
