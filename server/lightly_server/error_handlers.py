"""Exception handlers: every error is answered as Lightly's ``{"code": ..., "error": ...}`` body."""

from __future__ import annotations

import logging
import reprlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import FILENAME_PATTERN
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import ApiError

log = logging.getLogger("lightly_server")


def _shown(value: Any) -> str:
    """A short repr of an offending input (never the whole of a huge one)."""
    if isinstance(value, str):
        return repr(value[:100]) + (f"... ({len(value)} characters)" if len(value) > 100 else "")

    return reprlib.repr(value)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{loc}: unknown key; remove it (only the protocol's documented keys are accepted)")
        elif err.get("type") == "missing":
            parts.append(f"{loc}: required")
        elif err.get("type") == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == FILENAME_PATTERN:
            parts.append(
                f"{loc}: filenames must not contain control characters or line breaks (newline, tab, NUL, "
                f"U+2028, ...); got {_shown(err.get('input'))}"[:400]
            )
        elif err.get("type") == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern")
            parts.append(f"{loc}: must match the protocol's pattern {pattern} (got {_shown(err.get('input'))})"[:400])
        elif err.get("type") in ("string_too_long", "too_long"):
            parts.append(f"{loc}: {err.get('msg')} (see docs/server.md, 'Limits')"[:300])
        else:
            parts.append(f"{loc}: {err.get('msg')} (got {_shown(err.get('input'))})"[:300])
    return "; ".join(parts) or "invalid request"


async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse({"code": exc.code, "error": exc.message}, status_code=exc.status)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    code = (
        ApiErrorCode.MALFORMED_REQUEST
        if any(e.get("type") == "json_invalid" for e in exc.errors())
        else ApiErrorCode.BAD_REQUEST
    )
    return JSONResponse({"code": code, "error": _validation_message(exc)}, status_code=400)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {
        404: ApiErrorCode.NOT_FOUND,
        405: ApiErrorCode.BAD_REQUEST,
        413: ApiErrorCode.PAYLOAD_TOO_LARGE,
    }.get(exc.status_code, "BAD_REQUEST")
    msg = f"no such endpoint: {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
    return JSONResponse({"code": code, "error": msg}, status_code=exc.status_code)


async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
    # a last line of defence: the wire models bound every field to its column, so this means a gap
    log.warning("refused a value the database cannot store: %s", str(exc.orig).splitlines()[0])
    return JSONResponse(
        {"code": ApiErrorCode.BAD_REQUEST, "error": "a value is too long or malformed for this server to store"},
        status_code=400,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, _data_error)  # type: ignore[arg-type]
