"""Scheduled runs and their state machine: create, list, claim (OPEN -> LOCKED), hand back, finish, cancel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lightly_protocol.enums import PRIORITY_RANK, ApiErrorCode, DatasourcePurpose, Priority, ScheduledState
from lightly_protocol.models import ScheduledRunCreateRequest, ScheduledRunUpdateRequest
from sqlalchemy import Connection, Row, select, update
from sqlalchemy.exc import IntegrityError

from ..db import scheduled_runs, workers
from ..errors import ApiError, bad_request, conflict, not_found
from ..ids import new_id, now_ms
from .common import owned
from .configs import get_config
from .datasets import get_dataset, get_datasources, resolve_datasource
from .dispatch import DISPATCH_ORDER, runs_on_fits
from .leases import abort_active_runs
from .shards import end_shards
from .workers import get_worker, touch_worker


def get_scheduled(conn: Connection, user_id: str, scheduled_id: str) -> Row:
    return owned(
        conn, scheduled_runs, scheduled_id, user_id, ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, "scheduled run"
    )


def create_scheduled(
    conn: Connection, user_id: str, dataset_id: str, req: ScheduledRunCreateRequest, validate: bool
) -> str:
    from lightly_protocol.validation import config_problems

    get_dataset(conn, user_id, dataset_id)
    cfg = get_config(conn, user_id, req.config_id)
    if validate:
        problems = config_problems(cfg.config)
        if resolve_datasource(get_datasources(conn, dataset_id), DatasourcePurpose.INPUT) is None:
            problems.append(
                "the dataset has no INPUT datasource: set one first, e.g. client.set_local_config(purpose='INPUT')"
            )
        if problems:
            raise ApiError(400, ApiErrorCode.DOCKER_WORKER_CONFIG_INVALID, "; ".join(problems))
    now = now_ms()
    sid = new_id()
    conn.execute(
        scheduled_runs.insert().values(
            id=sid,
            user_id=user_id,
            dataset_id=dataset_id,
            config_id=req.config_id,
            priority=req.priority,
            priority_rank=PRIORITY_RANK[Priority(req.priority)],
            runs_on=json.dumps(sorted(set(req.runs_on or []))),
            state=ScheduledState.OPEN,
            attempts=0,
            created_at=now,
            last_modified_at=now,
        )
    )
    return sid


def list_scheduled_for_dataset(conn: Connection, user_id: str, dataset_id: str, states: Sequence[str]) -> list[Row]:
    get_dataset(conn, user_id, dataset_id)
    wanted = list(states) or [ScheduledState.OPEN, ScheduledState.LOCKED]
    return conn.execute(
        select(scheduled_runs)
        .where(scheduled_runs.c.dataset_id == dataset_id, scheduled_runs.c.state.in_(wanted))
        .order_by(*DISPATCH_ORDER)
    ).all()


def lock_scheduled(conn: Connection, user_id: str, dataset_id: str, worker_id: str, scheduled_id: str) -> None:
    """Atomic compare-and-set OPEN -> LOCKED; at most one LOCKED run per dataset (a unique index)."""
    worker = get_worker(conn, user_id, worker_id)
    s = get_scheduled(conn, user_id, scheduled_id)
    if s.dataset_id != dataset_id:
        raise not_found(
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN,
            f"scheduled run of dataset {dataset_id}",
            scheduled_id,
        )
    if not runs_on_fits(s, set(json.loads(worker.labels))):
        raise conflict(
            f"worker {worker_id} has labels {json.loads(worker.labels)} but scheduled run {scheduled_id} "
            f"needs runsOn {json.loads(s.runs_on)}; register a worker with those labels",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )
    now = now_ms()
    try:
        with conn.begin_nested():
            res = conn.execute(
                update(scheduled_runs)
                .where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.state == ScheduledState.OPEN)
                .values(state=ScheduledState.LOCKED, worker_id=worker_id, last_modified_at=now)
            )
    except IntegrityError:
        raise conflict(
            f"another run of dataset {dataset_id} is already LOCKED; scheduled run {scheduled_id} can be "
            "locked when it is finished",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        ) from None
    if res.rowcount != 1:
        current = conn.execute(select(scheduled_runs.c.state).where(scheduled_runs.c.id == scheduled_id)).scalar()
        raise conflict(
            f"scheduled run {scheduled_id} is {current}, not OPEN: another worker claimed it or it ended",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )
    conn.execute(update(workers).where(workers.c.id == worker_id).values(last_seen_at=now))


def claim_precheck(conn: Connection, user_id: str, worker_id: str, scheduled_id: str) -> bool:
    """Read-only: False if the claim is our own repeat; raises the 409 a lost race would get.

    Lets most losing claims answer without taking the write lock.
    """
    s = get_scheduled(conn, user_id, scheduled_id)
    if s.state == ScheduledState.LOCKED and s.worker_id == worker_id:
        return False
    if s.state != ScheduledState.OPEN:
        raise conflict(
            f"scheduled run {scheduled_id} is {s.state}, not OPEN: another worker claimed it or it ended",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )
    return True


def update_scheduled_by_worker(
    conn: Connection,
    user_id: str,
    dataset_id: str,
    worker_id: str,
    scheduled_id: str,
    req: ScheduledRunUpdateRequest,
) -> None:
    """The worker-side state machine of a scheduled run.

    OPEN -> LOCKED (claim), LOCKED -> OPEN (hand back, only by the holder), LOCKED -> DONE (only by the
    holder), OPEN -> CANCELED; priority/runsOn change only while OPEN.
    """
    if req.state == ScheduledState.LOCKED:
        s = get_scheduled(conn, user_id, scheduled_id)
        if s.state == ScheduledState.LOCKED and s.worker_id == worker_id:
            return  # idempotent retry of our own claim
        if req.priority or req.runs_on is not None:
            raise bad_request("priority and runsOn cannot change while locking; send only {'state': 'LOCKED'}")
        lock_scheduled(conn, user_id, dataset_id, worker_id, scheduled_id)
        return
    get_worker(conn, user_id, worker_id)
    s = get_scheduled(conn, user_id, scheduled_id)
    if s.dataset_id != dataset_id:
        raise not_found(
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN,
            f"scheduled run of dataset {dataset_id}",
            scheduled_id,
        )
    now = now_ms()
    values: dict[str, Any] = {"last_modified_at": now}
    if req.state == ScheduledState.OPEN:
        if s.state == ScheduledState.OPEN:
            pass
        elif s.state == ScheduledState.LOCKED and s.worker_id == worker_id:
            values.update(state=ScheduledState.OPEN, worker_id=None)
            abort_active_runs(conn, scheduled_id, "the worker handed the scheduled run back")
        else:
            raise conflict(_illegal(s, req.state, worker_id), ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED)
    elif req.state == ScheduledState.DONE:
        if s.state == ScheduledState.LOCKED and s.worker_id == worker_id:
            values.update(state=ScheduledState.DONE)
        elif s.state != ScheduledState.DONE:
            raise conflict(_illegal(s, req.state, worker_id), ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED)
    elif req.state == ScheduledState.CANCELED:
        if s.state != ScheduledState.OPEN:
            raise conflict(_illegal(s, req.state, worker_id), ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED)
        values.update(state=ScheduledState.CANCELED)
    if req.priority or req.runs_on is not None:
        if (values.get("state") or s.state) != ScheduledState.OPEN:
            raise conflict(f"priority and runsOn of scheduled run {scheduled_id} can only change while it is OPEN")
        if req.priority:
            values.update(priority=req.priority, priority_rank=PRIORITY_RANK[Priority(req.priority)])
        if req.runs_on is not None:
            values.update(runs_on=json.dumps(sorted(set(req.runs_on))))
    res = conn.execute(
        update(scheduled_runs)
        .where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.state == s.state)
        .values(**values)
    )
    if res.rowcount and values.get("state") in (ScheduledState.DONE, ScheduledState.CANCELED):
        end_shards(conn, scheduled_id, values["state"])  # a split run's shards end with it
    touch_worker(conn, worker_id)


def _illegal(s: Row, target: str, worker_id: str) -> str:
    holder = f" held by worker {s.worker_id}" if s.state == ScheduledState.LOCKED else ""
    return (
        f"scheduled run {s.id} is {s.state}{holder}; worker {worker_id} cannot move it to {target} "
        "(allowed: OPEN->LOCKED, LOCKED->OPEN or DONE by the holder, OPEN->CANCELED)"
    )


def cancel_scheduled(conn: Connection, user_id: str, dataset_id: str, scheduled_id: str) -> None:
    s = get_scheduled(conn, user_id, scheduled_id)
    if s.dataset_id != dataset_id:
        raise not_found(
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN,
            f"scheduled run of dataset {dataset_id}",
            scheduled_id,
        )
    res = conn.execute(
        update(scheduled_runs)
        .where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.state == ScheduledState.OPEN)
        .values(state=ScheduledState.CANCELED, last_modified_at=now_ms())
    )
    if res.rowcount != 1:
        raise conflict(
            f"scheduled run {scheduled_id} is {s.state}: only OPEN runs can be canceled "
            "(a LOCKED run is being processed by a worker)",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )
    end_shards(conn, scheduled_id, ScheduledState.CANCELED)
