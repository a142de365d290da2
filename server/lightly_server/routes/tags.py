"""A dataset's tags and their filenames."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from lightly_protocol import paths
from lightly_protocol.models import TagData
from lightly_protocol.paths import template

from .. import store
from ..deps import DatasetId, PageOffset, PageSize, ServerDep, TagId, User
from ..responses import json_response as _json

log = logging.getLogger("lightly_server")


router = APIRouter()


@router.get(template(paths.dataset_tags, "datasetId"), response_model=list[TagData], tags=["tags"])
def list_tags(dataset_id: DatasetId, user_id: User, server: ServerDep) -> JSONResponse:
    with server.db.read() as conn:
        return _json([store.tag_data(r) for r in store.list_tags(conn, user_id, dataset_id)])


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


@router.get(template(paths.tag_export_filenames, "datasetId", "tagId"), tags=["tags"])
def export_tag_filenames(
    dataset_id: DatasetId,
    tag_id: TagId,
    user_id: User,
    server: ServerDep,
    page_size: PageSize = None,
    page_offset: PageOffset = None,
) -> JSONResponse:
    with server.db.read() as conn:
        names = store.tag_filenames(conn, store.get_tag(conn, user_id, dataset_id, tag_id))
    # a JSON string, not bare text: the client json-decodes every body first, so a page that
    # happens to be a JSON literal ("null", "12e45") would otherwise be mangled
    page = store.page_of(names, page_size, page_offset)
    lines = [n for n in page if len(n.splitlines()) == 1 and "\n" not in n]
    if len(lines) != len(page):
        log.warning("tag %s: %d filenames with line breaks left out of the export", tag_id, len(page) - len(lines))
    return JSONResponse("\n".join(lines))
