"""The front door: what admits a request that costs the replica work (inference, dry-run
routing, admin operations) to a replica, or refuses it with 503 before its body is read
(under overload a refusal must cost far less than an answer).

Light on purpose (no torch, no ORT): Ray Serve imports ``middlewares`` in every process
that runs an HTTP server, its proxy included, through
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=tiergate.serving.frontdoor:middlewares`` (set
by ``tiergate serve``). In HAProxy ingress mode ``FrontDoor`` wraps the replica's own HTTP
server, ahead of the per-request work Serve does before the app runs; elsewhere
``tiergate.serving.http.middleware.RequestContext`` admits requests inside the app.
In every HTTP server it wraps, ``FrontDoor`` also replaces a client's invalid
``X-Request-Id`` (``request_id``) before Serve takes it and echoes it.

Because Ray finds the middleware by an import path, the door a replica sets up is this
module's ``PROCESS_DOOR``: one per process, as there is one replica per process.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

from tiergate.serving.admission import Admission, Limits

INFERENCE_PATHS = ("/v1/predict", "/infer")
ROUTE_PATH = "/v1/route"
FEEDBACK_PATH = "/v1/feedback"
ADMIN_PATHS = "/v1/admin/"  # every admin operation
REQUEST_ID = b"x-request-id"
ID_REPLACED = b"x-request-id-replaced"  # answers a request whose own id was not taken: "invalid"
_VALID_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")  # what a client's X-Request-Id may be
ADMITTED = "tiergate.admitted"  # scope key: an outer layer admitted the request already
ARRIVED = "tiergate.arrived"  # scope key: when it most likely arrived (``arrival``)
ARRIVED_STAMP = b"x-tiergate-arrived-us"  # HAProxy's: when it received the request (haproxy_bind)


class Door:
    """A process's front door, set up by the serving replica (``install``); until then, and
    in any other process (Serve's proxy), ``FrontDoor`` lets every request through."""

    def __init__(self, admission: Admission | None = None) -> None:
        self.admission = admission if admission is not None else Admission()
        self.limits: Limits | None = None
        self.on_refusal: Callable[[], None] = lambda: None  # e.g. count it in the metrics

    def install(self, limits: Limits, on_refusal: Callable[[], None]) -> None:
        self.limits, self.on_refusal = limits, on_refusal


PROCESS_DOOR = Door()


def is_inference(scope) -> bool:
    """An inference request (what the request metrics count)."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(INFERENCE_PATHS)


def is_admitted(scope) -> bool:
    """A request that passes admission: inference, /v1/route, /v1/feedback and /v1/admin/*
    (each costs the replica work, so none may bypass the in-flight cap and the loop-lag check)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return False
    path = scope["path"]
    return path.endswith(INFERENCE_PATHS) or path.endswith((ROUTE_PATH, FEEDBACK_PATH)) or ADMIN_PATHS in path


MAX_ERROR_CHARS = 1000  # a message past this is cut: no answer reflects a large input


def request_id(headers: list[tuple[bytes, bytes]]) -> tuple[str, bool]:
    """The request's id: the client's ``X-Request-Id`` when it is 1-128 characters of
    ``[A-Za-z0-9._:-]``, else a new one; and whether the client's was replaced (it sent one
    that was not valid). An id is echoed in headers, bodies and logs, so it is never free text."""
    given = next((value for name, value in headers if name == REQUEST_ID), None)
    if given is not None and _VALID_ID.fullmatch(given):
        return given.decode("ascii"), False
    return uuid.uuid4().hex, given is not None


def with_request_id(scope) -> bool:
    """Puts a valid ``X-Request-Id`` in ``scope``'s headers in place of a client's invalid
    one, for what runs inside (Ray Serve takes and echoes it as it finds it); True when it did."""
    headers = scope["headers"]
    new_id, replaced = request_id(headers)
    if replaced:
        scope["headers"] = [(name, value) for name, value in headers if name != REQUEST_ID]
        scope["headers"].append((REQUEST_ID, new_id.encode()))
    return replaced


def json_error(status: int, message: str, **extra: object) -> JSONResponse:
    """The gateway's error shape: ``{"error": message, ...}``, Retry-After from ``retry_after_s``.
    The message is capped here too, whatever built it (values in it are capped where they
    are written, with ``tiergate.serving.errors.echo``)."""
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[:MAX_ERROR_CHARS]}... ({len(message)} characters)"
    headers = {}
    if "retry_after_s" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after_s"))
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def arrival(admission: Admission, waited_s: float | None = None) -> float:
    """When a request being admitted now most likely reached the gateway (perf_counter
    time): now, less ``waited_s`` where the ingress stamped its arrival (``stamped_wait``),
    else less how late the event loop's timer is, a lower bound on how long a request read
    now waited unread (under overload the loop runs behind all the time)."""
    return time.perf_counter() - (admission.lag.overdue_s() if waited_s is None else waited_s)


def stamped_wait(scope, clock: Callable[[], float] = time.time) -> float | None:
    """How long ago HAProxy received the request, from the arrival stamp tiergate-haproxy
    has it set (``ARRIVED_STAMP``, in place of any a client sent: in the HAProxy ingress
    only, where this door runs in the replica): its wait in HAProxy's queue and in this
    process before now. None without a stamp; clamped to 0-60 s (clocks of two nodes)."""
    stamp = next((value for name, value in scope["headers"] if name == ARRIVED_STAMP), None)
    if stamp is None or not stamp.isdigit() or len(stamp) > 20:
        return None
    return min(max(clock() - int(stamp) / 1e6, 0.0), 60.0)


def refusal(reason: str) -> JSONResponse:
    return json_error(503, f"overloaded: {reason}", retry_after_s=1)


class FrontDoor:
    """Admission as the outermost ASGI layer of a replica's own HTTP server (Ray Serve's
    direct ingress, behind HAProxy). Measured, a refusal here costs about 40% of what it
    costs inside the app (BENCHMARKS.md)."""

    def __init__(self, app, door: Door = PROCESS_DOOR) -> None:
        self.app, self.door = app, door

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if with_request_id(scope):
            send = _marking_replaced(send)
        limits = self.door.limits
        if limits is None or not is_admitted(scope):
            return await self.app(scope, receive, send)
        admission, waited_s = self.door.admission, stamped_wait(scope)
        reason = admission.enter(limits, scope.get("client"), waited_s)
        if reason is not None:
            response = refusal(reason)
            response.headers["X-Request-Id"] = request_id(scope["headers"])[0]
            await response(scope, receive, send)
            self.door.on_refusal()
            return
        scope[ADMITTED], scope[ARRIVED] = True, arrival(admission, waited_s)
        try:
            await self.app(scope, receive, send)
        finally:
            admission.leave()


def _marking_replaced(send):
    """``send``, adding ``X-Request-Id-Replaced: invalid`` to the answer's headers."""

    async def marked(message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (ID_REPLACED, b"invalid")]
        await send(message)

    return marked


def middlewares() -> list[Middleware]:
    """For Ray Serve's RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH."""
    return [Middleware(FrontDoor, door=PROCESS_DOOR)]
