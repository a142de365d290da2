"""Exception handlers: every error is answered as Lightly's ``{"code": ..., "error": ...}`` body."""

from __future__ import annotations

import logging
import reprlib
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import FILENAME_PATTERN
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
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
    return JSONResponse({"code": exc.code, "error": exc.message}, status_code=exc.status, headers=exc.headers or None)


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


#: seconds a client should wait before retrying a request the database could not serve
DB_RETRY_AFTER_S = 5
_TOO_MANY = ("53300",)  # too_many_connections: max_connections, a role's or a database's CONNECTION LIMIT
_CANNOT_CONNECT = ("57P01", "57P02", "57P03")  # admin/crash shutdown, cannot connect now (starting up)
_last_logged = [0.0]


def database_unavailable(exc: OperationalError | PoolTimeout) -> str | None:
    """What is wrong and what to do when ``exc`` means the database refused or lost its connections;
    None for any other error (a bad statement stays a server error)."""
    if isinstance(exc, PoolTimeout):
        return (
            f"every connection of this server's pool is busy ({_first_line(exc)}); retry, or add server "
            "replicas (within PostgreSQL's max_connections)"
        )
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or ""
    detail = _first_line(orig)
    if state in _TOO_MANY or "too many c" in detail:
        return (
            f"PostgreSQL refused a connection: too many connections ({detail}); retry, or raise PostgreSQL's "
            "max_connections (or the role's or database's CONNECTION LIMIT): each server process (a replica, or "
            "one of --processes) opens up to 62 (a pool of 20 plus 40 overflow, LISTEN, offer locks), so leave "
            "room for every process or run fewer"
        )
    if exc.connection_invalidated or state.startswith("08") or state in _CANNOT_CONNECT or "connect" in detail:
        return (
            f"cannot connect to the database ({detail}); retry, and if it lasts check that PostgreSQL runs "
            "and that the server's --database URL points at it"
        )
    return None


def _first_line(exc: BaseException | None) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


async def _database_error(request: Request, exc: OperationalError | PoolTimeout) -> JSONResponse:
    problem = database_unavailable(exc)
    if problem is None:
        raise exc  # not a connection problem: the plain 500 of any unexpected error (and its traceback)
    now = time.monotonic()
    if now - _last_logged[0] > 10:  # one line per 10 s while the database is away, not one per request
        _last_logged[0] = now
        log.warning("answering 503: database unavailable: %s", problem)
    return JSONResponse(
        {"code": ApiErrorCode.SERVICE_UNAVAILABLE, "error": f"database unavailable: {problem}"},
        status_code=503,
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]  # handles its class only
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]  # handles its class only
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]  # handles its class only
    app.add_exception_handler(DataError, _data_error)  # type: ignore[arg-type]  # handles its class only
    app.add_exception_handler(OperationalError, _database_error)  # type: ignore[arg-type]  # handles its class only
    app.add_exception_handler(PoolTimeout, _database_error)  # type: ignore[arg-type]  # handles its class only
