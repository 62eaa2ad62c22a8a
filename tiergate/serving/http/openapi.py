"""Corrections to the OpenAPI schema FastAPI derives, so /docs and /openapi.json tell
clients what the gateway really sends and takes.

    document(app)
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from tiergate.serving.http.v2 import BINARY_HEADER, V2InferRequest


def document(app: FastAPI) -> None:
    """Two corrections to the OpenAPI schema FastAPI derives. Errors: FastAPI documents a 422
    with its own {"detail": [...]} body on every route with a parameter, but validation
    errors answer as ``ErrorBody`` and the routes that can have them declare it. And the v2
    infer route reads its body raw (it may carry binary tensor data after the JSON), so its
    JSON part, ``V2InferRequest``, is documented here."""
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
        v2 = V2InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(v2.pop("$defs", {}), V2InferRequest=v2)
        spec["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"] = {
            "required": True,
            "description": f"JSON; with the binary tensor data extension, this JSON is the first "
            f"{BINARY_HEADER} bytes and the tensors' raw bytes follow",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/V2InferRequest"}}},
        }
        return spec

    app.openapi = openapi
