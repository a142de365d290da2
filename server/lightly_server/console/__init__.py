"""The web console: server-rendered pages under ``/ui`` over the same store and tokens as the API.

``install(app, server)`` mounts its pages and its static files (the vendored htmx, the stylesheet);
``ConsoleHeaders`` is the middleware that adds the security headers of every ``/ui`` answer.
Pages reach the database only through the store (the import
contract ``routes-run-no-sql``), check the signed-in user exactly as the API checks a token, and act
through the API's own routes, so the console can do nothing the API would refuse (docs/server.md,
"Web console").
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from ..runtime import Server
from . import datasets, embedding, runs, schedule, signin, workers
from .security import ConsoleHeaders
from .session import SessionKeys
from .web import PREFIX, STATIC


def install(app: FastAPI, server: Server) -> None:
    app.state.console_keys = SessionKeys(server.artifacts.key)
    for module in (signin, embedding, runs, workers, datasets, schedule):
        app.include_router(module.router, include_in_schema=False)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="console-static")


__all__ = ["ConsoleHeaders", "install"]
