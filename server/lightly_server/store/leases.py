"""What a lost worker held: its runs aborted, its scheduled runs reopened (or given up), expired leases."""

from __future__ import annotations

from typing import Any

from lightly_protocol.enums import TERMINAL_RUN_STATES, RunState, ScheduledState, WorkerState
from sqlalchemy import Connection, select, update

from ..ids import now_ms
from ..schema import runs, scheduled_runs, workers


def abort_active_runs(conn: Connection, scheduled_id: str, message: str, state: str = RunState.ABORTED) -> int:
    res = conn.execute(
        update(runs)
        .where(runs.c.scheduled_id == scheduled_id, runs.c.state.not_in(list(TERMINAL_RUN_STATES)))
        .values(state=state, message=message, last_modified_at=now_ms())
    )
    return res.rowcount


def release_worker_runs(
    conn: Connection, worker_id: str, reason: str, count_attempt: bool, max_attempts: int | None
) -> list[str]:
    """Reopen (or, past max_attempts, finish as DONE with the failure) the runs a lost worker held."""
    held = conn.execute(
        select(scheduled_runs).where(
            scheduled_runs.c.worker_id == worker_id, scheduled_runs.c.state == ScheduledState.LOCKED
        )
    ).all()
    reopened = []
    now = now_ms()
    for s in held:
        abort_active_runs(conn, s.id, f"CRASHED: {reason}", state=RunState.CRASHED)
        attempts = s.attempts + (1 if count_attempt else 0)
        if max_attempts is not None and attempts >= max_attempts:
            values: dict[str, Any] = {
                "state": ScheduledState.DONE,
                "failure": f"gave up after {attempts} attempts; last: {reason}",
            }
        else:
            values = {"state": ScheduledState.OPEN, "worker_id": None}
            reopened.append(s.id)
        conn.execute(
            update(scheduled_runs)
            .where(scheduled_runs.c.id == s.id, scheduled_runs.c.state == ScheduledState.LOCKED)
            .values(attempts=attempts, last_modified_at=now, **values)
        )
    return reopened


def expire_leases(conn: Connection, lease_ms: int, max_attempts: int) -> tuple[list[str], list[str]]:
    """Workers silent for longer than the lease go OFFLINE; their runs are reopened.

    Returns (workers marked offline, scheduled runs reopened). Conditional updates make this safe
    to run on every replica at once.
    """
    cutoff = now_ms() - lease_ms
    stale = conn.execute(
        select(workers.c.id, workers.c.state).where(
            workers.c.last_seen_at < cutoff,
            workers.c.state.in_([WorkerState.IDLE, WorkerState.BUSY]),
        )
    ).all()
    offline = []
    for w in stale:
        res = conn.execute(
            update(workers)
            .where(workers.c.id == w.id, workers.c.last_seen_at < cutoff, workers.c.state == w.state)
            .values(state=WorkerState.OFFLINE, last_modified_at=now_ms())
        )
        if res.rowcount:
            offline.append(w.id)
    # every LOCKED run whose holder is silent (whatever state the holder claims) or gone
    holders = (
        conn.execute(
            select(scheduled_runs.c.worker_id)
            .select_from(scheduled_runs.outerjoin(workers, workers.c.id == scheduled_runs.c.worker_id))
            .where(
                scheduled_runs.c.state == ScheduledState.LOCKED,
                (workers.c.id.is_(None)) | (workers.c.last_seen_at < cutoff),
            )
            .distinct()
        )
        .scalars()
        .all()
    )
    reopened: list[str] = []
    for wid in holders:
        reopened += release_worker_runs(
            conn,
            wid,
            f"worker {wid} stopped reporting for more than {lease_ms // 1000} s (lease expired)",
            count_attempt=True,
            max_attempts=max_attempts,
        )
    return offline, reopened
