"""Request dependencies: the process's ``Server`` (from ``app.state``), the caller's user, shared parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import MAX_INT64, OID_PATTERN
from starlette.concurrency import run_in_threadpool

from .errors import ApiError
from .longpoll.answers import INVALID_TOKEN
from .runtime import Server

WORKER_SESSION_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
PageSize = Annotated[int | None, Query(alias="pageSize", ge=1)]
PageOffset = Annotated[int | None, Query(alias="pageOffset", ge=0, le=MAX_INT64, description="element offset")]


# Both are ``async``: FastAPI runs a plain ``def`` dependency in the threadpool, a hop per request that
# cost an idle fleet's polls more than their matching (docs/benchmarks.md, 10,000 waiting workers).


async def get_server(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


ServerDep = Annotated[Server, Depends(get_server)]


async def user(server: ServerDep, token: Annotated[str | None, Query(description="API token")] = None) -> str:
    """The id of the user whose token the request carries (401 without a valid one)."""
    if not token:
        raise ApiError(401, ApiErrorCode.UNAUTHORIZED, "missing token: pass ?token=<your API token>")
    hit, user_id = server.tokens.cached(token)
    if not hit:  # a database read: not on the event loop
        user_id = await run_in_threadpool(server.tokens.user_for, token)
    if user_id is None:
        raise ApiError(401, ApiErrorCode.UNAUTHORIZED, INVALID_TOKEN)
    return user_id


User = Annotated[str, Depends(user)]


def public_base_url(server: Server, request: Request) -> str:
    """The base of the URLs this server hands out (signed URLs): ``--public-url``, else the request's."""
    return (server.settings.public_url or str(request.base_url)).rstrip("/")


# the ids in paths: 24 lowercase hex characters
ArtifactId = Annotated[str, Path(alias="artifactId", pattern=OID_PATTERN)]
ConfigId = Annotated[str, Path(alias="configId", pattern=OID_PATTERN)]
DatasetId = Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)]
RunId = Annotated[str, Path(alias="runId", pattern=OID_PATTERN)]
SampleId = Annotated[str, Path(alias="sampleId", pattern=OID_PATTERN)]
EmbeddingId = Annotated[str, Path(alias="embeddingId", pattern=OID_PATTERN)]
ScheduledId = Annotated[str, Path(alias="scheduledId", pattern=OID_PATTERN)]
TagId = Annotated[str, Path(alias="tagId", pattern=OID_PATTERN)]
WorkerId = Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)]
