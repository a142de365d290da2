"""Workers: the user's registered workers with labels, state, version, last seen and the run each holds;
for a worker the operator registered, its LightlyWorker and replica (read from the worker's name, which the
operator makes with ``lightly_protocol.names``)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from lightly_protocol.names import PREFIX as K8S_PREFIX
from lightly_protocol.names import parse_k8s_worker_name
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import store
from ..deps import ServerDep
from ..runtime import Server
from .routing import ConsoleRoute
from .web import PREFIX, SignedIn, render

router = APIRouter(route_class=ConsoleRoute)


def operator_ref(worker_name: str) -> dict[str, Any] | None:
    """Cluster, namespace, LightlyWorker (None when the operator shortened a long name) and replica index of
    a name the operator made (``k8s_<cluster>_<namespace>_<name>_<index>``), else None. Its pod is named
    ``<name>-<index>-<spec hash>``."""
    if not worker_name.startswith(f"{K8S_PREFIX}_"):
        return None
    cluster = worker_name[len(K8S_PREFIX) + 1 :].split("_", 1)[0]
    parsed = parse_k8s_worker_name(worker_name, cluster)
    if parsed is None:
        return None
    pod = f"{parsed.name}-{parsed.index}-…" if parsed.name else None
    return {
        "cluster": parsed.cluster,
        "namespace": parsed.namespace,
        "name": parsed.name,
        "index": parsed.index,
        "pod": pod,
    }


def _context(server: Server, user_id: str) -> dict[str, Any]:
    with server.db.read() as conn:
        rows = store.list_workers(conn, user_id)
        held = store.browse.held_runs(conn, user_id)
    workers = [
        {"row": w, "labels": json.loads(w.labels), "run": held.get(w.id), "k8s": operator_ref(w.name)} for w in rows
    ]
    return {"workers": workers}


@router.get(f"{PREFIX}/workers")
async def workers_page(request: Request, viewer: SignedIn, server: ServerDep) -> Response:
    context = await run_in_threadpool(_context, server, viewer.user_id)
    return render(request, "workers.html", context, viewer.browser)
