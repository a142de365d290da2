"""Versions, health and metrics."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from lightly_protocol import PROTOCOL_CLIENT_VERSION, paths
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import store
from ..deps import ServerDep

log = logging.getLogger("lightly_server")


router = APIRouter()


@router.get(paths.PIP_MINIMUM, tags=["versioning"])
def pip_minimum() -> str:
    return "1.0.0"


@router.get(paths.PIP_LATEST, tags=["versioning"])
def pip_latest(current_version: Annotated[str | None, Query(alias="currentVersion")] = None) -> str:
    return PROTOCOL_CLIENT_VERSION


@router.get(paths.HEALTHZ, tags=["ops"])
def healthz(server: ServerDep) -> dict[str, str]:
    with server.db.read() as conn:
        store.ping(conn)
    return {"status": "ok"}


@router.get(paths.METRICS, tags=["ops"])
def metrics(server: ServerDep) -> Response:
    return Response(generate_latest(server.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)
