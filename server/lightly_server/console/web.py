"""What every console page shares: the signed-in viewer, the CSRF check of forms, rendering a template."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from fastapi import Path as PathParam
from jinja2 import Environment, FileSystemLoader, select_autoescape
from lightly_protocol.models import OID_PATTERN
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response

from .. import store
from ..deps import ServerDep
from ..runtime import Server
from .session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    SessionKeys,
    cookie_digest,
    new_browser_secret,
    set_cookie,
)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"


class SignInNeeded(Exception):
    """No valid session: the page answers with the sign-in page's address."""


class CsrfRefused(Exception):
    """A POST without the form's CSRF token (or with another browser's)."""


def keys(request: Request) -> SessionKeys:
    found: SessionKeys = request.app.state.console_keys
    return found


#: a path parameter holding an object id (run, dataset, scheduled run, artifact, tag): a malformed one is a 422
ObjectId = Annotated[str, PathParam(pattern=OID_PATTERN)]


@dataclass(frozen=True)
class Browser:
    """The browser's CSRF secret (from its cookie, or new: then the page sets the cookie)."""

    secret: str
    new: bool


def browser(request: Request) -> Browser:
    secret = request.cookies.get(CSRF_COOKIE)
    if secret and secret.isascii() and 20 <= len(secret) <= 100:
        return Browser(secret, False)
    return Browser(new_browser_secret(), True)


@dataclass(frozen=True)
class Viewer:
    """The signed-in user and this browser's CSRF secret."""

    user_id: str
    browser: Browser


async def viewer(request: Request, server: ServerDep) -> Viewer:
    """The user whose token the session cookie holds, checked exactly as the API checks a token."""
    cookie = request.cookies.get(SESSION_COOKIE)
    token = keys(request).open(cookie)
    if token is None or cookie is None:
        raise SignInNeeded()
    if await run_in_threadpool(_signed_out, server, cookie):  # a copy of a cookie signed out since
        raise SignInNeeded()
    hit, user_id = server.tokens.cached(token)
    if not hit:
        user_id = await run_in_threadpool(server.tokens.user_for, token)
    if user_id is None:  # revoked since the sign-in
        raise SignInNeeded()
    return Viewer(user_id, browser(request))


def _signed_out(server: Server, cookie: str) -> bool:
    with server.db.read() as conn:
        return store.signouts.is_signed_out(conn, cookie_digest(cookie))


SignedIn = Annotated[Viewer, Depends(viewer)]


async def form(request: Request) -> dict[str, str]:
    """The POSTed form (application/x-www-form-urlencoded), after its CSRF token was checked."""
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = dict(parse_qsl(body, keep_blank_values=True))
    if not keys(request).csrf_ok(request.cookies.get(CSRF_COOKIE), fields.get(CSRF_FIELD)):
        raise CsrfRefused()
    return fields


Form = Annotated[dict[str, str], Depends(form)]


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ms: int | None) -> str:
    if ms is None or ms < 0:
        return "-"
    s = ms // 1000
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _labels(stored: str) -> str:
    """A stored JSON list of labels as ``a, b`` (``any worker`` when empty)."""
    labels = json.loads(stored)
    return ", ".join(str(x) for x in labels) if labels else "any worker"


ENV = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), auto_reload=False)
ENV.filters["when"] = _when
ENV.filters["duration"] = _duration
ENV.filters["labels"] = _labels
ENV.globals["PREFIX"] = PREFIX
ENV.globals["CSRF_FIELD"] = CSRF_FIELD


def render(
    request: Request, template: str, context: dict[str, Any], browser_: Browser, status: int = 200
) -> HTMLResponse:
    """The page ``template`` with ``context``, the form token of this browser (its cookie set when new)."""
    html = ENV.get_template(template).render(
        **context, csrf_token=keys(request).csrf_token(browser_.secret), path=request.url.path
    )
    response = HTMLResponse(html, status_code=status)
    if browser_.new:
        set_cookie(response, request, CSRF_COOKIE, browser_.secret, max_age=None)
    return response


def redirect(location: str) -> Response:
    """303 See Other to a console path (after a POST, the browser GETs it)."""
    return Response(status_code=303, headers={"Location": location})
