"""Datasets: create, list, find by name, sample filenames."""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.models import CreateEntityResponse, DatasetCreateRequest, DatasetData
from lightly_protocol.paths import template

from .. import store
from ..deps import DatasetId, PageOffset, PageSize, ServerDep, User
from ..errors import bad_request
from ..responses import created as _created
from ..responses import json_response as _json
from ..responses import no_content as _no_content
from ..shard_results import delete_results

router = APIRouter()


@router.post(paths.DATASETS, status_code=201, response_model=CreateEntityResponse, tags=["datasets"])
def create_dataset(body: DatasetCreateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _created(store.create_dataset(tx.conn, user_id, body))


@router.get(paths.DATASETS, response_model=list[DatasetData], tags=["datasets"])
def list_datasets(
    user_id: User,
    server: ServerDep,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
    shared: bool = False,
    get_assets_of_team: Annotated[bool, Query(alias="getAssetsOfTeam")] = False,
) -> JSONResponse:
    if shared:
        return _json([])  # single-tenant: nothing is shared with this user
    with server.db.read() as conn:
        return _json(store.datasets_data(conn, store.list_datasets(conn, user_id, page_size, page_offset)))


@router.get(template(paths.datasets_by_name, "datasetName"), response_model=list[DatasetData], tags=["datasets"])
def datasets_by_name(
    dataset_name: Annotated[str, Path(alias="datasetName")],
    user_id: User,
    server: ServerDep,
    exact: bool = False,
    shared: bool = False,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
) -> JSONResponse:
    if shared:
        return _json([])
    with server.db.read() as conn:
        rows = store.list_datasets(conn, user_id, page_size, page_offset, name=dataset_name, exact=exact)
        return _json(store.datasets_data(conn, rows))


@router.get(template(paths.dataset, "datasetId"), response_model=DatasetData, tags=["datasets"])
def get_dataset(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.dataset_data(conn, store.get_dataset(conn, user_id, dataset_id)))


@router.delete(template(paths.dataset, "datasetId"), status_code=204, tags=["datasets"])
def delete_dataset(dataset_id: DatasetId, user_id: User, server: ServerDep) -> Response:
    """The dataset with its tags, samples, datasources, embeddings and scheduled runs; 409 while a worker
    processes a run of it. The user's runs stay, without the dataset reference (docs/server.md)."""
    with server.write() as tx:
        deleted = store.delete_dataset(tx.conn, user_id, dataset_id)
        tx.schedule_changed = True
    for eid in deleted.embedding_ids:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(server.artifacts.path(eid))
    delete_results(server.artifacts.root, deleted.shard_ids)
    return _no_content()


@router.get(template(paths.dataset_mappings, "datasetId"), response_model=list[str], tags=["mappings"])
def sample_mappings(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    field: Annotated[str, Query()] = "fileName",
    page_size: PageSize = None,
    page_offset: PageOffset = None,
) -> JSONResponse:
    if field not in ("fileName", "_id"):
        raise bad_request(f"mappings field {field!r} is not supported; use field=fileName or field=_id")
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
        rows = store.page_of(store.dataset_samples(conn, dataset_id), page_size, page_offset)
    if field == "_id":
        return JSONResponse([store.sample_id_of(r.idx) for r in rows])
    return JSONResponse([r.file_name for r in rows])
