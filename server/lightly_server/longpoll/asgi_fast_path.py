"""The idle fleet's long polls without FastAPI's request machinery (pure ASGI, outermost middleware).

An idle fleet is thousands of long polls that end after ``waitSeconds`` and come straight back: at
10,000 workers with ``waitSeconds`` 55 that is ~180 requests a second doing nothing. Through FastAPI a
poll cost ~1.2 ms of server CPU (ten ASGI layers, dependency and parameter solving, the response
classes), all of it around a wait that itself costs almost nothing (docs/benchmarks.md).

This middleware answers exactly the steady-state shape of the two polls:

* ``GET /v1/ext/workers/{workerId}/work?token=T&waitSeconds=W``
* ``GET /v1/docker/worker/{workerId}/schedule?token=T[&state=OPEN][&waitSeconds=W]``

when every query key is one of these (each at most once), ``W`` is a plain decimal number, the token is
in this process's token cache and the worker's labels are known to this process (it polled here
before). The answer comes from the same functions the routes call (``answers``), so it is the same
answer. Everything else goes to FastAPI unchanged: a worker's first poll, an unknown or expired token,
any other parameter or spelling, every other request. Errors raised while answering are rendered by
the application's own exception handlers; the request latency is recorded under the route's template
like any other request (``middleware.RequestMetrics``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from time import perf_counter
from typing import Any
from urllib.parse import parse_qsl

from lightly_protocol import paths
from lightly_protocol.enums import ScheduledState
from lightly_protocol.models import OID_PATTERN
from lightly_protocol.paths import template
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from ..ids import now_ms
from ..runtime import Server
from .answers import queue_poll, work_poll

WORK_TEMPLATE = template(paths.worker_work, "workerId")
QUEUE_TEMPLATE = template(paths.worker_schedule, "workerId")
_OID = OID_PATTERN.removeprefix("^").removesuffix("$")


def _route_regex(route: str) -> re.Pattern[str]:
    head, _, tail = route.partition("{workerId}")
    return re.compile(f"^{re.escape(head)}({_OID}){re.escape(tail)}$")


WORK_PATH = _route_regex(WORK_TEMPLATE)
QUEUE_PATH = _route_regex(QUEUE_TEMPLATE)
#: what the fast path accepts as ``waitSeconds``; anything else (``1e3``, ``inf``, ``-1``) goes to FastAPI
WAIT_VALUE = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")
WORK_KEYS = frozenset({"token", "waitSeconds"})
QUEUE_KEYS = frozenset({"token", "state", "waitSeconds"})


def parse_query(query_string: bytes, allowed: frozenset[str]) -> dict[str, str] | None:
    """The query as a dict when it has only ``allowed`` keys, each at most once; None otherwise."""
    if len(query_string) > 512:
        return None
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, max_num_fields=len(allowed))
    except ValueError:  # more fields than allowed
        return None
    found = dict(pairs)
    if len(found) != len(pairs) or not found.keys() <= allowed:
        return None
    return found


class FastPolls:
    """Pure ASGI middleware; install it outermost (``app.add_middleware`` last)."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app = app
        self.server = server
        self.histogram = server.metrics.http_latency
        self.answered = {
            WORK_TEMPLATE: server.metrics.fast_polls.labels("work"),
            QUEUE_TEMPLATE: server.metrics.fast_polls.labels("queue"),
        }
        self._routes: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            start = perf_counter()
            path: str = scope["path"]
            if path.endswith("/work"):
                match, keys, route = WORK_PATH.match(path), WORK_KEYS, WORK_TEMPLATE
            elif path.endswith("/schedule"):
                match, keys, route = QUEUE_PATH.match(path), QUEUE_KEYS, QUEUE_TEMPLATE
            else:
                match = None
            if match is not None:
                answer = self._answer(match.group(1), scope.get("query_string", b""), keys, route)
                if answer is not None:
                    await self._respond(scope, receive, send, route, answer, start)
                    return
        await self.app(scope, receive, send)

    def _answer(self, worker_id: str, query_string: bytes, keys: frozenset[str], route: str) -> Awaitable[Any] | None:
        """The coroutine that answers this poll, or None when FastAPI must take the request."""
        query = parse_query(query_string, keys)
        if query is None or not query.get("token"):
            return None
        raw_wait = query.get("waitSeconds", "0")
        state = query.get("state")
        if not WAIT_VALUE.match(raw_wait) or state not in (None, ScheduledState.OPEN.value):
            return None
        server = self.server
        hit, user_id = server.tokens.cached(query["token"])
        if not hit or user_id is None:
            return None  # FastAPI reads the token (and caches it) or answers 401
        labels = server.known_polling_labels(user_id, worker_id, now_ms())  # renews the lease
        if labels is None:
            return None  # FastAPI reads the worker (404 for an unknown one) and remembers it
        wait = float(raw_wait)
        token = query["token"]  # checked again after the wait (revoked meanwhile: 401)
        if route == WORK_TEMPLATE:
            return work_poll(server, user_id, worker_id, labels, wait, token)
        return queue_poll(server, user_id, [ScheduledState.OPEN] if state else [], labels, False, wait, token)

    async def _respond(
        self, scope: Scope, receive: Receive, send: Send, route: str, answer: Awaitable[Any], start: float
    ) -> None:
        status = 200
        scope["route"] = self._route(scope, route)
        try:
            try:
                response = JSONResponse(await answer)  # the routes' own response class: the same bytes
                self.answered[route].inc()
            except Exception as exc:
                response = await self._error_response(scope, receive, exc)
                status = response.status_code
            await response(scope, receive, send)
        finally:
            self.histogram.labels("GET", route, str(status)).observe(perf_counter() - start)

    async def _error_response(self, scope: Scope, receive: Receive, exc: Exception) -> Any:
        """What the application's exception handlers make of ``exc``; re-raised when none handles it
        (Starlette's ServerErrorMiddleware, outside this one, answers 500 and logs it then)."""
        app = scope.get("app")
        handlers: dict[Any, Any] = getattr(app, "exception_handlers", {}) or {}
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return await handler(Request(scope, receive), exc)
        raise exc

    def _route(self, scope: Scope, route: str) -> Any:
        """The application's route object for the template (``RequestMetrics`` and logs read ``scope['route']``)."""
        found = self._routes.get(route)
        if found is None:
            app = scope.get("app")
            for r in getattr(app, "routes", ()):
                if getattr(r, "path", None) == route and "GET" in (getattr(r, "methods", None) or ()):
                    found = self._routes[route] = r
                    break
        return found
