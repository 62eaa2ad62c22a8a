"""The hot routes served without FastAPI's per-request machinery (its middleware stack,
router scan, dependency solving and telemetry), which cost more CPU per request than the
routing and the model run of a small variant together (BENCHMARKS.md). The endpoints are
the very ones registered on the FastAPI app (for its docs and any other way in): they read
their own body (``bodies.json_body``), and their errors get the answers of ``errors``.

    direct = DirectRoutes()
    add_v1_routes(app, access, direct)             # direct.add("/v1/predict", predict)
    found = direct.match("POST", path)              # (endpoint, path params) or None
    await serve_direct(*found, scope, receive, send)
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from tiergate.serving.http.errors import error_response

Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoutes:
    """POST routes by path template (Starlette's syntax: ``/v2/models/{name}/infer``)."""

    def __init__(self) -> None:
        self._routes: list[tuple[re.Pattern[str], Endpoint]] = []

    def add(self, path: str, endpoint: Endpoint) -> None:
        pattern, _, _ = compile_path(path)
        self._routes.append((pattern, endpoint))

    def match(self, method: str, path: str) -> tuple[Endpoint, dict[str, Any]] | None:
        if method != "POST":
            return None
        for pattern, endpoint in self._routes:
            if (found := pattern.match(path)) is not None:
                return endpoint, found.groupdict()
        return None


async def serve_direct(endpoint: Endpoint, params: dict[str, Any], scope, receive, send) -> None:
    """One request to ``endpoint``; an error it raises answered as on the FastAPI app (one
    that is a fault is raised on, to the server's 500)."""
    scope["path_params"] = params
    try:
        response = await endpoint(Request(scope, receive))
    except Exception as error:
        response = error_response(error)
        if response is None:
            raise
    await response(scope, receive, send)
