"""The front door: what admits an inference request to a replica, or refuses it with 503
before its body is read (under overload a refusal must cost far less than an answer).

Light on purpose (no torch, no ORT): Ray Serve imports ``middlewares`` in every process
that runs an HTTP server, its proxy included, through
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=tiergate.serving.frontdoor:middlewares`` (set
by ``tiergate serve`` in HAProxy ingress mode). There ``FrontDoor`` wraps the replica's own
HTTP server, ahead of the per-request work Serve does before the app runs; elsewhere
``tiergate.serving.http.middleware.RequestContext`` admits requests inside the app.

Because Ray finds the middleware by an import path, the door a replica sets up is this
module's ``PROCESS_DOOR``: one per process, as there is one replica per process.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.middleware import Middleware
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from tiergate.serving.config import ServingConfig

INFERENCE_PATHS = ("/v1/predict", "/infer")
ADMITTED = "tiergate.admitted"  # scope key: an outer layer admitted the request already


@dataclass(frozen=True)
class Limits:
    """What the front door refuses before the body is read (``from_config``)."""

    max_body_bytes: int
    max_in_flight: int  # inference requests inside this process at once
    max_loop_lag_s: float  # how far behind the event loop may run

    @classmethod
    def from_config(cls, serving: ServingConfig) -> Limits:
        admission = serving.admission
        return cls(serving.limits.max_body_bytes, admission.max_in_flight, admission.max_loop_lag_ms / 1000)


class LoopLag:
    """How far behind its schedule this event loop runs. A timer due every ``interval_s``
    notes how late it fired. A loop saturated with work is late for everything behind
    that work, requests still unread on their sockets included, so its lag is about how
    long a request has waited before any of our code saw it."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._last_s = 0.0

    def seconds(self) -> float:
        """The last timer's lateness, or the pending timer's when it is overdue already;
        the first call starts the timer on the calling loop."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._schedule()
        return max(self._last_s, self._loop.time() - self._due)

    def _schedule(self) -> None:
        self._due = self._loop.time() + self.interval_s
        self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._last_s = self._loop.time() - self._due
        self._schedule()


class Admission:
    """How many inference requests are inside this process, how far behind its event loop
    runs, and whether more than one connection sends them; the outermost layer that sees a
    request admits or refuses it."""

    def __init__(self, sole_connection_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.in_flight, self.clock = 0, clock
        self.lag = LoopLag()
        self.sole_connection_s = sole_connection_s
        self._connection: object = None
        self._switched_at = -float("inf")

    def contenders(self) -> int:
        """The requests that work on the event loop may hold up: those inside, plus one
        while requests came over more than one connection in the last
        ``sole_connection_s`` (another may be arriving unread). Over a single HTTP/1.1
        connection the next request cannot come before this one's answer."""
        mixed = self.clock() - self._switched_at <= self.sole_connection_s
        return self.in_flight + mixed

    def enter(self, limits: Limits, connection: object = None) -> str | None:
        """Why a request is refused now; None when it is admitted (then ``leave`` once).
        ``connection`` names the connection it came over (ASGI's ``scope["client"]``);
        None counts as a new one."""
        if connection is None or connection != self._connection:
            self._connection, self._switched_at = connection, self.clock()
        lag_s = self.lag.seconds()
        if lag_s >= limits.max_loop_lag_s:
            return (
                f"the replica runs {1000 * lag_s:.0f} ms behind "
                f"(serving.admission.max_loop_lag_ms {1000 * limits.max_loop_lag_s:g})"
            )
        if self.in_flight >= limits.max_in_flight:
            return (
                f"{self.in_flight} requests in flight "
                f"(serving.admission.max_in_flight {limits.max_in_flight})"
            )
        self.in_flight += 1
        return None

    def leave(self) -> None:
        self.in_flight -= 1


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
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith(INFERENCE_PATHS)


def json_error(status: int, message: str, **extra: object) -> JSONResponse:
    """The gateway's error shape: ``{"error": message, ...}``, Retry-After from ``retry_after_s``."""
    headers = {}
    if "retry_after_s" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after_s"))
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def refusal(reason: str) -> JSONResponse:
    return json_error(503, f"overloaded: {reason}", retry_after_s=1)


class FrontDoor:
    """Admission as the outermost ASGI layer of a replica's own HTTP server (Ray Serve's
    direct ingress, behind HAProxy). Measured, a refusal here costs about 40% of what it
    costs inside the app (BENCHMARKS.md)."""

    def __init__(self, app, door: Door = PROCESS_DOOR) -> None:
        self.app, self.door = app, door

    async def __call__(self, scope, receive, send) -> None:
        limits = self.door.limits
        if limits is None or not is_inference(scope):
            return await self.app(scope, receive, send)
        admission = self.door.admission
        reason = admission.enter(limits, scope.get("client"))
        if reason is not None:
            response = refusal(reason)
            request_id = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
            response.headers["X-Request-Id"] = request_id or uuid.uuid4().hex
            await response(scope, receive, send)
            self.door.on_refusal()
            return
        scope[ADMITTED] = True
        try:
            await self.app(scope, receive, send)
        finally:
            admission.leave()


def middlewares() -> list[Middleware]:
    """For Ray Serve's RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH."""
    return [Middleware(FrontDoor, door=PROCESS_DOOR)]
