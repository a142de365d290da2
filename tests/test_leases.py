"""Leases: a worker that stops reporting loses its run to another worker; nothing is lost."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Api, Backend, ServerProcess, backend, fresh_database
from flows import (
    config,
    dataset,
    lock,
    ok,
    queue,
    register,
    run_state,
    schedule,
    scheduled_state,
    set_state,
    start_run,
    wait_until,
)


@pytest.fixture(scope="module")
def short_lease_server(db_backend: Backend, server: ServerProcess) -> ServerProcess:
    return db_backend.start_server("--max-attempts", "2", lease_seconds=1.5)


@pytest.fixture
def lapi(short_lease_server: ServerProcess, token: str) -> Api:
    return Api(short_lease_server.url, token)


def test_silent_worker_goes_offline_and_its_run_is_picked_up_by_another(lapi: Api) -> None:
    lost, healthy = register(lapi, "lost-worker"), register(lapi, "healthy-worker")
    ds, cid = dataset(lapi), config(lapi)
    sid = schedule(lapi, ds, cid)
    set_state(lapi, lost, "BUSY")
    ok(lock(lapi, ds, lost, sid), 204)
    rid = start_run(lapi, ds, sid)
    run_state(lapi, rid, "EMBEDDING")
    # the lost worker now says nothing more; the healthy one keeps polling (that renews its lease)
    set_state(lapi, healthy, "IDLE")
    offered = wait_until(lambda: queue(lapi, healthy, wait=1), timeout=20)
    assert [r["id"] for r in offered] == [sid]

    assert ok(lapi.get(f"/v1/docker/worker/{lost}"))["state"] == "OFFLINE"
    assert ok(lapi.get(f"/v1/docker/worker/{healthy}"))["state"] == "IDLE"
    crashed = ok(lapi.get(f"/v1/docker/runs/{rid}"))
    assert crashed["state"] == "CRASHED" and "lease expired" in crashed["message"]
    # the lost worker wakes up and tries to continue: it is told clearly
    late = lapi.put(f"/v1/docker/runs/{rid}", json={"state": "SAMPLING"})
    assert late.status_code == 409 and "CRASHED" in late.json()["error"]

    ok(lock(lapi, ds, healthy, sid), 204)
    rid2 = start_run(lapi, ds, sid)
    run_state(lapi, rid2, "COMPLETED")
    assert scheduled_state(lapi, ds, sid) == "DONE"


def test_reporting_worker_keeps_its_run(lapi: Api) -> None:
    wid = register(lapi)
    ds, cid = dataset(lapi), config(lapi)
    sid = schedule(lapi, ds, cid)
    ok(lock(lapi, ds, wid, sid), 204)
    rid = start_run(lapi, ds, sid)
    for _ in range(8):  # 4 s of work, reporting every 0.5 s: longer than the 1.5 s lease
        time.sleep(0.5)
        ok(lapi.put(f"/v1/docker/runs/{rid}/logs", json=[{"ts": 1, "level": "INFO", "group": "g", "msg": "m"}]), 204)
    assert scheduled_state(lapi, ds, sid) == "LOCKED"
    run_state(lapi, rid, "COMPLETED")
    assert scheduled_state(lapi, ds, sid) == "DONE"


def test_retries_are_bounded(lapi: Api) -> None:
    ds, cid = dataset(lapi), config(lapi)
    sid = schedule(lapi, ds, cid)
    for _ in range(2):  # --max-attempts 2
        wid = register(lapi)
        wait_until(lambda: scheduled_state(lapi, ds, sid) == "OPEN")
        ok(lock(lapi, ds, wid, sid), 204)
        start_run(lapi, ds, sid)
    wait_until(lambda: scheduled_state(lapi, ds, sid) == "DONE", timeout=20)
    last = ok(lapi.get(f"/v1/docker/runs/schedule/{sid}"))
    assert last["state"] == "CRASHED" and "lease expired" in last["message"]


def _report(api: Api, wid: str, state: str, session: str | None):  # type: ignore[no-untyped-def]
    headers = {"X-Lightly-Worker-Session": session} if session else {}
    return api.put(f"/v1/docker/worker/{wid}", json={"state": state, "dockerVersion": "t"}, headers=headers)


def _owner(api: Api, ds: str, sid: str) -> str | None:
    rows = ok(api.get(f"/v1/datasets/{ds}/docker/worker/schedule", params={"states": ["OPEN", "LOCKED", "DONE"]}))
    return {r["id"]: r.get("owner") for r in rows}[sid]


def test_a_restarted_worker_process_releases_what_its_id_held(lapi: Api) -> None:
    """Issue 9.1: kill -9 and a restart with the same worker id (a pod restart) must not block the dataset."""
    wid = register(lapi)
    ds, cid = dataset(lapi), config(lapi)
    sid = schedule(lapi, ds, cid)
    ok(_report(lapi, wid, "IDLE", "process-one"), 204)
    ok(lock(lapi, ds, wid, sid), 204)
    rid = start_run(lapi, ds, sid)
    ok(_report(lapi, wid, "BUSY", "process-one"), 204)
    ok(_report(lapi, wid, "BUSY", "process-one"), 204)  # heartbeats of the same process keep the run
    assert scheduled_state(lapi, ds, sid) == "LOCKED" and _owner(lapi, ds, sid) == wid
    # the process is killed; the pod restarts it with the same id: its first report is IDLE, a new session
    ok(_report(lapi, wid, "IDLE", "process-two"), 204)
    assert scheduled_state(lapi, ds, sid) == "OPEN" and _owner(lapi, ds, sid) is None
    crashed = ok(lapi.get(f"/v1/docker/runs/{rid}"))
    assert crashed["state"] == "CRASHED" and "restarted" in crashed["message"]
    # the old process, were it still alive somewhere, is told it lost the id; its goodbye changes nothing
    stale = _report(lapi, wid, "BUSY", "process-one")
    assert stale.status_code == 409 and "another process" in stale.json()["error"]
    ok(_report(lapi, wid, "OFFLINE", "process-one"), 204)
    assert ok(lapi.get(f"/v1/docker/worker/{wid}"))["state"] == "IDLE"
    # the new process takes the run again and finishes it; the attempt was counted (--max-attempts 2)
    ok(lock(lapi, ds, wid, sid), 204)
    start_run(lapi, ds, sid)
    ok(_report(lapi, wid, "IDLE", "process-three"), 204)  # crashes again: the last attempt
    assert scheduled_state(lapi, ds, sid) == "DONE"
    last = ok(lapi.get(f"/v1/docker/runs/schedule/{sid}"))
    assert last["state"] == "CRASHED" and "restarted" in last["message"]


def test_reports_without_a_session_keep_the_plain_protocol(lapi: Api) -> None:
    wid = register(lapi)
    ds, cid = dataset(lapi), config(lapi)
    sid = schedule(lapi, ds, cid)
    ok(lock(lapi, ds, wid, sid), 204)
    rid = start_run(lapi, ds, sid)
    set_state(lapi, wid, "IDLE")
    assert scheduled_state(lapi, ds, sid) == "LOCKED"
    run_state(lapi, rid, "COMPLETED")
    bad = _report(lapi, wid, "IDLE", "no spaces allowed")
    assert bad.status_code == 400


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_sweep_gives_workers_a_full_lease_after_the_server_restarts(kind: str, tmp_path: Path) -> None:
    """Issue 9.5: an outage longer than the lease must not crash the runs of workers that are still working."""
    with backend(kind, tmp_path) as b:
        _outage(b)


def _outage(db_backend: Backend) -> None:
    first = db_backend.start_server(lease_seconds=2.0)
    api = Api(first.url, db_backend.token())
    wid = register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(_report(api, wid, "IDLE", "busy-process"), 204)
    ok(lock(api, ds, wid, sid), 204)
    rid = start_run(api, ds, sid)
    ok(_report(api, wid, "BUSY", "busy-process"), 204)
    first.proc.kill()
    first.proc.wait(10)
    time.sleep(3.0)  # the outage: longer than the lease
    second = db_backend.start_server(lease_seconds=2.0)
    api2 = Api(second.url, api.token)
    time.sleep(1.2)  # sweeps would have run (every 0.5 s) on the last-seen time from before the outage
    assert scheduled_state(api2, ds, sid) == "LOCKED", second.log()
    ok(_report(api2, wid, "BUSY", "busy-process"), 204)  # the worker's next heartbeat gets through
    time.sleep(1.5)
    assert scheduled_state(api2, ds, sid) == "LOCKED", second.log()
    assert ok(api2.get(f"/v1/docker/runs/{rid}"))["state"] == "STARTED"
    run_state(api2, rid, "COMPLETED")
    # a worker that really stays silent still loses its run, one lease after the restart at the latest
    wid2 = register(api2)
    sid2 = schedule(api2, ds, cid)
    ok(lock(api2, ds, wid2, sid2), 204)
    start_run(api2, ds, sid2)
    wait_until(lambda: scheduled_state(api2, ds, sid2) == "OPEN", timeout=10)
    second.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_schema_1_database_gains_the_worker_session_column(kind: str, tmp_path: Path) -> None:
    from lightly_server.db import Database
    from sqlalchemy import inspect, text

    with fresh_database(kind, tmp_path) as url:
        db = Database(url)
        db.migrate()
        with db.write() as conn:  # what a database of the previous schema looks like
            conn.execute(text("ALTER TABLE workers DROP COLUMN session_id"))
            conn.execute(text("ALTER TABLE tokens DROP COLUMN label"))  # and without version 3's columns
            conn.execute(text("ALTER TABLE tokens DROP COLUMN last_used_at"))
            conn.execute(text("UPDATE server_settings SET value = '1' WHERE key = 'schema_version'"))
        db.dispose()
        db = Database(url)
        db.migrate()
        assert "session_id" in {c["name"] for c in inspect(db.engine).get_columns("workers")}
        assert {"label", "last_used_at"} <= {c["name"] for c in inspect(db.engine).get_columns("tokens")}
        db.dispose()


def test_a_worker_marked_offline_that_polls_again_is_idle(lapi: Api) -> None:
    wid = register(lapi)
    set_state(lapi, wid, "IDLE")
    wait_until(lambda: ok(lapi.get(f"/v1/docker/worker/{wid}"))["state"] == "OFFLINE", timeout=20)
    queue(lapi, wid)  # e.g. after a long outage: it is polling, so it is alive and idle
    assert ok(lapi.get(f"/v1/docker/worker/{wid}"))["state"] == "IDLE"
