"""Issue 14: a PostgreSQL that refuses connections answers 503 with Retry-After and Lightly's error body.

Real PostgreSQL, real server processes: "too many connections" is a role whose CONNECTION LIMIT
drops to 0 while its backends are terminated (what PostgreSQL answers when ``max_connections`` or a
role's limit is reached: SQLSTATE 53300); "server down" is PostgreSQL reached through a loopback
forwarder that is then stopped, so the server's port refuses connections; "a host that drops packets" is
the same forwarder accepting connections it never answers (the engine's connect timeout). In all cases the server
must say what is wrong and what to do, and answer normally again once the database does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import PG_ADMIN_URL, Api, require_pg
from lightly_devkit.net import TcpForwarder
from lightly_devkit.servers import ServerProcess, create_token, start_server
from lightly_protocol import paths
from lightly_protocol.client import error_detail
from sqlalchemy.engine import make_url


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_role_db() -> Iterator[tuple[str, str]]:
    """(role, database): a fresh login role owning a fresh database; dropped afterwards."""
    require_pg()
    role = f"lightly_limited_{secrets.token_hex(4)}"
    name = f"lightly_test_{secrets.token_hex(6)}"
    _admin(f'CREATE ROLE "{role}" LOGIN')
    _admin(f'CREATE DATABASE "{name}" OWNER "{role}"')
    try:
        yield role, name
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _admin(f'DROP ROLE IF EXISTS "{role}"')


def _server(url: str, tmp_path: Path) -> tuple[ServerProcess, Api]:
    server = start_server(url, tmp_path / "server.log", artifacts_dir=tmp_path / "artifacts")
    return server, Api(server.url, create_token(url, "alice"))


def _first(
    api: Api, server: ServerProcess, want: Callable[[httpx.Response], bool], timeout: float = 30
) -> httpx.Response:
    """The first answer of GET /v1/docker/worker that ``want`` accepts (the pool notices a change on use)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        r = api.get(paths.WORKERS)
        if want(r):
            return r
        seen.append(f"{r.status_code} {r.text[:200]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no wanted answer in {timeout} s; saw {seen[-5:]}\nserver log:\n{server.log()[-3000:]}")
        time.sleep(0.3)


def _assert_unavailable(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1, r.headers
    body = r.json()
    assert set(body) == {"code", "error"}, body
    assert body["code"] == "SERVICE_UNAVAILABLE", body
    message = error_detail(r.text)
    assert message.startswith("database unavailable: "), message
    for word in words:
        assert word in message, message


def _first_unavailable(api: Api, server: ServerProcess, *words: str, timeout: float = 30) -> None:
    """The first 503 that says ``words``. A connection used a moment ago is not pinged (db.PING_IDLE_S), so
    the request on it may learn of the outage itself: a well-formed 503 as well, and at most one, since
    the pool drops every connection at the first dead one; the next requests cannot connect and say why."""
    failed: list[httpx.Response] = []

    def says(r: httpx.Response) -> bool:
        if r.status_code != 200:
            failed.append(r)
        return r.status_code != 200 and all(w in error_detail(r.text) for w in words)

    r = _first(api, server, says, timeout=timeout)
    for answer in failed:
        _assert_unavailable(answer)
    assert len(failed) <= 2, [a.text for a in failed]
    _assert_unavailable(r, *words)


def test_too_many_connections_answer_503_until_the_database_accepts_again(
    pg_role_db: tuple[str, str], tmp_path: Path
) -> None:
    role, name = pg_role_db
    url = make_url(PG_ADMIN_URL).set(username=role, password=None, database=name).render_as_string(False)
    server, api = _server(url, tmp_path)
    try:
        assert api.get(paths.WORKERS).status_code == 200
        _admin(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
        _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
        _first_unavailable(api, server, "too many connections", "max_connections", "pool")
        assert server.proc.poll() is None, server.log()
        _admin(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')
        _first(api, server, lambda r: r.status_code == 200)
    finally:
        server.stop()


@pytest.fixture
def behind_forwarder(pg_role_db: tuple[str, str], tmp_path: Path) -> Iterator[tuple[TcpForwarder, ServerProcess, Api]]:
    """A server whose PostgreSQL is reached through a loopback forwarder the test can take away."""
    role, name = pg_role_db
    admin = make_url(PG_ADMIN_URL)
    forwarder = TcpForwarder((admin.host or "127.0.0.1", admin.port or 5432)).start()
    url = admin.set(username=role, password=None, host="127.0.0.1", port=forwarder.port, database=name)
    server, api = _server(url.render_as_string(False), tmp_path)
    try:
        assert api.get(paths.WORKERS).status_code == 200
        yield forwarder, server, api
    finally:
        server.stop()
        forwarder.stop()


def test_a_database_server_that_is_down_answers_503_until_it_is_back(
    behind_forwarder: tuple[TcpForwarder, ServerProcess, Api],
) -> None:
    forwarder, server, api = behind_forwarder
    forwarder.stop()  # PostgreSQL is gone from the server's point of view: its port refuses
    _first_unavailable(api, server, "cannot connect", "check that PostgreSQL runs")
    assert server.proc.poll() is None, server.log()
    forwarder.start()
    _first(api, server, lambda r: r.status_code == 200)


def test_a_database_host_that_never_answers_gives_503_after_the_connect_timeout(
    behind_forwarder: tuple[TcpForwarder, ServerProcess, Api],
) -> None:
    forwarder, server, api = behind_forwarder
    forwarder.stop()
    forwarder.silent = True  # the port accepts, PostgreSQL never answers: no request may hang on it
    forwarder.start()
    _first_unavailable(api, server, "cannot connect", "timeout", timeout=60)
    assert server.proc.poll() is None, server.log()
    forwarder.stop()
    forwarder.silent = False
    forwarder.start()
    _first(api, server, lambda r: r.status_code == 200, timeout=60)


# ---------------------------------------------------------------------------- the pool's ping


def test_a_pooled_connection_is_pinged_only_after_sitting_idle_and_replaced_when_dead(
    pg_role_db: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightly_server import db as dbmod
    from sqlalchemy import text

    role, name = pg_role_db
    engine = dbmod.make_engine(
        make_url(PG_ADMIN_URL).set(username=role, password=None, database=name).render_as_string(False)
    )
    pings: list[int] = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(1) or real_ping(c))

    def backend_pid() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())

    try:
        first = backend_pid()
        for _ in range(5):  # back to back: the same hot connection (LIFO), no ping
            assert backend_pid() == first
        assert pings == []
        _admin(f"SELECT pg_terminate_backend({first})")
        time.sleep(dbmod.PING_IDLE_S + 0.2)
        second = backend_pid()  # idle long enough: pinged, found dead, replaced without an error
        assert pings, "an idle connection was handed out without a ping"
        assert second != first
    finally:
        engine.dispose()
