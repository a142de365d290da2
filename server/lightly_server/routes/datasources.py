"""A dataset's datasources (credentials sealed at rest, redacted in answers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import DatasourceConfig
from lightly_protocol.paths import template
from lightly_protocol.validation import local_path_problem

from .. import crypto, storage, store
from ..deps import DatasetId, ServerDep, User
from ..errors import ApiError
from ..responses import no_content as _no_content

router = APIRouter()


@router.put(template(paths.datasource, "datasetId"), status_code=204, tags=["datasources"])
def put_datasource(
    dataset_id: DatasetId,
    body: Annotated[DatasourceConfig, Body()],
    user_id: User,
    server: ServerDep,
) -> Response:
    if body.type == "LOCAL":
        problem = local_path_problem(body.full_path)
        if problem:
            raise ApiError(400, ApiErrorCode.DATASET_DATASOURCE_INVALID, problem)
    elif body.type in storage.BUCKET_TYPES:
        try:
            storage.parse_location(body.type, body.full_path)
        except ValueError as exc:
            raise ApiError(400, ApiErrorCode.DATASET_DATASOURCE_INVALID, str(exc)) from None
    with server.write() as tx:
        store.get_dataset(tx.conn, user_id, dataset_id)
        previous = store.get_datasources(tx.conn, dataset_id).get(body.purpose)
        sealed = crypto.seal_datasource(server.keyring, body.wire(), previous)
        sealed.update(store.previous_processed_until(previous))
        store.put_datasource(tx.conn, user_id, dataset_id, sealed)
    return _no_content()


@router.get(template(paths.datasource, "datasetId"), response_model=DatasourceConfig, tags=["datasources"])
def get_datasource(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    purpose: Annotated[str | None, Query(pattern="^(INPUT|LIGHTLY|INPUT_OUTPUT)$")] = None,
) -> JSONResponse:
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
        config = store.resolve_datasource(store.get_datasources(conn, dataset_id), purpose)
    if config is None:
        raise ApiError(
            404,
            ApiErrorCode.DATASET_DATASOURCE_UNKNOWN,
            f"dataset {dataset_id} has no {purpose or ''} datasource yet; set one with PUT .../datasource",
        )
    return JSONResponse(crypto.redact_datasource(config))


@router.get(template(paths.datasources_all, "datasetId"), response_model=list[DatasourceConfig], tags=["datasources"])
def all_datasources(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
        return JSONResponse([crypto.redact_datasource(c) for c in store.get_datasources(conn, dataset_id).values()])
