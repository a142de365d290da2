"""A bucket datasource's files: Lightly's listings (plain and divide-and-conquer; metadata, predictions),
read and write URLs, readurlRedirect, verify and processedUntilTimestamp; plus the extensions the worker
uses (``readUrl``, ``writeUrl``, and the listing's ``purpose``, ``prefix`` and ``pageSize``).

URLs are the store's own presigned URLs (valid ``--bucket-url-seconds``); the credentials never leave the
server. Store errors answer 400 (429 when worth retrying) with the provider's message and the datasource.
"""

from __future__ import annotations

import logging
import os.path
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode, DatasourcePurpose
from lightly_protocol.models import (
    DatasourceConfigVerifyData,
    DatasourceProcessedUntilTimestampRequest,
    DatasourceProcessedUntilTimestampResponse,
    DatasourceRawSamplesData,
    DivideAndConquerCursorData,
)
from lightly_protocol.paths import template

from .. import storage, store
from ..deps import DatasetId, ServerDep, User
from ..errors import ApiError
from ..responses import no_content
from .bucket_access import (
    datasource_config,
    file_name_or_400,
    open_config,
    open_datasource,
    presign,
    redirect_url,
    redirect_valid,
    store_errors,
)

log = logging.getLogger("lightly_server")
router = APIRouter()

METADATA = ".lightly/metadata/"
PREDICTIONS = ".lightly/predictions/"
EMBEDDINGS = ".lightly/embeddings/"
#: a listing page's time budget: a short page (with hasMore) rather than a request that hangs
PAGE_BUDGET_S = 10.0

Purpose = Literal["INPUT", "LIGHTLY"]
FromTs = Annotated[int | None, Query(alias="from", ge=0, le=2**63 - 1)]
ToTs = Annotated[int | None, Query(alias="to", ge=0, le=2**63 - 1)]
Cursor = Annotated[str | None, Query(max_length=16384)]
Relevant = Annotated[str | None, Query(alias="relevantFilenamesFileName", min_length=1, max_length=1000)]
RelevantRun = Annotated[str | None, Query(alias="relevantFilenamesRunId", max_length=100)]
RelevantArtifact = Annotated[str | None, Query(alias="relevantFilenamesArtifactId", max_length=100)]
Redirected = Annotated[bool, Query(alias="useRedirectedReadUrl")]
PageSizeQ = Annotated[int, Query(alias="pageSize", ge=1, le=10000, description="extension")]
PrefixQ = Annotated[str | None, Query(max_length=1000, description="extension: a sub-prefix of the datasource root")]
PurposeQ = Annotated[Purpose, Query(description="extension: the datasource listed (default INPUT)")]
FileName = Annotated[str, Query(alias="fileName", min_length=1, max_length=1000)]
TaskName = Annotated[str, Query(alias="taskName", min_length=1, max_length=300)]
DncShards = Annotated[int, Query(alias="dncShards", ge=1, le=1000)]


def _base_url(server: ServerDep, request: Request) -> str:
    return (server.settings.public_url or str(request.base_url)).rstrip("/")


def _sub_prefix(prefix: str | None) -> str:
    if not prefix:
        return ""
    name = file_name_or_400(prefix.strip("/"), "prefix")
    return name + "/"


def _start_state(
    purpose: str,
    prefix: str,
    start: int | None,
    end: int | None,
    relevant: str | None,
    run_id: str | None,
    artifact_id: str | None,
    map_prefix: str | None = None,
) -> storage.ListState:
    if run_id or artifact_id:
        raise ApiError(
            400,
            ApiErrorCode.DATASET_DATASOURCE_RELEVANT_FILENAMES_INVALID,
            "relevantFilenamesRunId/relevantFilenamesArtifactId are not supported by this server: put the file in "
            "the datasource and pass relevantFilenamesFileName",
        )
    if relevant is not None:
        file_name_or_400(relevant, "relevantFilenamesFileName")
    return storage.ListState(
        prefix=prefix,
        start=start,
        end=end,
        include_lightly=purpose == DatasourcePurpose.LIGHTLY or prefix.startswith(storage.LIGHTLY_FOLDER),
        relevant=relevant,
        map_prefix=map_prefix,
        purpose=purpose,
    )


