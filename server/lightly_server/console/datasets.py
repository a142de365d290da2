"""Datasets: the list, a dataset's datasources (credentials never shown) and tags, a tag's paged gallery
whose thumbnails come through the server's sample read-URL path (LOCAL and bucket datasources alike)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from lightly_protocol.enums import DatasourcePurpose
from lightly_protocol.models import OID_PATTERN
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import crypto, read_urls, store
from ..deps import ServerDep
from ..runtime import Server
from .routing import ConsoleRoute
from .web import PREFIX, ObjectId, SignedIn, redirect, render

router = APIRouter(route_class=ConsoleRoute)

GALLERY_PAGE = 48
#: the datasource fields shown (never a credential, nor the server's own keys)
SHOWN_FIELDS = (
    "type",
    "purpose",
    "fullPath",
    "thumbSuffix",
    "webServerLocation",
    "s3Region",
    "s3ARN",
    "gcsProjectId",
    "accountName",
    "obsEndpoint",
)


@router.get(f"{PREFIX}/datasets")
async def datasets_page(request: Request, viewer: SignedIn, server: ServerDep) -> Response:
    def read() -> dict[str, Any]:
        with server.db.read() as conn:
            return {"datasets": store.datasets_data(conn, store.list_datasets(conn, viewer.user_id, 1000, 0))}

    return render(request, "datasets.html", await run_in_threadpool(read), viewer.browser)


def shown_datasource(stored: dict[str, Any]) -> dict[str, Any]:
    """What the page shows of a stored datasource: the harmless fields and whether credentials are stored."""
    redacted = crypto.redact_datasource(stored)
    fields = {k: redacted[k] for k in SHOWN_FIELDS if k in redacted and redacted[k] not in (None, "")}
    secret = [f for f in crypto.SECRET_FIELDS.get(str(stored.get("type", "")), ()) if f in redacted]
    return {"fields": fields, "credentials": bool(secret)}


def _dataset_context(server: Server, user_id: str, dataset_id: str) -> dict[str, Any]:
    with server.db.read() as conn:
        dataset = store.dataset_data(conn, store.get_dataset(conn, user_id, dataset_id))
        sources = store.get_datasources(conn, dataset_id)
        tags = store.list_tags(conn, user_id, dataset_id)
        queued = store.list_scheduled_for_dataset(conn, user_id, dataset_id, [])
    return {
        "dataset": dataset,
        "datasources": [{"purpose": p, **shown_datasource(s)} for p, s in sorted(sources.items())],
        "tags": tags,
        "queued": queued,
    }


@router.get(f"{PREFIX}/datasets/{{dataset_id}}")
async def dataset_page(
    request: Request,
    viewer: SignedIn,
    server: ServerDep,
    dataset_id: ObjectId,
    scheduled: Annotated[str | None, Query(pattern=OID_PATTERN)] = None,
) -> Response:
    context = await run_in_threadpool(_dataset_context, server, viewer.user_id, dataset_id)
    context["scheduled_id"] = scheduled
    return render(request, "dataset.html", context, viewer.browser)


def _gallery_context(server: Server, user_id: str, dataset_id: str, tag_id: str, offset: int) -> dict[str, Any]:
    with server.db.read() as conn:
        tag = store.get_tag(conn, user_id, dataset_id, tag_id)
        rows, total = store.browse.tag_page(conn, tag, GALLERY_PAGE, offset)
    samples = [{"id": store.sample_id_of(r.idx), "file_name": r.file_name} for r in rows]
    return {
        "dataset_id": dataset_id,
        "tag": tag,
        "samples": samples,
        "total": total,
        "offset": offset,
        "page": GALLERY_PAGE,
    }


@router.get(f"{PREFIX}/datasets/{{dataset_id}}/tags/{{tag_id}}")
async def gallery_page(
    request: Request,
    viewer: SignedIn,
    server: ServerDep,
    dataset_id: ObjectId,
    tag_id: ObjectId,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> Response:
    context = await run_in_threadpool(_gallery_context, server, viewer.user_id, dataset_id, tag_id, offset)
    fragment = bool(request.headers.get("hx-request"))
    return render(request, "gallery_items.html" if fragment else "gallery.html", context, viewer.browser)


@router.get(f"{PREFIX}/datasets/{{dataset_id}}/samples/{{sample_id}}/image")
async def sample_image(viewer: SignedIn, server: ServerDep, dataset_id: ObjectId, sample_id: ObjectId) -> Response:
    """A sample's image: the owner is checked here, then the browser follows the server's signed read URL
    (LOCAL: served from --local-datasource-root; a bucket: a presigned URL of the object)."""

    def url() -> str:
        with server.db.read() as conn:
            store.get_sample(conn, viewer.user_id, dataset_id, sample_id)
            source = store.resolve_datasource(store.get_datasources(conn, dataset_id), DatasourcePurpose.INPUT)
        return read_urls.read_url(server.artifacts, "", dataset_id, source, sample_id, expires_in=600)

    return redirect(await run_in_threadpool(url))
