"""Leases: a worker that stops reporting loses its run to another worker; nothing is lost."""

from __future__ import annotations

import time

import pytest
from conftest import Api, Backend, ServerProcess
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
