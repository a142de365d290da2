"""Tokens: ``create-token --label``, ``list-tokens``, ``revoke-token`` (the real CLI) against real servers
over HTTP on SQLite and PostgreSQL; the bound on revocation (``auth.TOKEN_TTL_S``) on every process and
replica, long polls in flight included; the token cache under a flood of unknown tokens."""

from __future__ import annotations

import secrets
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import Api, Backend, run_sql
from flows import config, dataset, ok, queue, register, schedule
from lightly_devkit.servers import SERVER_CLI, ServerProcess, loopback_env
from lightly_protocol import paths

#: the documented bound (docs/server.md, "Tokens"): a revoked token is refused this long after revoke-token
REVOCATION_BOUND_S = 5.0
#: slack for a loaded test machine on top of the bound
SLACK_S = 3.0


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVER_CLI, *args], capture_output=True, text=True, input=stdin, env=loopback_env(), timeout=60
    )


def create(db: Backend, user: str, label: str | None = None) -> str:
    out = cli("create-token", "--database", db.database_url, "--user", user, *(["--label", label] if label else []))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def listed(db: Backend) -> tuple[str, list[list[str]]]:
    """(the whole output, its lines split into columns, header first)."""
    out = cli("list-tokens", "--database", db.database_url)
    assert out.returncode == 0, out.stderr
    return out.stdout, [line.split("\t") for line in out.stdout.splitlines()]


def row_of(rows: list[list[str]], label: str) -> list[str]:
    found = [r for r in rows[1:] if r[1] == label]
    assert len(found) == 1, rows
    return found[0]


def status(server: ServerProcess, token: str, path: str = paths.DATASETS, **params: str) -> int:
    r = httpx.get(server.url + path, params={"token": token, **params}, timeout=30, trust_env=False)
    return r.status_code


def refused_within(
    servers: list[ServerProcess], token: str, since: float, path: str = paths.DATASETS, confirm: int = 1
) -> float:
    """Seconds from ``since`` until every server answered 401 ``confirm`` times in a row (each asked until it
    does, within the bound plus slack; several answers in a row for a server of several processes, whose
    connections land on any of them); fails with every status seen."""
    seen: list[tuple[float, str, int]] = []
    pending = list(servers)
    streak = {s.url: 0 for s in servers}
    while pending:
        elapsed = time.monotonic() - since
        for s in list(pending):
            for _ in range(confirm):
                code = status(s, token, path)
                seen.append((round(time.monotonic() - since, 2), s.url, code))
                streak[s.url] = streak[s.url] + 1 if code == 401 else 0
                if code != 401:
                    break
            if streak[s.url] >= confirm:
                pending.remove(s)
        if pending and elapsed > REVOCATION_BOUND_S + SLACK_S:
            raise AssertionError(f"revoked token still accepted after {elapsed:.1f} s: {seen[-20:]}")
        if pending:
            time.sleep(0.2)
    return time.monotonic() - since


def test_create_with_label_list_revoke_and_the_api_refuses_it_within_the_bound(
    db_backend: Backend, server: ServerProcess
) -> None:
    user = f"team-{secrets.token_hex(3)}"
    label = f"fleet-{secrets.token_hex(3)}"
    token = create(db_backend, user, label)
    other = create(db_backend, user, f"{label}-other")
    api = Api(server.url, token)
    ok(api.get(paths.DATASETS))  # cached by the server now
    wid = register(api)
    queue(api, wid)
    queue(api, wid)  # the steady state: answered by the fast path, from the token cache

    out, rows = listed(db_backend)
    assert rows[0] == ["FINGERPRINT", "LABEL", "USER", "CREATED", "LAST_USED"], out
    assert token not in out and other not in out
    from lightly_server.auth import hash_token

    assert hash_token(token) not in out  # only a short fingerprint of the hash
    fingerprint, _, shown_user, created, last_used = row_of(rows, label)
    assert shown_user == user and hash_token(token).startswith(fingerprint) and len(fingerprint) == 12, rows
    assert created.endswith("Z") and last_used != "never", rows  # used above (to the minute)

    revoked = cli("revoke-token", "--database", db_backend.database_url, fingerprint)
    since = time.monotonic()
    assert revoked.returncode == 0, revoked.stderr
    assert token not in revoked.stdout + revoked.stderr and fingerprint in revoked.stdout
    took = refused_within([server], token, since)
    took_poll = refused_within([server], token, since, paths.worker_schedule(wid))
    print(f"refused after {took:.1f} s (the API), {took_poll:.1f} s (the worker's poll)")
    r = httpx.get(server.url + paths.DATASETS, params={"token": token}, trust_env=False)
    assert r.json()["code"] == "UNAUTHORIZED", r.text

    assert status(server, other) == 200  # the user's other token is untouched
    _, rows = listed(db_backend)
    assert [r for r in rows if r[1] == label] == [] and row_of(rows, f"{label}-other")


def test_revoke_the_token_itself_from_stdin(db_backend: Backend, server: ServerProcess) -> None:
    token = create(db_backend, f"u-{secrets.token_hex(3)}", "stdin")
    assert status(server, token) == 200
    out = cli("revoke-token", "--database", db_backend.database_url, "--token-file", "-", stdin=token + "\n")
    since = time.monotonic()
    assert out.returncode == 0, out.stderr
    assert token not in out.stdout + out.stderr
    refused_within([server], token, since)
    again = cli("revoke-token", "--database", db_backend.database_url, "--token-file", "-", stdin=token)
    assert again.returncode == 2 and "no token with the given token" in again.stderr, again.stderr
    assert token not in again.stderr


