"""Shards of split scheduled runs (extension under ``/v1/ext/``; docs/server.md "Shards (extension, /v1/ext/)").

Thin routes over the store's shard operations (``store/shards.py``: every rule is there): publish and
read a plan, the work long poll (a shard first, else the scheduled runs exactly as ``GET
/v1/docker/worker/{id}/schedule``), the coordinator's own claim, a shard's files, heartbeats and
hand-backs, results, the summary. Bodies of listings and results are capped by ``--max-shard-bytes``
(``limits.RequestLimits`` and here).
"""

from __future__ import annotations

import contextlib
import os
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import MAX_INT64, OID_PATTERN
from lightly_protocol.paths import template
from lightly_protocol.shards import (
    DEFAULT_SHARD_SIZE,
    ListingError,
    ShardAssignment,
    ShardData,
    ShardPlanData,
    ShardSummary,
    ShardUpdateRequest,
    WorkData,
    decode_listing,
)
from starlette.concurrency import run_in_threadpool

from .. import store
from ..deps import ScheduledId, ServerDep, User, WorkerId
from ..errors import ApiError, bad_request
from ..longpoll.answers import work_poll
from ..responses import json_response as _json
from ..responses import no_content as _no_content
from ..shard_results import delete_results, result_path, upload_paths

router = APIRouter(tags=["ext"])

_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
#: the two bodies that are bytes, not JSON (documented, so clients and the fuzz test send them)
_BINARY_BODY = {"requestBody": {"required": True, "content": _BINARY}}

ShardId = Annotated[str, Path(alias="shardId", pattern=OID_PATTERN)]
CallerWorker = Annotated[str, Query(alias="workerId", pattern=OID_PATTERN, description="the calling worker")]


def _parallelism(raw: str | None) -> int | None:
    if raw is None or raw == "auto":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise bad_request(f"parallelism must be an integer >= 1 or 'auto' (got {raw[:50]!r})")
    return value


@router.get(paths.SHARDS_SUMMARY, response_model=list[ShardSummary])
def shard_summary(user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.shard_summary(conn, user_id))


@router.put(template(paths.scheduled_shards, "scheduledId"), response_model=ShardPlanData, openapi_extra=_BINARY_BODY)
async def publish_shards(
    scheduled_id: ScheduledId,
    request: Request,
    user_id: User,
    server: ServerDep,
    worker_id: CallerWorker,
    run_id: Annotated[str, Query(alias="runId", pattern=OID_PATTERN, description="the coordinator's run")],
    shard_size: Annotated[int, Query(alias="shardSize", ge=1, le=MAX_INT64)] = DEFAULT_SHARD_SIZE,
    parallelism: Annotated[str | None, Query(description="an integer >= 1, or 'auto' (the default): no cap")] = None,
) -> JSONResponse:
    """Body: the gzip of the UTF-8 listing, one relative filename per line, in input order."""
    cap = _parallelism(parallelism)
    body = await request.body()

    def publish() -> ShardPlanData:
        try:
            names = decode_listing(body, server.settings.max_shard_bytes)
        except ListingError as exc:
            raise bad_request(f"shard listing: {exc}") from None
        with server.write() as tx:
            plan, stale = store.publish_shards(
                tx.conn, user_id, scheduled_id, worker_id, run_id, shard_size, cap, names
            )
        delete_results(server.artifacts.root, stale)
        return plan

    plan = await run_in_threadpool(publish)
    server.shards_changed(user_id)
    return _json(plan)


@router.get(template(paths.scheduled_shards, "scheduledId"), response_model=ShardPlanData)
def get_shards(scheduled_id: ScheduledId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.get_shard_plan(conn, user_id, scheduled_id))


@router.post(
    template(paths.scheduled_shards_claim, "scheduledId"),
    response_model=ShardAssignment,
    responses={204: {"description": "no OPEN shard to take now"}},
)
def claim_own_shard(scheduled_id: ScheduledId, user_id: User, server: ServerDep, worker_id: CallerWorker) -> Response:
    with server.write() as tx:
        got = store.claim_own_shard(tx.conn, user_id, worker_id, scheduled_id)
    return _json(got) if got is not None else _no_content()