def _page(
    server: ServerDep,
    request: Request,
    user_id: str,
    dataset_id: str,
    state: storage.ListState,
    page_size: int,
    redirected: bool,
) -> JSONResponse:
    bucket = open_datasource(server, user_id, dataset_id, state.purpose)
    # a relevant-filenames file lives in the INPUT datasource, whatever the listing's purpose
    source = bucket if state.relevant is None or state.purpose == DatasourcePurpose.INPUT else None
    if source is None:
        source = open_datasource(server, user_id, dataset_id, DatasourcePurpose.INPUT)
    try:
        with store_errors(source, None if state.relevant is None else source.location.key(state.relevant)):
            result = storage.list_page(source, state, page_size, PAGE_BUDGET_S)
    except ApiError as exc:
        if state.relevant is not None and exc.status == 400:
            exc.code = str(ApiErrorCode.DATASET_DATASOURCE_RELEVANT_FILENAMES_INVALID)
            exc.message = f"relevant filenames file {state.relevant}: {exc.message}"
        raise
    except ValueError as exc:
        raise ApiError(400, ApiErrorCode.DATASET_DATASOURCE_RELEVANT_FILENAMES_INVALID, str(exc)) from None
    if result.skipped:
        log.warning(
            "datasource %s: %d names skipped in this page (see the lines above)", source.location, result.skipped
        )
    names = result.names
    if state.map_prefix is not None and state.relevant is not None:
        names = [f"{state.map_prefix}{os.path.splitext(n)[0]}.json" for n in names]
    base = _base_url(server, request) if redirected else ""
    rows = [
        {
            "fileName": n,
            "readUrl": redirect_url(base, server, user_id, dataset_id, state.purpose, n)
            if redirected
            else presign(server, bucket, "GET", n),
        }
        for n in names
    ]
    nxt = result.next_state
    body = {"hasMore": nxt is not None, "cursor": storage.encode_cursor(nxt) if nxt else "", "data": rows}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


def _state_or_cursor(cursor: str | None, fresh: storage.ListState) -> storage.ListState:
    if not cursor:
        return fresh
    try:
        return storage.decode_cursor(cursor)
    except ValueError as exc:
        raise ApiError(400, ApiErrorCode.BAD_REQUEST, str(exc)) from None


def _task_prefix(task_name: str) -> str:
    return PREDICTIONS + _sub_prefix(task_name)


def _window(to: int | None) -> int:
    return int(time.time()) if to is None else to


# ---------------------------------------------------------------- listings


@router.get(template(paths.datasource_list, "datasetId"), response_model=DatasourceRawSamplesData, tags=["datasources"])
def list_files(
    request: Request,
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    var_from: FromTs = None,
    to: ToTs = None,
    cursor: Cursor = None,
    use_redirected_read_url: Redirected = False,
    relevant: Relevant = None,
    purpose: PurposeQ = "INPUT",
    prefix: PrefixQ = None,
    page_size: PageSizeQ = 1000,
) -> JSONResponse:
    fresh = _start_state(purpose, _sub_prefix(prefix), var_from, to, relevant, None, None)
    state = _state_or_cursor(cursor, fresh)
    return _page(server, request, user_id, dataset_id, state, page_size, use_redirected_read_url)


@router.get(
    template(paths.datasource_metadata_list, "datasetId"), response_model=DatasourceRawSamplesData, tags=["datasources"]
)
def list_metadata(
    request: Request,
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    var_from: FromTs = None,
    to: ToTs = None,
    cursor: Cursor = None,
    use_redirected_read_url: Redirected = False,
    relevant: Relevant = None,
    run_id: RelevantRun = None,
    artifact_id: RelevantArtifact = None,
    page_size: PageSizeQ = 1000,
) -> JSONResponse:
    fresh = _start_state("LIGHTLY", METADATA, var_from, to, relevant, run_id, artifact_id, METADATA)
    state = _state_or_cursor(cursor, fresh)
    return _page(server, request, user_id, dataset_id, state, page_size, use_redirected_read_url)


