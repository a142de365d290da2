"""The FastAPI application: Lightly's REST protocol over the store, plus the long-poll extension.

``create_app`` wires the pieces: the process's ``Server`` (``runtime.py``) in ``app.state``, the
error handlers, the middleware and one router per resource (``routes/``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from . import __version__, console, error_handlers
from . import openapi as openapi_doc
from .limits import RequestLimits
from .longpoll.asgi_fast_path import FastPolls
from .middleware import RequestMetrics
from .routes import (
    artifacts,
    collaboration,
    configs,
    datasets,
    datasource_files,
    datasources,
    embeddings,
    ops,
    runs,
    samples,
    schedule,
    shards,
    tags,
    workers,
)
from .runtime import Server
from .settings import ServerSettings


def create_app(settings: ServerSettings) -> FastAPI:
    server = Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(
        title="Lightly-compatible API server",
        version=__version__,
        description="Self-hosted server speaking the REST protocol of lightly==1.5.26's ApiWorkflowClient.",
        lifespan=lifespan,
    )
    app.state.server = server
    error_handlers.install(app)
    app.add_middleware(
        RequestLimits,
        max_body_bytes=settings.max_body_bytes,
        max_selection_bytes=settings.max_selection_bytes,
        max_shard_bytes=settings.max_shard_bytes,
    )
    app.add_middleware(RequestMetrics, histogram=server.metrics.http_latency)
    app.add_middleware(console.ConsoleHeaders)  # the web console's security headers (only under /ui)
    # outermost: an idle fleet's steady-state polls are answered before any other layer (longpoll/asgi_fast_path.py)
    app.add_middleware(FastPolls, server=server)
    openapi_doc.install(app)
    # routes are matched one by one in this order, so the idle fleet's polls come first: the work poll
    # (shards, extension /v1/ext/: docs/server.md, "Shards") and the queue poll (schedule). The order
    # also matters where a literal segment meets a parameter: /v1/docker/worker/schedule (schedule) is
    # matched before /v1/docker/worker/{workerId} (workers)
    app.include_router(shards.router)
    app.include_router(schedule.router)
    app.include_router(ops.router)
    app.include_router(workers.router)
    app.include_router(configs.router)
    app.include_router(datasets.router)
    app.include_router(datasources.router)
    app.include_router(datasource_files.router)
    app.include_router(runs.router)
    app.include_router(artifacts.router)
    app.include_router(tags.router)
    app.include_router(samples.router)
    app.include_router(embeddings.router)
    app.include_router(collaboration.router)
    console.install(app, server)  # the web console under /ui (docs/server.md, "Web console")
    return app
