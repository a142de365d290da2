"""The answers routes give: wire models as JSON (camelCase), a created id, no content."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from lightly_protocol.models import CreateEntityResponse


def json_response(model_or_list: Any, status: int = 200) -> JSONResponse:
    """A wire model, or a list of them, in its wire form."""
    content = [m.wire() for m in model_or_list] if isinstance(model_or_list, list) else model_or_list.wire()
    return JSONResponse(content, status_code=status)


def created(ident: str) -> JSONResponse:
    return json_response(CreateEntityResponse(id=ident), 201)


def no_content() -> Response:
    return Response(status_code=204)
