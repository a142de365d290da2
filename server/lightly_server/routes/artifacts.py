"""Artifacts: created by a run, uploaded and downloaded through signed URLs."""

from __future__ import annotations

import contextlib
import os

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import ArtifactCreatedData, ArtifactCreateRequest
from lightly_protocol.models import safe_artifact_name as _safe_artifact_name
from lightly_protocol.paths import template
from starlette.concurrency import run_in_threadpool

from .. import store
from ..deps import ArtifactId, RunId, ServerDep, User, public_base_url
from ..errors import ApiError, not_found
from ..responses import json_response as _json
from ..responses import no_content as _no_content
from ..runtime import Server

router = APIRouter()


@router.post(
    template(paths.run_artifacts, "runId"),
    status_code=201,
    response_model=ArtifactCreatedData,
    tags=["docker"],
)
def create_artifact(
    run_id: RunId,
    body: ArtifactCreateRequest,
    user_id: User,
    server: ServerDep,
    request: Request,
) -> JSONResponse:
    with server.write() as tx:
        aid = store.create_artifact(tx.conn, user_id, run_id, body)
    url = (
        f"{public_base_url(server, request)}{paths.artifact_upload(aid)}?{server.artifacts.signed_query('write', aid)}"
    )
    return _json(ArtifactCreatedData(signed_write_url=url, artifact_id=aid), 201)


@router.put(template(paths.artifact_confirm, "runId", "artifactId"), status_code=204, tags=["docker"])
def confirm_artifact(run_id: RunId, artifact_id: ArtifactId, user_id: User, server: ServerDep) -> Response:
    with server.write() as tx:
        store.confirm_artifact(tx.conn, user_id, run_id, artifact_id)
    return _no_content()


@router.get(template(paths.artifact_read_url, "runId", "artifactId"), tags=["docker"])
def artifact_read_url(
    run_id: RunId,
    artifact_id: ArtifactId,
    user_id: User,
    server: ServerDep,
    request: Request,
) -> str:
    with server.db.read() as conn:
        a = store.get_artifact(conn, user_id, run_id, artifact_id)
    if not a.uploaded:
        raise ApiError(
            404,
            ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
            f"artifact {artifact_id} was never uploaded",
        )
    query = server.artifacts.signed_query("read", artifact_id)
    return f"{public_base_url(server, request)}{paths.artifact_download(artifact_id)}?{query}"


def _check_signature(server: Server, action: str, artifact_id: str, expires: int, signature: str) -> None:
    if not signature.isascii() or not server.artifacts.verify(action, artifact_id, expires, signature):
        raise ApiError(403, ApiErrorCode.FORBIDDEN, "the signed URL is invalid or expired; request a new one")


def _refuse_confirmed(artifact_id: str) -> ApiError:
    return ApiError(
        409,
        ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
        f"artifact {artifact_id} is confirmed; its content cannot change any more (create a new artifact)",
    )


@router.put(template(paths.artifact_upload, "artifactId"), status_code=200, tags=["artifacts"])
async def upload_artifact(
    artifact_id: ArtifactId,
    expires: int,
    signature: str,
    request: Request,
    server: ServerDep,
) -> Response:
    _check_signature(server, "write", artifact_id, expires, signature)

    def check() -> bool:
        with server.db.read() as conn:
            return store.is_confirmed(conn, artifact_id)

    if await run_in_threadpool(check):
        raise _refuse_confirmed(artifact_id)
    tmp, final = server.artifacts.open_for_write(artifact_id)
    size = 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > server.settings.max_upload_bytes:
                    raise ApiError(
                        413,
                        ApiErrorCode.PAYLOAD_TOO_LARGE,
                        f"artifact larger than {server.settings.max_upload_bytes} bytes",
                    )
                fh.write(chunk)

        def commit() -> None:
            # the content changes only while the artifact is unconfirmed (checked under the row lock)
            with server.write() as tx:
                if store.is_confirmed(tx.conn, artifact_id):
                    raise _refuse_confirmed(artifact_id)
                os.replace(tmp, final)
                store.mark_uploaded(tx.conn, artifact_id, size)

        await run_in_threadpool(commit)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return Response(status_code=200)


@router.get(template(paths.artifact_download, "artifactId"), tags=["artifacts"])
def download_artifact(artifact_id: ArtifactId, expires: int, signature: str, server: ServerDep) -> FileResponse:
    _check_signature(server, "read", artifact_id, expires, signature)
    with server.db.read() as conn:
        a = store.find_artifact(conn, artifact_id)
    path = server.artifacts.path(artifact_id)
    if a is None or not path.exists():
        raise not_found(ApiErrorCode.DOCKER_RUN_ARTIFACT_UNKNOWN, "artifact", artifact_id)
    name = os.path.basename(_safe_artifact_name(a.file_name, artifact_id))
    return FileResponse(path, filename=name, media_type="application/octet-stream")
