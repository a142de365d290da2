"""Scheduled runs: listing and long polls (both poll paths), the worker's claim and hand-back, a dataset's schedule."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ScheduledState
from lightly_protocol.models import (
    CreateEntityResponse,
    ScheduledRunCreateRequest,
    ScheduledRunData,
    ScheduledRunUpdateRequest,
    WorkerConfigData,
)
from lightly_protocol.paths import template

from .. import store
from ..deps import DatasetId, ScheduledId, ServerDep, User, WorkerId
from ..errors import ApiError
from ..longpoll.answers import queue_poll
from ..responses import created as _created
from ..responses import json_response as _json
from ..responses import no_content as _no_content
from ..storage import BUCKET_TYPES
from .bucket_access import check_run_access

router = APIRouter()


@router.get(paths.SCHEDULE, response_model=list[ScheduledRunData], tags=["docker"])
async def schedule_by_labels(
    request: Request,
    user_id: User,
    server: ServerDep,
    state: Annotated[ScheduledState | None, Query()] = None,
    labels: Annotated[list[str] | None, Query()] = None,
    version: Annotated[str | None, Query(description="accepted; runs are not filtered by version")] = None,
    include_unlockable: Annotated[bool, Query(alias="includeUnlockableRuns")] = False,
    wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, description="long-poll extension")] = 0,
) -> JSONResponse:
    states = [state] if state else []
    token = request.query_params.get("token")  # checked again after a long wait (revoked meanwhile: 401)
    return JSONResponse(
        await queue_poll(server, user_id, states, set(labels or []), include_unlockable, wait_seconds, token)
    )


@router.get(template(paths.worker_schedule, "workerId"), response_model=list[ScheduledRunData], tags=["docker"])
async def schedule_for_worker(
    request: Request,
    worker_id: WorkerId,
    user_id: User,
    server: ServerDep,
    state: Annotated[ScheduledState | None, Query()] = None,
    wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, description="long-poll extension")] = 0,
) -> JSONResponse:
    """The steady state of an idle fleet's poll is answered by ``fast_polls`` before it gets here."""
    # (the docstring is the OpenAPI description, kept as published: ``fast_polls`` is longpoll/asgi_fast_path.py)
    labels = await server.polling_worker_labels(user_id, worker_id)  # renews the worker's lease
    token = request.query_params.get("token")  # checked again after a long wait (revoked meanwhile: 401)
    return JSONResponse(await queue_poll(server, user_id, [state] if state else [], labels, False, wait_seconds, token))


@router.put(
    template(paths.scheduled_run, "datasetId", "workerId", "scheduledId"),
    status_code=204,
    tags=["docker"],
)
def update_scheduled_by_worker(
    dataset_id: DatasetId,
    worker_id: WorkerId,
    scheduled_id: ScheduledId,
    body: ScheduledRunUpdateRequest,
    user_id: User,
    server: ServerDep,
) -> Response:
    try:
        # SQLite has one writer: a read answers most losing claims without the write lock. PostgreSQL locks
        # rows, so the claim's own transaction decides at once (one transaction less on the dispatch path)
        if body.state == ScheduledState.LOCKED and body.priority is None and body.runs_on is None and server.db.sqlite:
            with server.db.read() as conn:
                if not store.claim_precheck(conn, user_id, worker_id, scheduled_id):
                    return _no_content()
        with server.write() as tx:
            store.update_scheduled_by_worker(tx.conn, user_id, dataset_id, worker_id, scheduled_id, body)
            tx.schedule_changed = body.state != ScheduledState.LOCKED
    except ApiError as exc:
        if body.state == ScheduledState.LOCKED:
            server.metrics.claims.labels("conflict" if exc.status == 409 else "error").inc()
            server.broker.release(scheduled_id)  # still OPEN (e.g. its dataset was locked)? next waiter
        raise
    if body.state == ScheduledState.LOCKED:
        server.metrics.claims.labels("locked").inc()
    return _no_content()


@router.post(
    template(paths.dataset_schedule, "datasetId"),
    status_code=201,
    response_model=CreateEntityResponse,
    tags=["docker"],
)
def schedule_run(
    dataset_id: DatasetId,
    body: ScheduledRunCreateRequest,
    user_id: User,
    server: ServerDep,
    disable_validation: Annotated[bool, Query(alias="disableConfigValidation")] = False,
) -> JSONResponse:
    needs_check: Any = _needs_access_check
    while True:
        try:
            with server.write() as tx:
                sid = store.create_scheduled(
                    tx.conn,
                    user_id,
                    dataset_id,
                    body,
                    validate=not disable_validation,
                    notify_channel=tx.notify_inline(),
                    needs_check=needs_check,
                )
            return _created(sid)
        except store.AccessCheckNeeded as need:  # a bucket: checked outside the write transaction, then again
            check_run_access(server, need.datasource)
            needs_check = None


def _needs_access_check(cfg: WorkerConfigData, datasource: dict[str, Any]) -> bool:
    """A run on a bucket datasource that cannot be listed or read is refused now (400, the provider's message),
    not at pickup; ``worker_config={'datasource': {'bypass_verify': True}}`` skips the check (as Lightly's)."""
    docker = cfg.config.docker
    if datasource.get("type") not in BUCKET_TYPES:
        return False
    return not (docker is not None and docker.datasource is not None and docker.datasource.bypass_verify)


@router.get(
    template(paths.dataset_schedule, "datasetId"),
    response_model=list[ScheduledRunData],
    tags=["docker"],
)
def scheduled_for_dataset(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    state: Annotated[ScheduledState | None, Query()] = None,
    states: Annotated[list[ScheduledState] | None, Query()] = None,
) -> JSONResponse:
    wanted = ([state] if state else []) + list(states or [])
    with server.db.read() as conn:
        rows = store.list_scheduled_for_dataset(conn, user_id, dataset_id, wanted)
    return _json([store.scheduled_data(r) for r in rows])


@router.put(template(paths.dataset_scheduled_run, "datasetId", "scheduledId"), status_code=204, tags=["docker"])
def cancel_scheduled(
    dataset_id: DatasetId,
    scheduled_id: ScheduledId,
    user_id: User,
    server: ServerDep,
) -> Response:
    with server.write() as tx:
        store.cancel_scheduled(tx.conn, user_id, dataset_id, scheduled_id)
        tx.schedule_changed = True
    return _no_content()
