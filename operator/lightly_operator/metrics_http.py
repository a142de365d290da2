"""The operator's ``/metrics`` endpoint (aiohttp, on kopf's event loop), optionally behind a bearer token.

``--metrics-token-file`` (env ``LIGHTLY_OPERATOR_METRICS_TOKEN_FILE``): a file holding a token; then
``/metrics`` answers 401 unless the request carries ``Authorization: Bearer <token>``. The file is
read at every scrape, so a rotated Secret takes effect without a restart. The token is never logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightly_protocol import tls
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .settings import SettingsError

log = logging.getLogger("lightly_operator.metrics")


def read_token_file(path: str | Path) -> str:
    """The token in ``path``; ``SettingsError`` (saying what to fix, never the token) otherwise."""
    try:
        return tls.read_token_file(str(path), "--metrics-token-file (LIGHTLY_OPERATOR_METRICS_TOKEN_FILE)")
    except tls.TrustFileError as exc:
        raise SettingsError(str(exc)) from None


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry, token_file: str | Path | None = None) -> None:
        self.registry = registry
        self.token_file = token_file
        if token_file:
            read_token_file(token_file)  # a missing or empty file is an error at start

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        if self.token_file:
            try:
                token = read_token_file(self.token_file)
            except SettingsError as exc:
                log.error("/metrics refused: %s", exc)
                return web.Response(status=503, text="the metrics token file cannot be read; see the operator's log\n")
            if not tls.bearer_matches(request.headers.get("Authorization"), token):
                return web.Response(
                    status=401,
                    text="/metrics needs 'Authorization: Bearer <token>' (the token of --metrics-token-file)\n",
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve(self, port: int, host: str = "0.0.0.0") -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        app.router.add_get("/", self.handle)  # as prometheus_client's own server answered
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner
