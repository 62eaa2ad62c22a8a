"""The hot routes served without FastAPI's per-request machinery (its middleware stack,
router scan, dependency solving and telemetry), which cost more CPU per request than the
routing and the model run of a small variant together. The endpoints are the very ones
registered on the FastAPI app (for its docs and for any other path to them): they read
their own body (``bodies.json_body``) and their errors get the answers of ``errors``.

    direct: dict[str, Endpoint] = {}
    add_v1_routes(app, access, direct)             # fills it
    await serve_direct(direct[path], scope, receive, send)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from tiergate.serving.http.errors import error_response

Endpoint = Callable[[Request], Awaitable[Response]]


async def serve_direct(endpoint: Endpoint, scope, receive, send) -> None:
    """One request to ``endpoint``; an error it raises answered as on the FastAPI app (one
    that is a fault is raised on, to the server's 500)."""
    try:
        response = await endpoint(Request(scope, receive))
    except Exception as error:
        response = error_response(error)
        if response is None:
            raise
    await response(scope, receive, send)