@router.get(template(paths.worker_work, "workerId"), response_model=WorkData)
async def work(
    request: Request,
    worker_id: WorkerId,
    user_id: User,
    server: ServerDep,
    wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, description="long-poll wait")] = 0,
) -> JSONResponse:
    """An idle worker's poll: a shard it may take (claimed for it), else the scheduled runs it may take.

    Renews the worker's lease like ``GET /v1/docker/worker/{id}/schedule``. With ``waitSeconds`` it answers
    as soon as a shard opens or a run is scheduled for it, else empty after the wait (capped like there).
    The steady state of an idle fleet's poll is answered by ``fast_polls`` before it gets here.
    """
    # (the docstring is the OpenAPI description, kept as published: ``fast_polls`` is longpoll/asgi_fast_path.py)
    labels = await server.polling_worker_labels(user_id, worker_id)  # renews the worker's lease
    token = request.query_params.get("token")  # checked again after a long wait (revoked meanwhile: 401)
    return JSONResponse(await work_poll(server, user_id, worker_id, labels, wait_seconds, token))


@router.get(template(paths.shard_files, "shardId"), response_model=list[str])
def shard_files(shard_id: ShardId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return JSONResponse(store.shard_files(conn, user_id, shard_id))


@router.put(template(paths.shard, "shardId"), response_model=ShardData)
def update_shard(shard_id: ShardId, body: ShardUpdateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    """``state: LEASED``: heartbeat (renews the shard's and the worker's lease). ``OPEN``: hand it back."""
    with server.write() as tx:
        if body.state == "LEASED":
            data = store.heartbeat_shard(tx.conn, user_id, shard_id, body.worker_id, body.processed)
        else:
            data = store.hand_back_shard(tx.conn, user_id, shard_id, body.worker_id)
    if body.state == "OPEN":
        server.shards_changed(user_id)
    return _json(data)


@router.put(template(paths.shard_result, "shardId"), response_model=ShardData, openapi_extra=_BINARY_BODY)
async def put_shard_result(
    shard_id: ShardId, request: Request, user_id: User, server: ServerDep, worker_id: CallerWorker
) -> JSONResponse:
    """Body: the worker's binary shard file. Only the holder's result is taken; the shard is DONE with it."""
    limit = server.settings.max_shard_bytes

    def precheck() -> None:
        with server.db.read() as conn:
            store.check_shard_finish(conn, user_id, shard_id, worker_id)

    await run_in_threadpool(precheck)  # a worker that lost the shard learns it before sending the bytes
    tmp, final = upload_paths(server.artifacts.root, shard_id)
    size = 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, ApiErrorCode.PAYLOAD_TOO_LARGE, f"shard result larger than {limit} bytes")
                fh.write(chunk)

        def commit() -> ShardData:
            with server.write() as tx:
                data, store_it = store.finish_shard(tx.conn, user_id, shard_id, worker_id, size)
                if store_it:
                    os.replace(tmp, final)  # under the row's lock: DONE and the bytes together
            return data

        data = await run_in_threadpool(commit)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    server.shards_changed(user_id)
    return _json(data)


@router.get(
    template(paths.shard_result, "shardId"),
    response_class=Response,
    responses={200: {"description": "the result's bytes", "content": _BINARY}},
)
def get_shard_result(shard_id: ShardId, user_id: User, server: ServerDep) -> FileResponse:
    with server.db.read() as conn:
        store.shard_result_size(conn, user_id, shard_id)
    path = result_path(server.artifacts.root, shard_id)
    if not path.exists():
        raise ApiError(
            404,
            ApiErrorCode.NOT_FOUND,
            f"shard {shard_id} is DONE but its result file is missing from the artifacts directory "
            "(replicas must share --artifacts-dir)",
        )
    return FileResponse(path, media_type="application/octet-stream")
