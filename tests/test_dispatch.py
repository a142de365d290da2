"""Dispatch semantics: order, label routing, the one-lock-per-dataset rule, long-poll wake-ups, races."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Api, Backend, ServerProcess
from flows import config, dataset, lock, ok, queue, register, run_state, schedule, start_run
from lightly_server import store
from lightly_server.db import Database
from lightly_server.schema import scheduled_runs
from sqlalchemy import select


def test_priority_then_fifo(api: Api) -> None:
    wid = register(api)
    cid = config(api)
    order = ["LOW", "MID", "CRITICAL", "HIGH", "MID", "CRITICAL"]
    sids = [schedule(api, dataset(api), cid, priority=p) for p in order]
    expected = [sids[i] for i in (2, 5, 3, 1, 4, 0)]  # CRITICAL > HIGH > MID > LOW, then first come first
    assert [r["id"] for r in queue(api, wid)] == expected
    labelled = ok(api.get("/v1/docker/worker/schedule", params={"state": "OPEN"}))
    assert [r["id"] for r in labelled] == expected


def test_runs_on_must_be_a_subset_of_worker_labels(api: Api) -> None:
    gpu, cpu, both = register(api, labels=["gpu"]), register(api, labels=["cpu"]), register(api, labels=["gpu", "big"])
    cid = config(api)
    ds_any, ds_gpu, ds_big = dataset(api), dataset(api), dataset(api)
    any_run = schedule(api, ds_any, cid, runs_on=[])
    gpu_run = schedule(api, ds_gpu, cid, runs_on=["gpu"])
    big_run = schedule(api, ds_big, cid, runs_on=["gpu", "big"])
    assert {r["id"] for r in queue(api, gpu)} == {any_run, gpu_run}
    assert {r["id"] for r in queue(api, cpu)} == {any_run}
    assert {r["id"] for r in queue(api, both)} == {any_run, gpu_run, big_run}
    by_labels = ok(api.get("/v1/docker/worker/schedule", params={"state": "OPEN", "labels": ["gpu"]}))
    assert {r["id"] for r in by_labels} == {any_run, gpu_run}
    r = lock(api, ds_big, cpu, big_run)
    assert r.status_code == 409 and "runsOn" in r.json()["error"]


def test_unlockable_runs_are_not_offered(api: Api) -> None:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    first, second = schedule(api, ds, cid), schedule(api, ds, cid)
    ok(lock(api, ds, wid, first), 204)
    assert queue(api, wid) == []
    with_unlockable = ok(
        api.get("/v1/docker/worker/schedule", params={"state": "OPEN", "includeUnlockableRuns": "True"})
    )
    assert [r["id"] for r in with_unlockable] == [second]


def _poll_in_background(api: Api, wid: str) -> tuple[threading.Thread, dict]:
    """A worker's 25 s long poll in a thread; the result dict gets its rows and how long it took."""
    result: dict = {}

    def poll() -> None:
        t0 = time.monotonic()
        result["rows"] = queue(api, wid, wait=25)
        result["elapsed"] = time.monotonic() - t0

    waiter = threading.Thread(target=poll)
    waiter.start()
    return waiter, result


def test_long_poll_answers_when_a_run_is_scheduled(api: Api) -> None:
    wid = register(api, labels=["gpu"])
    ds, cid = dataset(api), config(api)
    started = time.monotonic()
    assert queue(api, wid, wait=0.5) == []  # nothing to do: the wait runs out, an empty list comes back
    assert time.monotonic() - started >= 0.4

    waiter, result = _poll_in_background(api, wid)
    time.sleep(0.5)
    schedule(api, dataset(api), cid, runs_on=["cpu"])  # not for this worker: it keeps waiting
    time.sleep(0.3)
    assert waiter.is_alive()
    sid = schedule(api, ds, cid, runs_on=["gpu"])
    waiter.join(30)
    assert [r["id"] for r in result["rows"]] == [sid]
    assert result["elapsed"] < 15, "the long poll should answer on the schedule, not at the end of its wait"


def _race(apis: list[Api], workers: list[str], runs: list[tuple[str, str]]) -> Counter:
    """Every worker tries to lock every run, in its own thread; returns how often each run was won."""
    wins: Counter = Counter()
    lock_ = threading.Lock()

    def contend(i: int) -> None:
        api, wid = apis[i % len(apis)], workers[i]
        for ds, sid in runs[i % 3 :] + runs[: i % 3]:
            r = lock(api, ds, wid, sid)
            assert r.status_code in (204, 409), r.text
            if r.status_code == 204:
                with lock_:
                    wins[sid] += 1

    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(contend, range(len(workers))))
    return wins


def test_racing_workers_lock_each_run_exactly_once(api: Api) -> None:
    workers = [register(api) for _ in range(16)]
    cid = config(api)
    runs = [(ds, schedule(api, ds, cid)) for ds in (dataset(api) for _ in range(12))]
    wins = _race([api], workers, runs)
    assert wins == Counter({sid: 1 for _, sid in runs})


