"""The one place where the gateway's errors become HTTP answers: a status per error type,
and the body ``{"error": message, "field": ..., ...details}`` with ``Retry-After`` where
the error says when to come back.

    install_error_handlers(app)        # on the FastAPI app
    response = error_response(error)   # the same answers where FastAPI is not in the way
    json_error(503, "not ready", retry_after_s=5)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from tiergate.serving import errors
from tiergate.serving.errors import capped
from tiergate.serving.frontdoor import json_error

STATUS: dict[type[errors.ServingError], int] = {
    errors.MalformedRequest: 400,
    errors.Unauthenticated: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.BodyTimeout: 408,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.TooLarge: 413,
    errors.InvalidRequest: 422,
    errors.Unsatisfiable: 422,
    errors.Overloaded: 429,  # RateLimited too
    errors.Shed: 503,
    errors.Unavailable: 503,
}


def status_of(error: errors.ServingError) -> int:
    """The HTTP status for ``error``: its own class's, else its nearest base's."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def answer(error: errors.ServingError) -> JSONResponse:
    body: dict[str, Any] = dict(error.details)
    if error.field is not None:
        body["field"] = error.field
    retry_after_s = getattr(error, "retry_after_s", None)
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
    response = json_error(status_of(error), str(error), **body)
    if isinstance(error, errors.Unauthenticated):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


MAX_PROBLEMS = 5  # pydantic's errors named in one answer; the rest are counted


def problems(issues: list[dict[str, Any]], prefix: str = "") -> str:
    """Pydantic errors as one message, each naming its field: ``slo.min_accuracy: ...``.
    Never the offending value; a key name from the body is capped (``errors.capped``), and
    past ``MAX_PROBLEMS`` errors only their count is given, so the message stays small."""
    parts = [f"{_path(issue, prefix)}: {capped(issue['msg'], 200)}" for issue in issues[:MAX_PROBLEMS]]
    if len(issues) > MAX_PROBLEMS:
        parts.append(f"and {len(issues) - MAX_PROBLEMS} more")
    return "; ".join(parts)


def _path(issue: dict[str, Any], prefix: str = "") -> str:
    """Where a pydantic error is: ``slo.min_accuracy`` (the body's own keys capped)."""
    path = ".".join(capped(str(p)) for p in issue["loc"] if p != "body")
    return ".".join(filter(None, (prefix, path))) or "body"


def invalid(error: RequestValidationError) -> Response:
    """422 for a body or parameter that does not validate, naming the first field."""
    issues = error.errors()
    where = {"field": _path(issues[0])} if issues else {}
    return json_error(422, problems(issues), **where)


def starlette_answer(error: StarletteHTTPException) -> Response:
    """Starlette's own answers (404 unknown path, 405, 400 unparsable body) as JSON errors."""
    response = json_error(error.status_code, str(error.detail))
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


def error_response(error: Exception) -> Response | None:
    """The answer for an error a route raised; None for one that is a fault (a 500)."""
    if isinstance(error, errors.ServingError):
        return answer(error)
    if isinstance(error, RequestValidationError):
        return invalid(error)
    if isinstance(error, StarletteHTTPException):
        return starlette_answer(error)
    return None


def install_error_handlers(app: FastAPI) -> None:
    async def handle(request: Request, error: Exception) -> Response:
        response = error_response(error)
        assert response is not None  # registered below only for the types it answers
        return response

    for kind in (errors.ServingError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, handle)