@router.get(
    template(paths.datasource_predictions_list, "datasetId"),
    response_model=DatasourceRawSamplesData,
    tags=["datasources"],
)
def list_predictions(
    request: Request,
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    task_name: TaskName,
    var_from: FromTs = None,
    to: ToTs = None,
    cursor: Cursor = None,
    use_redirected_read_url: Redirected = False,
    relevant: Relevant = None,
    run_id: RelevantRun = None,
    artifact_id: RelevantArtifact = None,
    page_size: PageSizeQ = 1000,
) -> JSONResponse:
    prefix = _task_prefix(task_name)
    fresh = _start_state("LIGHTLY", prefix, var_from, to, relevant, run_id, artifact_id, prefix)
    state = _state_or_cursor(cursor, fresh)
    return _page(server, request, user_id, dataset_id, state, page_size, use_redirected_read_url)


def _dnc(server: ServerDep, user_id: str, dataset_id: str, state: storage.ListState, shards: int) -> JSONResponse:
    # one cursor covers the whole listing: a bucket lists in key order from one continuation token, and
    # its key distribution is unknown before listing it (Lightly's client takes however many it gets)
    datasource_config(server, user_id, dataset_id, state.purpose)  # 404s first
    del shards
    return JSONResponse({"cursors": [storage.encode_cursor(state)]})


@router.get(
    template(paths.datasource_list_dnc, "datasetId"), response_model=DivideAndConquerCursorData, tags=["datasources"]
)
def list_files_dnc(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    dnc_shards: DncShards,
    var_from: FromTs = None,
    to: ToTs = None,
    relevant: Relevant = None,
) -> JSONResponse:
    state = _start_state("INPUT", "", var_from, _window(to), relevant, None, None)
    return _dnc(server, user_id, dataset_id, state, dnc_shards)


@router.get(
    template(paths.datasource_metadata_list_dnc, "datasetId"),
    response_model=DivideAndConquerCursorData,
    tags=["datasources"],
)
def list_metadata_dnc(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    dnc_shards: DncShards,
    var_from: FromTs = None,
    to: ToTs = None,
    relevant: Relevant = None,
    run_id: RelevantRun = None,
    artifact_id: RelevantArtifact = None,
) -> JSONResponse:
    state = _start_state("LIGHTLY", METADATA, var_from, _window(to), relevant, run_id, artifact_id, METADATA)
    return _dnc(server, user_id, dataset_id, state, dnc_shards)


@router.get(
    template(paths.datasource_predictions_list_dnc, "datasetId"),
    response_model=DivideAndConquerCursorData,
    tags=["datasources"],
)
def list_predictions_dnc(
    dataset_id: DatasetId,
    user_id: User,
    server: ServerDep,
    task_name: TaskName,
    dnc_shards: DncShards,
    var_from: FromTs = None,
    to: ToTs = None,
    relevant: Relevant = None,
    run_id: RelevantRun = None,
    artifact_id: RelevantArtifact = None,
) -> JSONResponse:
    prefix = _task_prefix(task_name)
    state = _start_state("LIGHTLY", prefix, var_from, _window(to), relevant, run_id, artifact_id, prefix)
    return _dnc(server, user_id, dataset_id, state, dnc_shards)


# ---------------------------------------------------------------- single files


def _url(server: ServerDep, user_id: str, dataset_id: str, purpose: str, method: str, relative: str) -> JSONResponse:
    bucket = open_datasource(server, user_id, dataset_id, purpose)
    return JSONResponse(presign(server, bucket, method, relative), headers={"Cache-Control": "no-store"})


@router.get(template(paths.datasource_file_head, "datasetId"), response_model=str, tags=["datasources"])
def file_head_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    return _url(server, user_id, dataset_id, "INPUT", "HEAD", file_name_or_400(file_name))


@router.get(template(paths.datasource_metadata_file, "datasetId"), response_model=str, tags=["datasources"])
def metadata_file_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    return _url(server, user_id, dataset_id, "LIGHTLY", "GET", METADATA + file_name_or_400(file_name))


