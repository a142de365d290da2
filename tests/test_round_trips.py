"""The database statements on the dispatch path: a schedule POST and a claim, on each backend.

Each statement is a round trip to the database (on PostgreSQL also a wake-up of its backend process),
and on a loaded 2-core machine those round trips set the latency of a run from its POST to its claim
(docs/benchmarks.md, issue 14). In-process, so the statements can be counted at the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, fresh_database
from flows import config, dataset, lock, ok, queue, register, schedule
from lightly_protocol import paths
from lightly_protocol.enums import ScheduledState


@pytest.fixture(params=["sqlite", "postgresql"])
def counted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Api, list[str]]]:
    """(backend kind, an API caller of an in-process server, the statements its engine ran)."""
    from lightly_server.app import create_app
    from lightly_server.auth import create_token
    from lightly_server.settings import ServerSettings
    from sqlalchemy import event
    from starlette.testclient import TestClient

    with fresh_database(request.param, tmp_path) as url:
        app = create_app(ServerSettings(database_url=url, artifacts_dir=tmp_path / "artifacts"))
        server = app.state.server
        statements: list[str] = []

        def record(_conn: object, _cursor: object, sql: str, *_rest: object) -> None:
            statements.append(" ".join(sql.split()))

        event.listen(server.db.engine, "before_cursor_execute", record)
        with TestClient(app) as http:
            api = Api("http://testserver", create_token(server.db, "alice"))
            api.http = http
            yield request.param, api, statements


def test_a_schedule_post_is_one_read_and_one_insert_that_also_sends_the_wake_up(
    counted: tuple[str, Api, list[str]],
) -> None:
    kind, api, statements = counted
    cid, ds = config(api), dataset(api)
    statements.clear()
    sid = schedule(api, ds, cid)
    shown = "\n".join(statements)
    if kind == "postgresql":
        assert len(statements) == 2, shown
        assert statements[1].startswith("WITH created AS (INSERT INTO scheduled_runs") and "pg_notify" in shown
        assert "NOTIFY lightly_schedule" not in shown  # not a statement of its own
    else:
        assert len(statements) == 3 and statements[0] == "BEGIN IMMEDIATE", shown
    assert "FROM datasets LEFT OUTER JOIN worker_configs" in statements[-2], shown
    wid = register(api)
    assert [r["id"] for r in queue(api, wid)] == [sid]


def test_a_claim_is_one_read_and_one_write(counted: tuple[str, Api, list[str]]) -> None:
    kind, api, statements = counted
    cid, ds, wid = config(api), dataset(api), register(api)
    sid = schedule(api, ds, cid)
    statements.clear()
    ok(lock(api, ds, wid, sid), 204)
    shown = "\n".join(statements)
    writes = [s for s in statements if s.startswith(("UPDATE", "WITH"))]
    if kind == "postgresql":
        assert len(statements) == 2, shown
        assert writes[0].startswith("WITH claimed AS (UPDATE scheduled_runs") and "UPDATE workers" in writes[0]
    else:  # the read-only precheck (its own read transaction), then the write transaction
        assert statements[0] == "BEGIN DEFERRED" and statements[2] == "BEGIN IMMEDIATE", shown
        assert len(writes) == 2 and len(statements) == 6, shown
    statements.clear()
    ok(lock(api, ds, wid, sid), 204)  # our own claim again: answered, nothing written
    assert not [s for s in statements if s.startswith(("UPDATE", "WITH"))], "\n".join(statements)
    assert stored(api, sid, wid) == (ScheduledState.LOCKED, wid, True)


def stored(api: Api, scheduled_id: str, worker_id: str) -> tuple[str, str, bool]:
    """(state, holder) of a scheduled run as stored, and whether the claim renewed the worker's lease."""
    from lightly_server.schema import scheduled_runs, workers
    from sqlalchemy import select

    server = api.http.app.state.server  # type: ignore[attr-defined]
    with server.db.read() as conn:
        s = conn.execute(select(scheduled_runs).where(scheduled_runs.c.id == scheduled_id)).one()
        seen = conn.execute(select(workers.c.last_seen_at).where(workers.c.id == worker_id)).scalar_one()
    return s.state, s.worker_id, seen >= s.last_modified_at


def test_the_merged_reads_answer_the_same_errors(counted: tuple[str, Api, list[str]]) -> None:
    """A missing dataset, config or worker: the same 404s as before the reads were merged; a claim of
    another worker's run still a 409; a worker without the run's labels a 409 that names them."""
    _, api, _ = counted
    cid, ds, wid = config(api), dataset(api), register(api)
    missing = "0" * 24
    body = {"configId": cid, "priority": "MID", "runsOn": []}
    r = api.post(paths.dataset_schedule(missing), json=body)
    assert (r.status_code, r.json()["code"]) == (404, "DATASET_UNKNOWN"), r.text
    r = api.post(paths.dataset_schedule(ds), json={**body, "configId": missing})
    assert (r.status_code, r.json()["code"]) == (404, "DOCKER_WORKER_CONFIG_UNKNOWN"), r.text
    bare = ok(api.post(paths.DATASETS, json={"name": "no-datasource"}), 201)["id"]
    r = api.post(paths.dataset_schedule(bare), json=body)
    assert r.status_code == 400 and "no INPUT datasource" in r.json()["error"], r.text

    sid = schedule(api, ds, cid)
    r = lock(api, ds, missing, sid)
    assert (r.status_code, r.json()["code"]) == (404, "DOCKER_WORKER_UNKNOWN"), r.text
    other_ds = dataset(api)
    r = lock(api, other_ds, wid, sid)
    assert (r.status_code, r.json()["code"]) == (404, "DOCKER_WORKER_SCHEDULE_UNKNOWN"), r.text
    gpu_run = schedule(api, other_ds, cid, runs_on=["gpu"])
    r = lock(api, other_ds, wid, gpu_run)
    assert r.status_code == 409 and "needs runsOn ['gpu']" in r.json()["error"], r.text
    ok(lock(api, ds, wid, sid), 204)
    r = lock(api, ds, register(api), sid)
    assert r.status_code == 409 and "not OPEN" in r.json()["error"], r.text
