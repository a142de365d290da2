"""Sign-in with an API token (a form POST: the token never travels in a URL), sign-out, the console's root."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import store
from ..deps import ServerDep
from ..runtime import Server
from .routing import ConsoleRoute
from .session import SESSION_COOKIE, SESSION_TTL_S, clear_cookie, cookie_digest, set_cookie
from .web import PREFIX, Form, SignedIn, browser, keys, redirect, render

router = APIRouter(route_class=ConsoleRoute)

BAD_TOKEN = (
    "This token is not valid (mistyped, or revoked): ask your server's admin for one ('lightly-server create-token')."
)


@router.get(PREFIX)
async def root(_viewer: SignedIn) -> Response:
    return redirect(f"{PREFIX}/runs")


@router.get(f"{PREFIX}/login")
async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"error": None, "signed_out": True}, browser(request))


@router.post(f"{PREFIX}/login")
async def login(request: Request, server: ServerDep, fields: Form) -> Response:
    token = fields.get("token", "").strip()
    user_id = await run_in_threadpool(server.tokens.user_for, token) if token else None
    if user_id is None:
        return render(request, "login.html", {"error": BAD_TOKEN, "signed_out": True}, browser(request), 401)
    response = redirect(f"{PREFIX}/runs")
    set_cookie(response, request, SESSION_COOKIE, keys(request).seal(token), max_age=SESSION_TTL_S)
    return response


@router.post(f"{PREFIX}/logout")
async def logout(request: Request, server: ServerDep, _fields: Form) -> Response:
    """Sign out: the cookie is cleared in this browser and refused from now on wherever a copy of it is."""
    cookie = request.cookies.get(SESSION_COOKIE)
    expires_at = keys(request).expires_at(cookie) if cookie else None
    if cookie and expires_at is not None:
        await run_in_threadpool(_record_signout, server, cookie_digest(cookie), expires_at)
    response = redirect(f"{PREFIX}/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


def _record_signout(server: Server, digest: str, expires_at: int) -> None:
    with server.db.write() as conn:
        store.signouts.record_signout(conn, digest, expires_at, int(time.time()))
