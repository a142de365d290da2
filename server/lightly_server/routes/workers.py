"""Workers: register, list, state reports, deregister."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import WorkerState
from lightly_protocol.models import CreateEntityResponse, WorkerCreateRequest, WorkerData, WorkerUpdateRequest
from lightly_protocol.paths import template

from .. import store
from ..deps import WORKER_SESSION_PATTERN, ServerDep, User, WorkerId
from ..responses import created as _created
from ..responses import json_response as _json
from ..responses import no_content as _no_content

log = logging.getLogger("lightly_server")


router = APIRouter()


@router.post(paths.WORKERS, status_code=201, response_model=CreateEntityResponse, tags=["docker"])
def register_worker(body: WorkerCreateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _created(store.register_worker(tx.conn, user_id, body))


@router.get(paths.WORKERS, response_model=list[WorkerData], tags=["docker"])
def list_workers(user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json([store.worker_data(r) for r in store.list_workers(conn, user_id)])


@router.get(paths.DEFAULT_WORKER, response_model=WorkerData, tags=["docker"])
def default_worker(user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _json(store.worker_data(store.default_worker(tx.conn, user_id)))


@router.get(template(paths.worker, "workerId"), response_model=WorkerData, tags=["docker"])
def get_worker(worker_id: WorkerId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.worker_data(store.get_worker(conn, user_id, worker_id)))


@router.put(template(paths.worker, "workerId"), status_code=204, tags=["docker"])
def update_worker(
    worker_id: WorkerId,
    body: WorkerUpdateRequest,
    user_id: User,
    server: ServerDep,
    session: Annotated[
        str | None,
        Header(
            alias="X-Lightly-Worker-Session",
            pattern=WORKER_SESSION_PATTERN,
            description="extension: the reporting worker process's session id (ownership rule)",
        ),
    ] = None,
) -> Response:
    with server.write() as tx:
        reopened = store.update_worker_state(
            tx.conn, user_id, worker_id, body.state, body.docker_version, session, server.settings.max_attempts
        )
        tx.schedule_changed = bool(reopened)
    if body.state == WorkerState.OFFLINE:
        server.polling.forget([worker_id])  # a poll after its goodbye reads the row (and revives it) at once
    if reopened:
        server.metrics.runs_reopened.inc(len(reopened))
        log.warning("worker %s restarted; scheduled runs it held reopened: %s", worker_id, ", ".join(reopened))
    return _no_content()


@router.delete(template(paths.worker, "workerId"), status_code=204, tags=["docker"])
def delete_worker(worker_id: WorkerId, user_id: User, server: ServerDep) -> Response:
    with server.write() as tx:
        reopened = store.delete_worker(tx.conn, user_id, worker_id)
        tx.schedule_changed = bool(reopened)
    server.polling.forget([worker_id])
    return _no_content()