@router.get(template(paths.datasource_predictions_file, "datasetId"), response_model=str, tags=["datasources"])
def predictions_file_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    return _url(server, user_id, dataset_id, "LIGHTLY", "GET", PREDICTIONS + file_name_or_400(file_name))


@router.get(template(paths.datasource_embeddings_file, "datasetId"), response_model=str, tags=["datasources"])
def embeddings_file_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    return _url(server, user_id, dataset_id, "LIGHTLY", "GET", EMBEDDINGS + file_name_or_400(file_name))


@router.get(template(paths.datasource_predictions_write_url, "datasetId"), response_model=str, tags=["datasources"])
def predictions_write_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    return _url(server, user_id, dataset_id, "LIGHTLY", "PUT", PREDICTIONS + file_name_or_400(file_name))


@router.get(template(paths.datasource_read_url, "datasetId"), response_model=str, tags=["datasources"])
def read_url(
    dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName, purpose: PurposeQ = "INPUT"
) -> JSONResponse:
    """Extension: a fresh presigned GET URL of one file (no HEAD is done: a missing file answers 404 there)."""
    return _url(server, user_id, dataset_id, purpose, "GET", file_name_or_400(file_name))


@router.get(template(paths.datasource_write_url, "datasetId"), response_model=str, tags=["datasources"])
def write_url(dataset_id: DatasetId, user_id: User, server: ServerDep, file_name: FileName) -> JSONResponse:
    """Extension: a presigned PUT URL of one file of the LIGHTLY (or INPUT_OUTPUT) datasource."""
    return _url(server, user_id, dataset_id, "LIGHTLY", "PUT", file_name_or_400(file_name))


@router.get(template(paths.datasource_read_redirect, "datasetId"), status_code=307, tags=["datasources"])
def read_redirect(
    dataset_id: DatasetId,
    server: ServerDep,
    path: Annotated[str, Query(min_length=1, max_length=1000)],
    purpose: PurposeQ = "INPUT",
    user: Annotated[str, Query(max_length=100)] = "",
    expires: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    signature: Annotated[str, Query(max_length=200)] = "",
) -> Response:
    """A redirect to a fresh presigned GET URL; the URL is signed by this server (the listings'
    ``useRedirectedReadUrl``), so it needs no token, and stays valid as long as artifact URLs do."""
    if not redirect_valid(server, user, dataset_id, purpose, path, expires, signature):
        raise ApiError(403, ApiErrorCode.FORBIDDEN, "the redirect URL's signature is invalid or it has expired")
    bucket = open_datasource(server, user, dataset_id, purpose)
    url = presign(server, bucket, "GET", file_name_or_400(path, "path"))
    return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- verify, processedUntilTimestamp


@router.get(
    template(paths.datasource_verify, "datasetId"), response_model=DatasourceConfigVerifyData, tags=["datasources"]
)
def verify_datasource(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    input_config = datasource_config(server, user_id, dataset_id, "INPUT")
    source = open_config(server, input_config)
    try:
        output = open_datasource(server, user_id, dataset_id, "LIGHTLY")
    except ApiError as exc:
        if exc.status != 400 or exc.code != ApiErrorCode.DATASET_DATASOURCE_ILLEGAL_ACTION:
            raise
        output = source  # no writeable datasource: the checks write to the INPUT one
    ok, errors = storage.verify(source, output)
    body: dict[str, object] = dict(ok)
    if errors:
        body["errors"] = errors
    return JSONResponse(body)


@router.get(
    template(paths.datasource_processed_until, "datasetId"),
    response_model=DatasourceProcessedUntilTimestampResponse,
    tags=["datasources"],
)
def get_processed_until(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        ts = store.processed_until(conn, user_id, dataset_id)
    return JSONResponse({"processedUntilTimestamp": ts})


@router.put(template(paths.datasource_processed_until, "datasetId"), status_code=204, tags=["datasources"])
def put_processed_until(
    dataset_id: DatasetId,
    body: Annotated[DatasourceProcessedUntilTimestampRequest, Body()],
    user_id: User,
    server: ServerDep,
) -> Response:
    with server.write() as tx:
        store.set_processed_until(tx.conn, user_id, dataset_id, body.processed_until_timestamp)
    return no_content()
