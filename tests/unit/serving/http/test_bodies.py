"""Reading a JSON body into a schema (tiergate.serving.http.bodies), refused as FastAPI refuses one."""

from __future__ import annotations

import pytest
from fastapi.exceptions import RequestValidationError

from tiergate.serving.errors import MalformedRequest
from tiergate.serving.http.bodies import json_body
from tiergate.serving.schemas import PredictRequest

JSON = "application/json"


def test_valid_body_becomes_the_model():
    """A JSON body that validates comes back as the schema's model, its fields set."""
    body = json_body(PredictRequest, b'{"inputs": [[[0.5]]], "tier": "fast"}', JSON)
    assert (body.inputs, body.tier) == ([[[0.5]]], "fast")


def test_missing_body_is_a_missing_field():
    """An empty body is refused as FastAPI refuses a missing body: one "missing" issue at body."""
    with pytest.raises(RequestValidationError) as raised:
        json_body(PredictRequest, b"", JSON)
    assert [(issue["type"], issue["loc"]) for issue in raised.value.errors()] == [("missing", ("body",))]


def test_invalid_json_names_its_position():
    """A body that is not JSON is a json_invalid issue at its character position."""
    with pytest.raises(RequestValidationError) as raised:
        json_body(PredictRequest, b'{"inputs": [1,', JSON)
    (issue,) = raised.value.errors()
    assert issue["type"] == "json_invalid" and issue["loc"] == ("body", 14)


def test_validation_issues_are_located_under_body():
    """A field that does not validate is located under ``body``, as FastAPI locates it."""
    with pytest.raises(RequestValidationError) as raised:
        json_body(PredictRequest, b'{"inputs": [[[0.5]]], "top_k": "many"}', JSON)
    assert raised.value.errors()[0]["loc"] == ("body", "top_k")


def test_undeclared_body_is_not_parsed():
    """Without a JSON content type the body is not parsed: it fails validation as bytes."""
    with pytest.raises(RequestValidationError) as raised:
        json_body(PredictRequest, b'{"inputs": [[[0.5]]]}', None)
    assert raised.value.errors()[0]["loc"] == ("body",)


def test_json_subtype_is_parsed():
    """An ``application/*+json`` body is parsed as JSON."""
    assert json_body(PredictRequest, b'{"inputs": [[[1]]]}', "application/vnd.api+json").inputs == [[[1]]]


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"inputs": "\xff\xfe"}'], ids=["deep", "not-utf8"])
def test_unparsable_body_is_malformed(body):
    """A body too deeply nested to parse, or not UTF-8, is a malformed request (400), not a fault."""
    with pytest.raises(MalformedRequest):
        json_body(PredictRequest, body, JSON)
