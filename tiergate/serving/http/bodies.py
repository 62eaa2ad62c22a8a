"""Reading a JSON request body into a schema for routes that take the raw ``Request``: the
body is parsed with orjson and validated, and refused with the same 422 issues FastAPI
gives for a declared body parameter (400 for one that is not UTF-8 or nests too deeply
to parse), so clients see one behaviour whichever way a route reads its body.

    body = json_body(schemas.PredictRequest, await request.body(), request.headers.get("content-type"))
"""

from __future__ import annotations

import email.message
import functools
import json
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from tiergate.serving.errors import MalformedRequest

Model = TypeVar("Model", bound=BaseModel)


def json_body(model: type[Model], body: bytes, content_type: str | None) -> Model:
    """``body`` as ``model``; RequestValidationError (422) when it is missing, is not JSON
    (declared as JSON or not) or does not validate, each issue located under ``body``."""
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    value = _decoded(body) if _is_json(content_type) else body
    try:
        return model.model_validate(value)
    except ValidationError as error:
        issues = error.errors(include_url=False)
        raise RequestValidationError(
            [{**issue, "loc": ("body", *issue["loc"])} for issue in issues]
        ) from None


@functools.lru_cache(maxsize=64)  # clients send a handful of spellings; parsing one costs µs
def _is_json(content_type: str | None) -> bool:
    """Whether the body is declared JSON (``application/json`` or ``application/*+json``);
    an undeclared body is not parsed, as FastAPI's strict content type has it."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _decoded(body: bytes) -> Any:
    """The JSON value; what orjson refuses but lenient clients write (NaN and Infinity
    tokens, integers past 64 bits) is parsed by the standard library, so it still reaches
    the input checks that name the problem."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise MalformedRequest("body: not valid UTF-8 JSON", field="body") from None
    except RecursionError:
        raise MalformedRequest("body: JSON nested too deeply to parse", field="body") from None
    except json.JSONDecodeError as error:
        raise RequestValidationError([{
            "type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error",
            "input": {}, "ctx": {"error": error.msg},
        }]) from None  # fmt: skip
