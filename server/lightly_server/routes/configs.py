"""Worker configs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from lightly_protocol import paths
from lightly_protocol.models import CreateEntityResponse, WorkerConfigCreateRequest, WorkerConfigData
from lightly_protocol.paths import template

from .. import store
from ..deps import ConfigId, ServerDep, User
from ..responses import created as _created
from ..responses import json_response as _json

router = APIRouter()


@router.post(paths.CONFIGS, status_code=201, response_model=CreateEntityResponse, tags=["docker"])
def create_config(body: WorkerConfigCreateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _created(store.create_config(tx.conn, user_id, body.config, body.wire()))


@router.get(template(paths.config, "configId"), response_model=WorkerConfigData, tags=["docker"])
def get_config(config_id: ConfigId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.get_config(conn, user_id, config_id))
