"""A dataset's samples by id: their read URLs (``download_dataset``) and the signed URL behind them."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import DatasourcePurpose
from lightly_protocol.paths import template
from starlette.concurrency import run_in_threadpool

from .. import read_urls, store
from ..deps import DatasetId, SampleId, ServerDep, User, public_base_url
from ..errors import bad_request
from . import bucket_access

router = APIRouter()


@router.get(template(paths.sample_read_url, "datasetId", "sampleId"), tags=["samples"])
def sample_read_url(
    dataset_id: DatasetId,
    sample_id: SampleId,
    user_id: User,
    server: ServerDep,
    request: Request,
    type: Annotated[str, Query(description="full (the image itself)")] = "full",
) -> str:
    if type != "full":
        raise bad_request(f"type {type!r} is not served here (no thumbnails are made); use type=full")
    with server.db.read() as conn:
        sample = store.get_sample(conn, user_id, dataset_id, sample_id)
        datasource = store.resolve_datasource(store.get_datasources(conn, dataset_id), DatasourcePurpose.INPUT)
    base = public_base_url(server, request)
    del sample  # looked up for its 404 (another user's or a missing sample)
    return read_urls.read_url(server.artifacts, base, dataset_id, datasource, sample_id)


@router.get(template(paths.sample_read_redirect, "datasetId", "sampleId"), tags=["samples"])
async def sample_read_redirect(
    dataset_id: DatasetId, sample_id: SampleId, expires: int, signature: str, server: ServerDep
) -> Response:
    """The sample's bytes (LOCAL datasource, read under ``--local-datasource-root``), or a redirect to the
    bucket's presigned URL."""
    read_urls.verify(server.artifacts, dataset_id, sample_id, expires, signature)

    def locate() -> Response:
        with server.db.read() as conn:
            sample = store.find_sample(conn, dataset_id, sample_id)
            by_purpose = store.get_datasources(conn, dataset_id)
        datasource = store.resolve_datasource(by_purpose, DatasourcePurpose.INPUT)
        if datasource is None:
            raise read_urls.no_datasource(dataset_id)
        if datasource.get("type") != "LOCAL":
            ttl = max(1, expires - int(time.time()))
            url = bucket_access.presigned_read(server, datasource, sample.file_name, ttl)
            return RedirectResponse(url, status_code=307)
        path, media_type = read_urls.local_file(server.settings.local_datasource_root, datasource, sample.file_name)
        return FileResponse(path, media_type=media_type)

    return await run_in_threadpool(locate)
