"""Workers: the user's registered workers with labels, state, version, last seen and the run each holds."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import store
from ..deps import ServerDep
from ..runtime import Server
from .routing import ConsoleRoute
from .web import PREFIX, SignedIn, render

router = APIRouter(route_class=ConsoleRoute)


def _context(server: Server, user_id: str) -> dict[str, Any]:
    with server.db.read() as conn:
        rows = store.list_workers(conn, user_id)
        held = store.browse.held_runs(conn, user_id)
    workers = [{"row": w, "labels": json.loads(w.labels), "run": held.get(w.id)} for w in rows]
    return {"workers": workers}


@router.get(f"{PREFIX}/workers")
async def workers_page(request: Request, viewer: SignedIn, server: ServerDep) -> Response:
    context = await run_in_threadpool(_context, server, viewer.user_id)
    return render(request, "workers.html", context, viewer.browser)
