"""Runs: create, list, state updates, logs, the selection, the run's tags."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.models import (
    MAX_INT64,
    MAX_LOG_ENTRIES,
    CreateEntityResponse,
    LogCreateEntry,
    LogData,
    RunCreateRequest,
    RunData,
    RunSelectionRequest,
    RunUpdateRequest,
    TagData,
)
from lightly_protocol.paths import template

from .. import store
from ..deps import DatasetId, PageOffset, PageSize, RunId, ScheduledId, ServerDep, User
from ..ids import now_ms
from ..responses import created as _created
from ..responses import json_response as _json
from ..responses import no_content as _no_content

router = APIRouter()


@router.post(paths.RUNS, status_code=201, response_model=CreateEntityResponse, tags=["docker"])
def create_run(body: RunCreateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _created(store.create_run(tx.conn, user_id, body))


@router.get(paths.RUNS, response_model=list[RunData], tags=["docker"])
def list_runs(
    user_id: User,
    server: ServerDep,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
    show_archived: Annotated[bool, Query(alias="showArchived")] = True,
) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.runs_data(conn, store.list_runs(conn, user_id, page_size, page_offset, show_archived)))


@router.get(paths.RUNS_COUNT, tags=["docker"])
def count_runs(user_id: User, server: ServerDep) -> str:
    with server.db.read() as conn:
        return str(store.count_runs(conn, user_id))


@router.get(template(paths.runs_of_dataset, "datasetId"), response_model=list[RunData], tags=["docker"])
def runs_of_dataset(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
) -> JSONResponse:
    with server.db.read() as conn:
        rows = store.runs_of_dataset(conn, user_id, dataset_id, page_size, page_offset)
        return _json(store.runs_data(conn, rows))


@router.get(template(paths.run_of_scheduled, "scheduledId"), response_model=RunData, tags=["docker"])
def run_of_scheduled(scheduled_id: ScheduledId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.run_data(conn, store.run_for_scheduled(conn, user_id, scheduled_id)))


@router.get(template(paths.run, "runId"), response_model=RunData, tags=["docker"])
def get_run(run_id: RunId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.run_data(conn, store.get_run(conn, user_id, run_id)))


@router.put(template(paths.run, "runId"), status_code=204, tags=["docker"])
def update_run(
    run_id: RunId,
    body: RunUpdateRequest,
    user_id: User,
    server: ServerDep,
) -> Response:
    with server.write() as tx:
        before, terminal = store.update_run(tx.conn, user_id, run_id, body)
        # the run's dataset lock is gone: waiters are woken when that lets one of its OPEN runs go out
        ended_scheduled = terminal and before.scheduled_id is not None
        tx.schedule_changed = ended_scheduled and store.has_open_runs(tx.conn, before.scheduled_id)
    if terminal:
        server.metrics.run_duration.labels(body.state).observe(max(0.0, (now_ms() - before.created_at) / 1000))
    return _no_content()


@router.put(template(paths.run_logs, "runId"), status_code=204, tags=["docker"])
def put_logs(
    run_id: RunId,
    body: Annotated[list[LogCreateEntry], Body(max_length=MAX_LOG_ENTRIES)],
    user_id: User,
    server: ServerDep,
) -> Response:
    with server.write() as tx:
        store.append_logs(tx.conn, user_id, run_id, body)
    return _no_content()


@router.get(template(paths.run_logs, "runId"), response_model=LogData, tags=["docker"])
def get_logs(
    run_id: RunId,
    user_id: User,
    server: ServerDep,
    cursor: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.read_logs(conn, user_id, run_id, cursor))


@router.put(template(paths.run_selection, "runId"), status_code=204, tags=["extensions"])
def put_selection(
    run_id: RunId,
    body: RunSelectionRequest,
    user_id: User,
    server: ServerDep,
) -> Response:
    """Extension: the run's selected filenames; they become a dataset tag when the run COMPLETES."""
    with server.write() as tx:
        store.set_selection(tx.conn, user_id, run_id, body.filenames, body.tag_name)
    return _no_content()


@router.get(template(paths.run_tags, "runId"), response_model=list[TagData], tags=["docker"])
def run_tags(run_id: RunId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json([store.tag_data(r) for r in store.run_tags(conn, user_id, run_id)])
