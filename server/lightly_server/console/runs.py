"""Runs: the filtered, paged list (and the queue of scheduled runs), a run's page with its live part,
artifact downloads through the session, cancelling a scheduled run."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from lightly_protocol import paths
from lightly_protocol.enums import TERMINAL_RUN_STATES, ArtifactType, ScheduledState
from lightly_protocol.models import OID_PATTERN
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import store
from ..deps import ServerDep
from ..errors import ApiError, bad_request
from ..ids import now_ms
from ..routes import schedule as schedule_api
from ..runtime import Server
from .routing import ConsoleRoute
from .run_view import RUN_STATES, progress_percent, run_duration_ms, stage_timings
from .web import PREFIX, Form, ObjectId, SignedIn, redirect, render

router = APIRouter(route_class=ConsoleRoute)

PAGE = 50
LOG_TAIL = 200
OID = re.compile(OID_PATTERN)
REPORTS = (ArtifactType.REPORT_PDF, ArtifactType.REPORT_V2_JSON, ArtifactType.REPORT_JSON)


def _day_ms(name: str, value: str | None, end: bool) -> int | None:
    """A ``YYYY-MM-DD`` filter as ms since the epoch (UTC): that day's start, or with ``end`` the next day's."""
    if not value:
        return None
    try:
        day = dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise bad_request(f"{name} {value!r} is not a date: use YYYY-MM-DD") from None
    return int((day + dt.timedelta(days=1 if end else 0)).timestamp() * 1000)


def _filter(
    state: str | None, dataset: str | None, worker: str | None, since: str | None, until: str | None
) -> store.browse.RunFilter:
    if state and state not in RUN_STATES:
        raise bad_request(f"state {state!r} is not a run state: pick one of the list")
    for name, value in (("dataset", dataset), ("worker", worker)):
        if value and not OID.match(value):
            raise bad_request(f"{name} {value!r} is not an id (24 hex digits): pick one of the list")
    return store.browse.RunFilter(
        state or None, dataset or None, worker or None, _day_ms("since", since, False), _day_ms("until", until, True)
    )


def _runs_context(server: Server, user_id: str, where: store.browse.RunFilter, offset: int) -> dict[str, Any]:
    with server.db.read() as conn:
        rows, total = store.browse.filtered_runs(conn, user_id, where, PAGE, offset)
        datasets = store.list_datasets(conn, user_id, 1000, 0)
        workers = store.list_workers(conn, user_id)
        queued = store.browse.queued_scheduled(conn, user_id, 50)
    now = now_ms()
    runs = [
        {
            "row": r,
            "duration": run_duration_ms(r.state, r.created_at, r.last_modified_at, now),
            "pct": progress_percent(r.state),
        }
        for r in rows
    ]
    return {
        "runs": runs,
        "total": total,
        "offset": offset,
        "page": PAGE,
        "where": where,
        "states": RUN_STATES,
        "datasets": datasets,
        "workers": workers,
        "queued": queued,
    }


@router.get(f"{PREFIX}/runs")
async def runs_page(
    request: Request,
    viewer: SignedIn,
    server: ServerDep,
    state: str | None = None,
    dataset: str | None = None,
    worker: str | None = None,
    since: str | None = None,
    until: str | None = None,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    where = _filter(state, dataset, worker, since, until)
    context = await run_in_threadpool(_runs_context, server, viewer.user_id, where, offset)
    context["since"], context["until"] = since or "", until or ""
    return render(request, "runs.html", context, viewer.browser)


def _live_context(server: Server, user_id: str, run_id: str) -> dict[str, Any]:
    with server.db.read() as conn:
        run = store.get_run(conn, user_id, run_id)
        tail = store.browse.log_tail(conn, run_id, LOG_TAIL)
        entries = store.browse.log_states(conn, run_id)
    now = now_ms()
    return {
        "run": run,
        "ended": run.state in TERMINAL_RUN_STATES,
        "pct": progress_percent(run.state),
        "duration": run_duration_ms(run.state, run.created_at, run.last_modified_at, now),
        "stages": stage_timings(entries, run.state, run.last_modified_at, now),
        "logs": [json.loads(x.entry) for x in tail],
    }


def _run_context(server: Server, user_id: str, run_id: str) -> dict[str, Any]:
    context = _live_context(server, user_id, run_id)
    run = context["run"]
    with server.db.read() as conn:
        data = store.run_data(conn, run)
        dataset = store.get_dataset(conn, user_id, run.dataset_id) if run.dataset_id else None
        worker = next((w for w in store.list_workers(conn, user_id) if w.id == run.worker_id), None)
        scheduled = store.get_scheduled(conn, user_id, run.scheduled_id) if run.scheduled_id else None
        tags = store.tags_of_run(conn, run.id)
    context.update(
        artifacts=data.artifacts or [],
        reports=[a for a in data.artifacts or [] if a.type in REPORTS],
        dataset=dataset,
        worker=worker,
        scheduled=scheduled,
        cancelable=scheduled is not None and scheduled.state == ScheduledState.OPEN,
        tags=tags,
    )
    return context


@router.get(f"{PREFIX}/runs/{{run_id}}")
async def run_page(request: Request, viewer: SignedIn, server: ServerDep, run_id: ObjectId) -> Response:
    context = await run_in_threadpool(_run_context, server, viewer.user_id, run_id)
    return render(request, "run.html", context, viewer.browser)


@router.get(f"{PREFIX}/runs/{{run_id}}/live")
async def run_live(request: Request, viewer: SignedIn, server: ServerDep, run_id: ObjectId) -> Response:
    """The run page's live part (state, progress, stages, log tail), polled by htmx until the run ends."""
    context = await run_in_threadpool(_live_context, server, viewer.user_id, run_id)
    return render(request, "run_live.html", context, viewer.browser)


@router.get(f"{PREFIX}/runs/{{run_id}}/artifacts/{{artifact_id}}")
async def artifact(viewer: SignedIn, server: ServerDep, run_id: ObjectId, artifact_id: ObjectId) -> Response:
    """A download through the session: the owner is checked here, then the browser follows a short-lived
    signed URL of this server (never a token)."""

    def check() -> bool:
        with server.db.read() as conn:
            return bool(store.get_artifact(conn, viewer.user_id, run_id, artifact_id).uploaded)

    if not await run_in_threadpool(check):
        raise ApiError(404, "DOCKER_RUN_ARTIFACT_UNAVAILABLE", f"artifact {artifact_id} was never uploaded")
    return redirect(f"{paths.artifact_download(artifact_id)}?{server.artifacts.signed_query('read', artifact_id)}")


@router.post(f"{PREFIX}/datasets/{{dataset_id}}/scheduled/{{scheduled_id}}/cancel")
async def cancel(
    viewer: SignedIn,
    server: ServerDep,
    fields: Form,
    dataset_id: ObjectId,
    scheduled_id: ObjectId,
) -> Response:
    """Cancel a scheduled run that waits for a worker: the API's own cancel (OPEN only; else its 409)."""
    await run_in_threadpool(schedule_api.cancel_scheduled, dataset_id, scheduled_id, viewer.user_id, server)
    back = fields.get("next", "")
    return redirect(back if back.startswith(f"{PREFIX}/") and "//" not in back else f"{PREFIX}/runs")
