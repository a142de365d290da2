"""An idle long poll costs no database work: labels kept per process, lease renewals written in batches.

The batch must keep every promise of the per-poll write it replaced: a polling worker keeps its lease,
an OFFLINE worker that polls is IDLE again, a worker that said goodbye after its last poll stays
OFFLINE, a deleted worker's next poll is refused, and renewals survive a failed write.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, Backend, ServerProcess, fresh_database
from flows import ok, queue, register, set_state, wait_until
from lightly_protocol import paths
from lightly_protocol.models import WorkerCreateRequest
from lightly_server import store
from lightly_server.db import Database
from lightly_server.ids import now_ms
from lightly_server.longpoll.polling_workers import PollingWorkers
from lightly_server.schema import workers
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(request.param, tmp_path) as url:
        database = Database(url)
        database.migrate()
        yield database
        database.dispose()


def _worker(db: Database, name: str, labels: list[str] | None = None) -> str:
    with db.write() as conn:
        return store.register_worker(conn, "user-a", WorkerCreateRequest(name=name, labels=labels or []))


def _row(db: Database, wid: str):  # type: ignore[no-untyped-def]
    with db.read() as conn:
        return conn.execute(select(workers).where(workers.c.id == wid)).one()


def _set(db: Database, wid: str, **values: object) -> None:
    with db.write() as conn:
        conn.execute(update(workers).where(workers.c.id == wid).values(**values))


def test_a_flush_renews_every_polled_lease_in_one_go(db: Database) -> None:
    ids = [_worker(db, f"worker-{i}") for i in range(1200)]  # more than one chunk of 500
    old = now_ms() - 60_000
    for wid in ids:
        _set(db, wid, last_seen_at=old, state="IDLE")
    polling = PollingWorkers(db, interval_s=1.0)
    for wid in ids:
        polling.renew(wid, now_ms())
    assert _row(db, ids[0]).last_seen_at == old  # nothing written before the flush
    assert polling.flush() == 1200
    assert polling.pending == 0
    assert min(_row(db, wid).last_seen_at for wid in ids[::97]) > old + 50_000


def test_an_offline_worker_that_polled_is_idle_but_a_goodbye_after_the_poll_is_kept(db: Database) -> None:
    marked, goodbye = _worker(db, "marked-offline"), _worker(db, "said-goodbye")
    polled_at = now_ms()
    # marked OFFLINE by a lease sweep (e.g. during an outage) *before* it polled
    _set(db, marked, state="OFFLINE", last_modified_at=polled_at - 5_000)
    # reported OFFLINE itself *after* its last poll (a pod that stops)
    _set(db, goodbye, state="OFFLINE", last_modified_at=polled_at + 5_000)
    polling = PollingWorkers(db, interval_s=1.0)
    polling.renew(marked, polled_at)
    polling.renew(goodbye, polled_at)
    polling.flush()
    assert _row(db, marked).state == "IDLE"
    assert _row(db, goodbye).state == "OFFLINE"


def test_a_flush_forgets_workers_deleted_elsewhere(db: Database) -> None:
    kept, deleted = _worker(db, "kept-worker", ["gpu"]), _worker(db, "deleted-worker")
    polling = PollingWorkers(db, interval_s=1.0)
    polling.remember("user-a", kept, ["gpu"])
    polling.remember("user-a", deleted, [])
    with db.write() as conn:  # e.g. deregistered through another replica
        store.delete_worker(conn, "user-a", deleted)
    polling.renew(kept, now_ms())
    polling.renew(deleted, now_ms())
    assert polling.flush() == 1
    assert polling.labels("user-a", kept) == frozenset({"gpu"})
    assert polling.labels("user-a", deleted) is None  # its next poll reads the row: 404
    assert polling.labels("user-b", kept) is None  # another user's token never sees it


def test_renewals_survive_a_failed_write(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    wid = _worker(db, "patient-worker")
    _set(db, wid, last_seen_at=now_ms() - 60_000)
    polling = PollingWorkers(db, interval_s=1.0)
    polling.renew(wid, now_ms())
    real = store.renew_polled_leases

    def unreachable(conn, polled):  # type: ignore[no-untyped-def]
        raise OperationalError("UPDATE workers", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "renew_polled_leases", unreachable)
    with pytest.raises(OperationalError):
        polling.flush()
    assert polling.pending == 1  # kept for the next flush
    monkeypatch.setattr(store, "renew_polled_leases", real)
    assert polling.flush() == 1
    assert _row(db, wid).last_seen_at > now_ms() - 10_000


# ------------------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def short_lease_server(db_backend: Backend, server: ServerProcess) -> ServerProcess:
    return db_backend.start_server(lease_seconds=1.5)


@pytest.fixture
def lapi(short_lease_server: ServerProcess, token: str) -> Api:
    return Api(short_lease_server.url, token)


def _state(api: Api, wid: str) -> str:
    return ok(api.get(paths.worker(wid)))["state"]


def test_a_worker_that_only_polls_keeps_its_lease_for_many_leases(lapi: Api) -> None:
    poller, silent = register(lapi, labels=["gpu"]), register(lapi)
    set_state(lapi, poller, "IDLE")
    set_state(lapi, silent, "IDLE")
    deadline = time.monotonic() + 5  # more than three leases of 1.5 s
    while time.monotonic() < deadline:
        assert queue(lapi, poller, wait=0.5) == []
    assert _state(lapi, poller) == "IDLE"
    assert _state(lapi, silent) == "OFFLINE"


def test_a_known_worker_marked_offline_is_idle_again_at_its_next_poll(lapi: Api) -> None:
    wid = register(lapi)
    set_state(lapi, wid, "IDLE")
    queue(lapi, wid)  # the process now knows it (labels kept)
    wait_until(lambda: _state(lapi, wid) == "OFFLINE", timeout=20)
    queue(lapi, wid)
    assert _state(lapi, wid) == "IDLE"


def test_a_goodbye_after_a_poll_is_not_undone_by_the_renewal(lapi: Api) -> None:
    wid = register(lapi)
    set_state(lapi, wid, "IDLE")
    queue(lapi, wid)  # a renewal is now pending
    set_state(lapi, wid, "OFFLINE")
    time.sleep(1.0)  # several flushes (every lease/8)
    assert _state(lapi, wid) == "OFFLINE"


def test_a_deleted_workers_next_poll_is_refused(lapi: Api) -> None:
    wid = register(lapi)
    queue(lapi, wid)
    ok(lapi.delete(paths.worker(wid)), 204)
    r = lapi.get(paths.worker_schedule(wid), params={"state": "OPEN"})
    assert r.status_code == 404, r.text
    r = lapi.get(paths.worker_work(wid))
    assert r.status_code == 404, r.text
