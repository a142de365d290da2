"""Sign-in with an API token (a form POST: the token never travels in a URL), sign-out, the console's root."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..deps import ServerDep
from .routing import ConsoleRoute
from .session import SESSION_COOKIE, SESSION_TTL_S, clear_cookie, set_cookie
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
async def logout(request: Request, _fields: Form) -> Response:
    response = redirect(f"{PREFIX}/login")
    clear_cookie(response, request, SESSION_COOKIE)
    return response
