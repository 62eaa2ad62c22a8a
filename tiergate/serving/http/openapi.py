"""Corrections to the OpenAPI schema FastAPI derives, so /docs and /openapi.json tell
clients what the gateway really sends and takes.

    document(app)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from tiergate.serving.http.v2 import BINARY_HEADER, V2InferRequest
from tiergate.serving.schemas import PredictRequest


def document(app: FastAPI) -> None:
    """Two corrections to the OpenAPI schema FastAPI derives. Errors: FastAPI documents a 422
    with its own {"detail": [...]} body on every route with a parameter, but validation
    errors answer as ``ErrorBody`` and the routes that can have them declare it. And the v2
    infer route reads its body raw (it may carry binary tensor data after the JSON), and
    /v1/predict reads its own (``direct``), so their bodies are documented here."""
    derive = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = derive()
        for item in spec["paths"].values():
            for operation in item.values():
                if operation["responses"].get("422", {}).get("description") == "Validation Error":
                    del operation["responses"]["422"]
        components = spec["components"]["schemas"]
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        binary = (
            f"JSON; with the binary tensor data extension, this JSON is the first {BINARY_HEADER} "
            "bytes and the tensors' raw bytes follow"
        )
        _body(spec, "/v2/models/{name}/infer", V2InferRequest, binary)
        _body(spec, "/v1/predict", PredictRequest, "JSON")
        return spec

    app.openapi = openapi


def _body(spec: dict[str, Any], path: str, model: type[BaseModel], description: str) -> None:
    """Document ``model`` as the JSON body of the POST route at ``path``, which reads it itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    spec["components"]["schemas"].update(schema.pop("$defs", {}), **{model.__name__: schema})
    spec["paths"][path]["post"]["requestBody"] = {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
    }