def test_one_locked_run_per_dataset_under_races(api: Api) -> None:
    workers = [register(api) for _ in range(12)]
    ds, cid = dataset(api), config(api)
    runs = [(ds, schedule(api, ds, cid)) for _ in range(6)]
    wins = _race([api], workers, runs)
    assert sum(wins.values()) == 1
    locked = ok(api.get(f"/v1/datasets/{ds}/docker/worker/schedule", params={"state": "LOCKED"}))
    assert len(locked) == 1


@pytest.fixture(scope="module")
def second_replica(db_backend: Backend, server: ServerProcess) -> ServerProcess:
    """A second server process on the same database, as a second replica behind a load balancer."""
    return db_backend.start_server()


def test_two_replicas_never_double_claim(api: Api, second_replica: ServerProcess) -> None:
    other = Api(second_replica.url, api.token)
    workers = [register(api) for _ in range(16)]
    cid = config(api)
    runs = [(ds, schedule(other, ds, cid)) for ds in (dataset(api) for _ in range(12))]
    wins = _race([api, other], workers, runs)
    assert wins == Counter({sid: 1 for _, sid in runs})


def test_long_poll_wakes_on_the_other_replica(api: Api, second_replica: ServerProcess) -> None:
    other = Api(second_replica.url, api.token)
    wid = register(api)
    ds, cid = dataset(api), config(api)
    waiter, result = _poll_in_background(api, wid)
    time.sleep(0.5)
    sid = schedule(other, ds, cid)  # scheduled through replica 2, the worker waits on replica 1
    waiter.join(30)
    assert [r["id"] for r in result["rows"]] == [sid]
    assert result["elapsed"] < 15, "the wake-up must cross replicas (LISTEN/NOTIFY or the SQLite re-check)"


def test_concurrent_long_polls_are_handed_different_runs(api: Api) -> None:
    workers = [register(api) for _ in range(3)]
    cid = config(api)
    polls = [_poll_in_background(api, w) for w in workers]
    time.sleep(0.5)
    sids = {schedule(api, dataset(api), cid) for _ in range(3)}
    for waiter, _ in polls:
        waiter.join(30)
    handed = [r["rows"] for _, r in polls]
    assert all(len(rows) == 1 for rows in handed)
    assert {rows[0]["id"] for rows in handed} == sids  # one run each, no two workers on the same run


def test_the_end_of_a_run_wakes_a_waiter_for_the_next_run_of_its_dataset(api: Api, db_backend: Backend) -> None:
    """A run's end wakes waiters only when its dataset holds OPEN runs back (``store.has_open_runs``);
    the waiter for the next run of that dataset gets it on the wake-up."""
    busy, waiting, third = register(api), register(api), register(api)
    ds, cid = dataset(api), config(api)
    first, second = schedule(api, ds, cid), schedule(api, ds, cid)
    ok(lock(api, ds, busy, first), 204)
    run = start_run(api, ds, first)
    other = dataset(api)
    lone = schedule(api, other, cid)
    ok(lock(api, other, third, lone), 204)
    waiter, result = _poll_in_background(api, waiting)
    time.sleep(0.5)
    assert waiter.is_alive(), result  # the dataset is locked: nothing for the waiter yet
    db = Database(db_backend.database_url)
    try:
        with db.read() as conn:
            assert store.has_open_runs(conn, first)  # its end must wake the waiter
            assert not store.has_open_runs(conn, lone)  # its end changes nothing a waiter could get
    finally:
        db.dispose()
    run_state(api, start_run(api, other, lone), "COMPLETED")
    time.sleep(0.3)
    assert waiter.is_alive(), result
    started = time.monotonic()
    run_state(api, run, "COMPLETED")
    waiter.join(30)
    assert [r["id"] for r in result["rows"]] == [second]
    assert time.monotonic() - started < 15, "the end of the run should wake the waiter, not the end of its wait"


def test_open_candidates_name_only_the_locked_datasets_that_hold_open_runs_back(api: Api, db_backend: Backend) -> None:
    """The broker's one query: the OPEN runs, and which of their datasets hold a lock. A dataset whose only
    run is LOCKED (a busy worker) is not in it: a fleet of thousands of busy workers costs the query nothing."""
    wid, other = register(api), register(api)
    cid = config(api)
    held, busy, free = dataset(api), dataset(api), dataset(api)
    held_first, held_second = schedule(api, held, cid), schedule(api, held, cid)
    busy_run, free_run = schedule(api, busy, cid), schedule(api, free, cid)
    ok(lock(api, held, wid, held_first), 204)
    ok(lock(api, busy, other, busy_run), 204)
    db = Database(db_backend.database_url)
    try:
        with db.read() as conn:
            user = conn.execute(select(scheduled_runs.c.user_id).where(scheduled_runs.c.id == free_run)).scalar()
            rows, locked = store.open_candidates(conn, [user])
    finally:
        db.dispose()
    mine = [r.id for r in rows if r.dataset_id in (held, busy, free)]
    assert mine == [held_second, free_run]  # dispatch order; the LOCKED ones are not candidates
    assert locked & {held, busy, free} == {held}
