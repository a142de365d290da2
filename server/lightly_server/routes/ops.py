"""Versions, health and metrics."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from lightly_protocol import PROTOCOL_CLIENT_VERSION, paths
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import store
from ..deps import ServerDep
from ..netsec import NetworkSettingError, bearer_matches, read_token_file

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
def metrics(server: ServerDep, request: Request) -> Response:
    token_file = server.settings.metrics_token_file
    if token_file is not None:  # --metrics-token-file: only scrapers with the bearer token
        try:
            token = read_token_file(token_file, "--metrics-token-file")
        except NetworkSettingError as exc:
            log.error("/metrics refused: %s", exc)
            return Response("the metrics token file cannot be read; see the server's log\n", status_code=503)
        if not bearer_matches(request.headers.get("authorization"), token):
            return Response(
                "/metrics needs 'Authorization: Bearer <token>' (the token of --metrics-token-file)\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    return Response(generate_latest(server.metrics.exposition()), media_type=CONTENT_TYPE_LATEST)
