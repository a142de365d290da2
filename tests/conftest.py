"""Shared fixtures: real server processes on free loopback ports, over SQLite and PostgreSQL.

PostgreSQL: 127.0.0.1:5432 with trust auth (our dev and CI machines); every test module gets a
fresh database that is dropped afterwards. Without PostgreSQL those tests skip with the reason,
except under CI (``CI=true``), where a missing PostgreSQL fails them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from lightly_devkit.net import PROXY_VARS, free_port
from lightly_devkit.servers import ServerProcess, create_token, start_server

PG_ADMIN_URL = os.environ.get("LIGHTLY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {exc}"


def require_pg() -> None:
    reason = _pg_available()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (under CI=true PostgreSQL is required; .ci/run starts it)")
        pytest.skip(reason)


@contextlib.contextmanager
def fresh_database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'lightly.sqlite3'}"
        return
    require_pg()
    import psycopg

    name = f"lightly_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Backend:
    """A database plus the server processes started on it."""

    kind: str
    database_url: str
    tmp: Path
    artifacts_dir: Path
    servers: list[ServerProcess] = field(default_factory=list)

    def start_server(self, *extra: str, lease_seconds: float = 120.0) -> ServerProcess:
        port = free_port()
        server = start_server(
            self.database_url,
            self.tmp / f"server-{port}.log",
            *extra,
            port=port,
            artifacts_dir=self.artifacts_dir,
            lease_seconds=lease_seconds,
        )
        self.servers.append(server)
        return server

    def token(self, user: str | None = None) -> str:
        """A token for a new (or named) user, created the way an admin does: the CLI."""
        return create_token(self.database_url, user or f"user-{secrets.token_hex(4)}")

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


@contextlib.contextmanager
def backend(kind: str, tmp: Path) -> Iterator[Backend]:
    with fresh_database(kind, tmp) as url:
        b = Backend(kind, url, tmp, tmp / "artifacts")
        try:
            yield b
        finally:
            b.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """One database per test module, for each of SQLite and PostgreSQL."""
    with backend(request.param, tmp_path_factory.mktemp(request.param)) as b:
        yield b


@pytest.fixture(scope="module")
def server(db_backend: Backend) -> ServerProcess:
    """One server process per module and database kind."""
    return db_backend.start_server()


@pytest.fixture
def token(db_backend: Backend, server: ServerProcess) -> str:
    """A fresh user per test, so tests never see each other's objects."""
    return db_backend.token()


class Api:
    """A thin raw-HTTP caller for protocol tests (the worker's and the operator's view)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.http = httpx.Client(base_url=base, timeout=30)

    def call(self, method: str, path: str, *, params: dict | None = None, **kw) -> httpx.Response:
        p = dict(params or {})
        if self.token is not None:
            p["token"] = self.token
        return self.http.request(method, path, params=p, **kw)

    def get(self, path: str, **kw) -> httpx.Response:
        return self.call("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.call("POST", path, **kw)

    def put(self, path: str, **kw) -> httpx.Response:
        return self.call("PUT", path, **kw)

    def delete(self, path: str, **kw) -> httpx.Response:
        return self.call("DELETE", path, **kw)


@pytest.fixture
def api(server: ServerProcess, token: str) -> Iterator[Api]:
    a = Api(server.url, token)
    yield a
    a.http.close()


@pytest.fixture
def lightly_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment for the real, unmodified lightly client pointed at our server."""
    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", server.url)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return server.url


@pytest.fixture
def client(lightly_env: str, token: str):
    """An ``ApiWorkflowClient`` of lightly==1.5.26 for a fresh user."""
    from lightly.api import ApiWorkflowClient

    return ApiWorkflowClient(token=token)


def run_sql(db_backend: Backend, statement: str, **params) -> list:  # type: ignore[no-untyped-def]
    """One SQL statement straight on a backend's database (what the server stored, behind its API)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db_backend.database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            res = conn.execute(text(statement), params)
            return list(res.all()) if res.returns_rows else []
    finally:
        engine.dispose()