def test_unknown_or_malformed_fingerprint_is_a_clear_error(db_backend: Backend, server: ServerProcess) -> None:
    token = create(db_backend, f"u-{secrets.token_hex(3)}", "kept")
    before, _ = listed(db_backend)
    unknown = cli("revoke-token", "--database", db_backend.database_url, "0123456789ab")
    assert unknown.returncode == 2, unknown
    assert "no token with fingerprint 0123456789ab" in unknown.stderr and "FINGERPRINT" in unknown.stderr
    assert "list-tokens" in unknown.stderr
    malformed = cli("revoke-token", "--database", db_backend.database_url, "not-a-fingerprint")
    assert malformed.returncode == 2 and "FINGERPRINT column of 'lightly-server list-tokens'" in malformed.stderr
    # the token itself where the fingerprint goes: refused, and never printed back
    pasted = cli("revoke-token", "--database", db_backend.database_url, token)
    assert pasted.returncode == 2 and "--token-file" in pasted.stderr, pasted
    assert token not in pasted.stdout + pasted.stderr
    nothing = cli("revoke-token", "--database", db_backend.database_url)
    assert nothing.returncode == 2 and "FINGERPRINT" in nothing.stderr and "--token-file" in nothing.stderr
    bad_label = cli("create-token", "--database", db_backend.database_url, "--user", "x", "--label", "a\nb")
    assert bad_label.returncode == 2 and "--label must be 1 to 200 printable characters" in bad_label.stderr
    after, _ = listed(db_backend)
    assert after == before and status(server, token) == 200  # nothing was revoked


def test_a_long_poll_waiting_when_its_token_is_revoked_answers_401_and_the_run_goes_to_the_next_worker(
    db_backend: Backend, server: ServerProcess
) -> None:
    user = f"u-{secrets.token_hex(3)}"
    fleet = Api(server.url, create(db_backend, user, "fleet-revoked"))
    admin = Api(server.url, create(db_backend, user, "admin"))
    wid, cid, ds = register(fleet), config(admin), dataset(admin)
    queue(fleet, wid)  # the worker is known to this process: its long poll takes the fast path
    answer: dict[str, httpx.Response] = {}

    def long_poll() -> None:
        params = {"state": "OPEN", "waitSeconds": "40"}
        answer["poll"] = fleet.get(paths.worker_schedule(wid), params=params)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.5)
    fp = row_of(listed(db_backend)[1], "fleet-revoked")[0]
    assert cli("revoke-token", "--database", db_backend.database_url, fp).returncode == 0
    time.sleep(REVOCATION_BOUND_S + 0.5)  # past the bound: the cache entry that let the poll in is stale
    sid = schedule(admin, ds, cid)
    poller.join(timeout=30)
    assert not poller.is_alive(), "the waiting poll did not answer after the run was scheduled"
    r = answer["poll"]
    assert r.status_code == 401, f"a poll waiting with a revoked token answered {r.status_code}: {r.text}"
    other = register(admin)
    assert [x["id"] for x in queue(admin, other, wait=10)] == [sid]  # handed on at once, not after 2 s


@pytest.fixture
def pg_backend(db_backend: Backend) -> Backend:
    if db_backend.kind != "postgresql":
        pytest.skip("several server processes share a database on PostgreSQL only")
    return db_backend


def test_revocation_is_seen_by_every_replica_and_process_on_postgresql(
    pg_backend: Backend, server: ServerProcess
) -> None:
    replica = pg_backend.start_server()
    multi = pg_backend.start_server("--processes", "2")
    token = create(pg_backend, f"u-{secrets.token_hex(3)}", "fleet-replicas")
    for s in (server, replica, multi):
        for _ in range(6):  # several connections: the kernel spreads them over both processes of `multi`
            assert status(s, token) == 200
    fp = row_of(listed(pg_backend)[1], "fleet-replicas")[0]
    since = time.monotonic()
    assert cli("revoke-token", "--database", pg_backend.database_url, fp).returncode == 0
    took = refused_within([server, replica, multi], token, since, confirm=6)
    print(f"refused by 3 replicas (one with 2 processes) after {took:.1f} s")
    for _ in range(10):  # and stays refused on every process
        assert status(multi, token) == 401
    replica.stop()
    multi.stop()


def test_a_database_of_schema_version_2_is_migrated(db_backend: Backend, server: ServerProcess) -> None:
    """Labels and last use are new columns (schema version 3): an older database gets them on start."""
    run_sql(db_backend, "ALTER TABLE tokens DROP COLUMN label")
    run_sql(db_backend, "ALTER TABLE tokens DROP COLUMN last_used_at")
    run_sql(db_backend, "UPDATE server_settings SET value = '2' WHERE key = 'schema_version'")
    token = create(db_backend, f"u-{secrets.token_hex(3)}", "after-migration")
    assert run_sql(db_backend, "SELECT value FROM server_settings WHERE key = 'schema_version'") == [("3",)]
    assert row_of(listed(db_backend)[1], "after-migration")[3].endswith("Z")
    assert status(server, token) == 200  # the module's server works on the migrated database


def test_a_flood_of_unknown_tokens_does_not_evict_a_valid_one(tmp_path: Path) -> None:
    """Unit: the token cache keeps a valid token through 20,000 unknown ones (no database read for it)."""
    from lightly_server.auth import TokenCache, create_token
    from lightly_server.db import Database
    from sqlalchemy import event

    db = Database(f"sqlite:///{tmp_path / 'cache.sqlite3'}")
    db.migrate()
    try:
        good = create_token(db, "alice")
        cache = TokenCache(db, ttl_s=600)
        user = cache.user_for(good)
        assert user is not None
        for _ in range(20_000):
            assert cache.user_for(secrets.token_urlsafe(32)) is None
        statements: list[str] = []
        event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert cache.user_for(good) == user
        assert cache.cached(good) == (True, user)
        assert statements == [], statements  # served from the cache
    finally:
        db.dispose()
