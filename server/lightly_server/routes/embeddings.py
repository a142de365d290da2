"""A dataset's embeddings (Lightly's embeddings API): list, upload a CSV through a signed URL, download.

A completed run registers its embeddings as ``default_<time>`` (``store.embeddings``); a user's upload is
checked (``embedding_csv``) before it is stored and listed. The 2-d projection a client asks for after an
upload is acknowledged and not computed: no client call reads it back (docs/server.md, Embeddings).
"""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import DatasetEmbeddingData, Trigger2dEmbeddingJobRequest, WriteCSVUrlData
from lightly_protocol.paths import template
from starlette.concurrency import run_in_threadpool

from .. import store
from ..deps import DatasetId, EmbeddingId, ServerDep, User, public_base_url
from ..embedding_csv import EmbeddingCsvError, check_csv
from ..errors import ApiError, bad_request, not_found
from ..responses import json_response as _json
from ..responses import no_content as _no_content
from ..runtime import Server

router = APIRouter()
WRITE, READ = "embedding-write", "embedding-read"


def _signed(server: Server, request: Request, action: str, embedding_id: str) -> str:
    query = server.artifacts.signed_query(action, embedding_id)
    return f"{public_base_url(server, request)}{paths.embedding_csv(embedding_id)}?{query}"


def _check_signature(server: Server, action: str, embedding_id: str, expires: int, signature: str) -> None:
    if not server.artifacts.verify(action, embedding_id, expires, signature):
        raise ApiError(403, ApiErrorCode.FORBIDDEN, "the signed URL is invalid or expired; request a new one")


@router.get(
    template(paths.dataset_embeddings, "datasetId"), response_model=list[DatasetEmbeddingData], tags=["embeddings"]
)
def list_embeddings(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json([store.embedding_data(r) for r in store.list_embeddings(conn, user_id, dataset_id)])


@router.get(template(paths.embeddings_write_url, "datasetId"), response_model=WriteCSVUrlData, tags=["embeddings"])
def embeddings_write_url(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    request: Request,
    name: Annotated[str, Query(description="the embedding's name")],
) -> JSONResponse:
    with server.write() as tx:
        eid = store.create_embedding(tx.conn, user_id, dataset_id, name)
    return _json(WriteCSVUrlData(signed_write_url=_signed(server, request, WRITE, eid), embedding_id=eid))


@router.get(template(paths.embedding_read_url, "datasetId", "embeddingId"), tags=["embeddings"])
def embedding_read_url(
    dataset_id: DatasetId, embedding_id: EmbeddingId, user_id: User, server: ServerDep, request: Request
) -> str:
    with server.db.read() as conn:
        e = store.get_embedding(conn, user_id, dataset_id, embedding_id)
    if not e.uploaded:
        raise ApiError(404, ApiErrorCode.EMBEDDING_UNKNOWN, f"embedding {embedding_id} has no uploaded CSV yet")
    return _signed(server, request, READ, embedding_id)


@router.delete(template(paths.embedding, "datasetId", "embeddingId"), status_code=204, tags=["embeddings"])
def delete_embedding(dataset_id: DatasetId, embedding_id: EmbeddingId, user_id: User, server: ServerDep) -> Response:
    with server.write() as tx:
        e = store.delete_embedding(tx.conn, user_id, dataset_id, embedding_id)
    if e.artifact_id is None:  # a run's embedding is its artifact, which stays with the run
        with contextlib.suppress(FileNotFoundError):
            os.unlink(server.artifacts.path(embedding_id))
    return _no_content()


@router.post(template(paths.embedding_2d_job, "datasetId", "embeddingId"), status_code=204, tags=["embeddings"])
def trigger_2d_job(
    dataset_id: DatasetId,
    embedding_id: EmbeddingId,
    body: Trigger2dEmbeddingJobRequest,
    user_id: User,
    server: ServerDep,
) -> Response:
    """Acknowledged for a stored embedding; no 2-d projection is computed (no client call reads one)."""
    with server.db.read() as conn:
        store.get_embedding(conn, user_id, dataset_id, embedding_id)
    return _no_content()


@router.put(paths.embedding_csv("{embeddingId}"), status_code=200, tags=["embeddings"])
async def upload_embedding_csv(
    embedding_id: EmbeddingId, expires: int, signature: str, request: Request, server: ServerDep
) -> Response:
    _check_signature(server, WRITE, embedding_id, expires, signature)

    def dataset_names() -> list[str]:
        with server.db.read() as conn:
            e = store.find_embedding(conn, embedding_id)
            if e is None:
                raise not_found(ApiErrorCode.EMBEDDING_UNKNOWN, "embedding", embedding_id)
            if e.uploaded:
                raise ApiError(
                    409, ApiErrorCode.CONFLICT, f"embedding {embedding_id} is stored already; create a new one"
                )
            return [s.file_name for s in store.dataset_samples(conn, e.dataset_id)]

    names = await run_in_threadpool(dataset_names)
    tmp, final = server.artifacts.open_for_write(embedding_id)
    size = 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > server.settings.max_upload_bytes:
                    raise ApiError(
                        413, ApiErrorCode.PAYLOAD_TOO_LARGE, f"CSV larger than {server.settings.max_upload_bytes} bytes"
                    )
                fh.write(chunk)

        def commit() -> None:
            try:
                check_csv(tmp, names)
            except EmbeddingCsvError as exc:
                raise bad_request(f"embeddings CSV: {exc}") from None
            with server.write() as tx:
                e = store.find_embedding(tx.conn, embedding_id, for_update=True)
                if e is None:
                    raise not_found(ApiErrorCode.EMBEDDING_UNKNOWN, "embedding", embedding_id)
                if e.uploaded:
                    raise ApiError(409, ApiErrorCode.CONFLICT, f"embedding {embedding_id} is stored already")
                os.replace(tmp, final)
                store.mark_embedding_uploaded(tx.conn, embedding_id, size)

        await run_in_threadpool(commit)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return Response(status_code=200)


@router.get(paths.embedding_csv("{embeddingId}"), tags=["embeddings"])
def download_embedding_csv(embedding_id: EmbeddingId, expires: int, signature: str, server: ServerDep) -> FileResponse:
    _check_signature(server, READ, embedding_id, expires, signature)
    with server.db.read() as conn:
        e = store.find_embedding(conn, embedding_id)
    if e is None or not e.uploaded:
        raise not_found(ApiErrorCode.EMBEDDING_UNKNOWN, "embedding", embedding_id)
    path = server.artifacts.path(e.artifact_id or embedding_id)
    if not path.exists():
        raise not_found(ApiErrorCode.EMBEDDING_UNKNOWN, "embedding", embedding_id)
    return FileResponse(path, filename=f"{embedding_id}.csv", media_type="text/csv")
