"""The embedding view of a run: its embeddings projected to 2-D (PCA, ``projection.py``) once per run, drawn on
a canvas by ``static/embedding.js`` with the selection highlighted; a click shows the nearest sample's image.

The projection is computed in a background thread the first time the page is opened (the page polls until it
is there) and kept as ``<artifacts dir>/console-projections/<run id>.json`` (shared by the replicas like the
artifacts themselves); it is served only through the session (``embedding.json``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, Response

from .. import store
from ..deps import ServerDep
from ..errors import ApiError
from ..runtime import Server
from .projection import (
    EMBEDDINGS_ARTIFACT,
    ProjectionError,
    kept_points,
    project_csv,
    projection_doc,
    write_atomically,
)
from .routing import ConsoleRoute
from .web import PREFIX, ObjectId, SignedIn, render

log = logging.getLogger("lightly_server")
router = APIRouter(route_class=ConsoleRoute)
CACHE_DIR = "console-projections"

_running: set[str] = set()
_lock = threading.Lock()


def cache_path(server: Server, run_id: str) -> Path:
    return server.artifacts.root / CACHE_DIR / f"{run_id}.json"


def error_path(server: Server, run_id: str) -> Path:
    return server.artifacts.root / CACHE_DIR / f"{run_id}.error"


def compute(server: Server, run_id: str, artifact_id: str) -> None:
    """Project the run's embeddings and keep the JSON (or why not, in ``<run id>.error``)."""
    try:
        names, xy = project_csv(server.artifacts.path(artifact_id))
        with server.db.read() as conn:
            run = store.browse.run_row(conn, run_id)
            selected: set[str] = set()
            for tag in store.tags_of_run(conn, run_id):
                selected.update(store.tag_filenames(conn, tag))
            samples = store.dataset_samples(conn, run.dataset_id) if run.dataset_id else []
        ids = {r.file_name: store.sample_id_of(r.idx) for r in samples}
        keep = kept_points(names, selected)
        doc = projection_doc(names, keep, xy[keep], selected, ids, f"{PREFIX}/datasets/{run.dataset_id}/samples/")
        write_atomically(cache_path(server, run_id), doc)
    except (ProjectionError, OSError) as exc:
        error_path(server, run_id).parent.mkdir(parents=True, exist_ok=True)
        error_path(server, run_id).write_text(f"{EMBEDDINGS_ARTIFACT}: {exc}")
    except Exception:
        log.exception("the embedding view of run %s could not be computed", run_id)
        error_path(server, run_id).write_text("the projection failed; the server's log has the details")
    finally:
        with _lock:
            _running.discard(run_id)


def _state(server: Server, user_id: str, run_id: str) -> dict[str, Any]:
    with server.db.read() as conn:
        run = store.get_run(conn, user_id, run_id)
        artifact = store.browse.run_artifact_named(conn, run_id, EMBEDDINGS_ARTIFACT)
    context: dict[str, Any] = {"run": run, "error": None, "ready": False, "missing": artifact is None}
    if cache_path(server, run_id).exists():
        context["ready"] = True
    elif error_path(server, run_id).exists():
        context["error"] = error_path(server, run_id).read_text()
    elif artifact is not None:
        with _lock:
            start = run_id not in _running
            _running.add(run_id)
        if start:
            threading.Thread(target=compute, args=(server, run_id, artifact.id), daemon=True).start()
    return context


@router.get(f"{PREFIX}/runs/{{run_id}}/embedding")
async def embedding_page(request: Request, viewer: SignedIn, server: ServerDep, run_id: ObjectId) -> Response:
    context = await run_in_threadpool(_state, server, viewer.user_id, run_id)
    return render(request, "embedding.html", context, viewer.browser)


@router.get(f"{PREFIX}/runs/{{run_id}}/embedding.json")
async def embedding_json(viewer: SignedIn, server: ServerDep, run_id: ObjectId) -> Response:
    def check() -> None:
        with server.db.read() as conn:
            store.get_run(conn, viewer.user_id, run_id)

    await run_in_threadpool(check)
    path = cache_path(server, run_id)
    if not path.exists():
        raise ApiError(404, "NOT_FOUND", f"the embedding view of run {run_id} is not computed yet; open its page")
    return FileResponse(path, media_type="application/json")
