"""Workers: registration, state reports (with the ownership rule), liveness, deregistration."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.enums import ApiErrorCode, WorkerState
from lightly_protocol.models import WorkerCreateRequest
from sqlalchemy import Connection, select, update

from ..errors import conflict
from ..ids import new_id, now_ms
from ..schema import DbRow, workers
from .common import owned
from .leases import release_worker_runs
from .shards import release_worker_shards


def get_worker(conn: Connection, user_id: str, worker_id: str) -> DbRow:
    return owned(conn, workers, worker_id, user_id, ApiErrorCode.DOCKER_WORKER_UNKNOWN, "worker")


def list_workers(conn: Connection, user_id: str) -> list[DbRow]:
    return list(
        conn.execute(
            select(workers).where(workers.c.user_id == user_id).order_by(workers.c.created_at, workers.c.id)
        ).all()
    )


def worker_last_seen(conn: Connection, worker_id: str) -> int | None:
    """When the worker last reported (None: no such worker)."""
    seen: int | None = conn.execute(select(workers.c.last_seen_at).where(workers.c.id == worker_id)).scalar()
    return seen


def register_worker(conn: Connection, user_id: str, req: WorkerCreateRequest) -> str:
    """Idempotent by name: the same name answers the same id (labels are fixed at first registration)."""
    existing = conn.execute(select(workers).where(workers.c.user_id == user_id, workers.c.name == req.name)).first()
    if existing:
        if req.docker_version and req.docker_version != existing.docker_version:
            conn.execute(update(workers).where(workers.c.id == existing.id).values(docker_version=req.docker_version))
        return str(existing.id)
    now = now_ms()
    wid = new_id()
    conn.execute(
        workers.insert().values(
            id=wid,
            user_id=user_id,
            name=req.name,
            labels=json.dumps(sorted(set(req.labels or []))),
            state=WorkerState.OFFLINE,
            docker_version=req.docker_version,
            created_at=now,
            last_modified_at=now,
            last_seen_at=now,
        )
    )
    return wid


def default_worker(conn: Connection, user_id: str) -> DbRow:
    wid = register_worker(conn, user_id, WorkerCreateRequest(name="default", labels=[]))
    return get_worker(conn, user_id, wid)


def touch_worker(conn: Connection, worker_id: str | None) -> None:
    """The worker reported something: it is alive, its lease is renewed."""
    if worker_id:
        conn.execute(update(workers).where(workers.c.id == worker_id).values(last_seen_at=now_ms()))


def revive_polling_worker(conn: Connection, worker_id: str) -> None:
    """An OFFLINE worker polls its queue: it is IDLE again (a lease sweep during an outage marked it)."""
    now = now_ms()
    conn.execute(
        update(workers)
        .where(workers.c.id == worker_id, workers.c.state == WorkerState.OFFLINE)
        .values(state=WorkerState.IDLE, last_seen_at=now, last_modified_at=now)
    )


def renew_polled_leases(conn: Connection, polled: dict[str, int]) -> set[str]:
    """Renew the leases of workers that polled (worker id -> when, ms) in one go; answer the ids that no
    longer exist. A worker marked OFFLINE before its poll is IDLE again (like ``revive_polling_worker``);
    one that reported OFFLINE after its poll stays OFFLINE.

    Two statements per 500 workers (a read of their states, one ``UPDATE ... WHERE id IN``), not one per
    worker: building an ``executemany``'s parameters cost more than the polls themselves.
    """
    ids = list(polled)
    now = now_ms()
    gone = set(ids)
    revive: list[str] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = conn.execute(
            select(workers.c.id, workers.c.state, workers.c.last_modified_at).where(workers.c.id.in_(chunk))
        ).all()
        present = [r.id for r in rows]
        gone.difference_update(present)
        revive += [r.id for r in rows if r.state == WorkerState.OFFLINE and r.last_modified_at < polled[r.id]]
        if present:
            conn.execute(
                update(workers).where(workers.c.id.in_(present), workers.c.last_seen_at < now).values(last_seen_at=now)
            )
    if revive:
        conn.execute(
            update(workers)
            .where(workers.c.id.in_(revive), workers.c.state == WorkerState.OFFLINE)
            .values(state=WorkerState.IDLE, last_modified_at=now)
        )
    return gone


def update_worker_state(
    conn: Connection,
    user_id: str,
    worker_id: str,
    state: str,
    version: str | None,
    session: str | None = None,
    max_attempts: int | None = None,
) -> list[str]:
    """A worker reports its state. Returns the scheduled runs reopened by the ownership rule.

    Ownership rule (extension, ``X-Lightly-Worker-Session``): a worker process sends a per-process
    session id with its state reports. An IDLE report with a session other than the stored one is
    a new process behind this worker id (a pod restart): whatever the id still holds is released
    at once (its run CRASHED, the scheduled run reopened, counting an attempt). A BUSY report from
    a session that is no longer the current one is refused (409): another process took over the id.
    An OFFLINE report from such a session is ignored. Reports without a session keep the
    protocol's plain behaviour.
    """
    w = get_worker(conn, user_id, worker_id)
    now = now_ms()
    values: dict[str, Any] = {"state": state, "last_modified_at": now, "last_seen_at": now}
    if version:
        values["docker_version"] = version
    reopened: list[str] = []
    if session and session != w.session_id:
        if state == WorkerState.IDLE:
            reopened = release_worker_runs(
                conn,
                worker_id,
                f"worker {worker_id} restarted (a new process reported with the same worker id) while it held this run",
                count_attempt=True,
                max_attempts=max_attempts,
            )
            release_worker_shards(conn, worker_id, f"worker {worker_id} restarted holding this shard", max_attempts)
            values["session_id"] = session
        elif w.session_id is None:
            values["session_id"] = session  # first report with a session (e.g. after a server upgrade)
        elif state == WorkerState.OFFLINE:
            return []  # a superseded process saying goodbye: the current one is not offline
        else:
            raise conflict(
                f"worker {worker_id} is now served by another process (a newer process with the same worker id "
                "reported IDLE); this process lost the runs it held and should stop",
                ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
            )
    conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
    return reopened


def delete_worker(conn: Connection, user_id: str, worker_id: str) -> list[str]:
    """Deregister a worker; its LOCKED scheduled runs are reopened. Returns the reopened ids."""
    get_worker(conn, user_id, worker_id)
    reopened = release_worker_runs(
        conn,
        worker_id,
        "worker was deregistered while it held this run",
        count_attempt=True,
        max_attempts=None,
    )
    release_worker_shards(conn, worker_id, "worker was deregistered while it held this shard", max_attempts=None)
    conn.execute(workers.delete().where(workers.c.id == worker_id))
    return reopened
