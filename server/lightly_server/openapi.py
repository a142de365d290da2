"""The OpenAPI document as this server answers: errors are Lightly's ``{"code", "error"}`` bodies.

FastAPI documents a 422 ``HTTPValidationError`` for every operation with parameters; this server
answers bad input with 400 and the protocol's error body instead (``app.py``'s handlers). Every
operation documents 400 where it has input, and every other error status through ``default``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

API_ERROR_SCHEMA = {
    "title": "ApiErrorResponse",
    "type": "object",
    "description": "Lightly's error body: code (an ApiErrorCode) and a message that says what to fix",
    "properties": {
        "code": {"type": "string", "title": "Code"},
        "error": {"type": "string", "title": "Error"},
        "requestId": {"type": "string", "title": "Requestid"},
    },
    "required": ["code", "error"],
}
_ERROR_REF = {"$ref": "#/components/schemas/ApiErrorResponse"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_REF}}
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")

#: operations whose success is not JSON
_NON_JSON_SUCCESS = {
    ("/metrics", "get"): ("200", "text/plain", {"type": "string"}),
    ("/v1/artifacts/{artifactId}/download", "get"): (
        "200",
        "application/octet-stream",
        {"type": "string", "format": "binary"},
    ),
}


def fix_document(doc: dict[str, Any]) -> dict[str, Any]:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["ApiErrorResponse"] = API_ERROR_SCHEMA
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            had_validation = responses.pop("422", None) is not None
            if had_validation or op.get("parameters") or op.get("requestBody"):
                responses["400"] = {
                    "description": "Bad request: malformed JSON, unknown keys, wrong types, values outside "
                    "their pattern or limit",
                    "content": _ERROR_CONTENT,
                }
            responses["default"] = {
                "description": "Error (401 token, 403 signature, 404 unknown object, 409 state, 413 too large)",
                "content": _ERROR_CONTENT,
            }
            special = _NON_JSON_SUCCESS.get((path, method))
            if special:
                status, media, schema = special
                responses[status] = {"description": "Successful Response", "content": {media: {"schema": schema}}}
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = fix_document(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the document
