"""A dataset's tags: list, create from a bitmask, their filenames and exports (filenames, read URLs,
datasource locations, Label Studio tasks, Labelbox v4 data rows)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from lightly_protocol import paths
from lightly_protocol.enums import DatasetType, DatasourcePurpose, FileNameFormat
from lightly_protocol.models import (
    CreateEntityResponse,
    LabelBoxV4DataRow,
    LabelStudioTask,
    LabelStudioTaskData,
    TagCreateRequest,
    TagData,
)
from lightly_protocol.paths import template

from .. import read_urls, store
from ..deps import DatasetId, PageOffset, PageSize, ServerDep, TagId, User, public_base_url
from ..responses import created as _created
from ..responses import json_response as _json

log = logging.getLogger("lightly_server")


router = APIRouter()


@router.get(template(paths.dataset_tags, "datasetId"), response_model=list[TagData], tags=["tags"])
def list_tags(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json([store.tag_data(r) for r in store.list_tags(conn, user_id, dataset_id)])


@router.post(
    template(paths.dataset_tags, "datasetId"), status_code=201, response_model=CreateEntityResponse, tags=["tags"]
)
def create_tag(dataset_id: DatasetId, body: TagCreateRequest, user_id: User, server: ServerDep) -> JSONResponse:
    with server.write() as tx:
        return _created(store.create_tag(tx.conn, user_id, dataset_id, body))


@router.get(template(paths.tag, "datasetId", "tagId"), response_model=TagData, tags=["tags"])
def get_tag(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
) -> JSONResponse:
    with server.db.read() as conn:
        return _json(store.tag_data(store.get_tag(conn, user_id, dataset_id, tag_id)))


@router.get(template(paths.tag_filenames, "datasetId", "tagId"), response_model=list[str], tags=["tags"])
def tag_filenames(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
) -> JSONResponse:
    with server.db.read() as conn:
        return JSONResponse(store.tag_filenames(conn, store.get_tag(conn, user_id, dataset_id, tag_id)))


#: ``expiresIn`` of the exports: seconds a read URL stays valid (default: the server's signed-URL lifetime)
ExpiresIn = Annotated[int | None, Query(alias="expiresIn", ge=1, le=read_urls.MAX_EXPIRES_IN_S)]


class _Export:
    """One page of a tag's samples with what their read URLs need (the dataset's INPUT datasource)."""

    def __init__(
        self, server: ServerDep, user_id: str, dataset_id: str, tag_id: str, size: int | None, offset: int | None
    ) -> None:
        with server.db.read() as conn:
            tag = store.get_tag(conn, user_id, dataset_id, tag_id)
            self.dataset_type = store.get_dataset(conn, user_id, dataset_id).type
            self.samples: list[Any] = store.page_of(store.tag_samples(conn, tag), size, offset)
            by_purpose = store.get_datasources(conn, dataset_id)
        self.datasource: dict[str, Any] | None = store.resolve_datasource(by_purpose, DatasourcePurpose.INPUT)
        self.server, self.dataset_id = server, dataset_id

    def url(self, request: Request, sample: Any, expires_in: int | None) -> str:
        base = public_base_url(self.server, request)
        sid = store.sample_id_of(sample.idx)
        return read_urls.read_url(self.server.artifacts, base, self.dataset_id, self.datasource, sid, expires_in)


@router.get(template(paths.tag_export_filenames, "datasetId", "tagId"), tags=["tags"])
def export_tag_filenames(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
    request: Request,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
    file_name_format: Annotated[FileNameFormat, Query(alias="fileNameFormat")] = FileNameFormat.NAME,
    expires_in: ExpiresIn = None,
) -> JSONResponse:
    export = _Export(server, user_id, dataset_id, tag_id, page_size, page_offset)
    samples = [s for s in export.samples if "\n" not in s.file_name and len(s.file_name.splitlines()) == 1]
    if len(samples) != len(export.samples):
        left_out = len(export.samples) - len(samples)
        log.warning("tag %s: %d filenames with line breaks left out of the export", tag_id, left_out)
    if file_name_format == FileNameFormat.REDIRECTED_READ_URL:
        lines = [export.url(request, s, expires_in) for s in samples]
    elif file_name_format == FileNameFormat.DATASOURCE_FULL:
        lines = [read_urls.datasource_location(export.datasource, s.file_name) for s in samples]
    else:
        lines = [s.file_name for s in samples]
    # a JSON string, not bare text: the client json-decodes every body first, so a page that
    # happens to be a JSON literal ("null", "12e45") would otherwise be mangled
    return JSONResponse("\n".join(lines))


@router.get(
    template(paths.tag_export_label_studio, "datasetId", "tagId"), response_model=list[LabelStudioTask], tags=["tags"]
)
def export_label_studio_tasks(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
    request: Request,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
    expires_in: ExpiresIn = None,
) -> JSONResponse:
    export = _Export(server, user_id, dataset_id, tag_id, page_size, page_offset)
    return _json(
        [
            LabelStudioTask(
                id=s.idx,
                data=LabelStudioTaskData(image=export.url(request, s, expires_in), lightly_file_name=s.file_name),
            )
            for s in export.samples
        ]
    )


@router.get(
    template(paths.tag_export_label_box_v4, "datasetId", "tagId"),
    response_model=list[LabelBoxV4DataRow],
    tags=["tags"],
)
def export_label_box_v4_data_rows(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
    request: Request,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
    expires_in: ExpiresIn = None,
) -> JSONResponse:
    export = _Export(server, user_id, dataset_id, tag_id, page_size, page_offset)
    media = "VIDEO" if export.dataset_type == DatasetType.VIDEOS else "IMAGE"
    return _json(
        [
            LabelBoxV4DataRow(row_data=export.url(request, s, expires_in), global_key=s.file_name, media_type=media)
            for s in export.samples
        ]
    )
