"""Scheduled runs and their state machine: create, list, claim (OPEN -> LOCKED), hand back, finish, cancel."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from lightly_protocol.enums import PRIORITY_RANK, ApiErrorCode, DatasourcePurpose, Priority, ScheduledState
from lightly_protocol.models import ScheduledRunCreateRequest, ScheduledRunUpdateRequest, WorkerConfigData
from sqlalchemy import Connection, and_, func, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import ApiError, bad_request, conflict, not_found
from ..ids import new_id, now_ms
from ..schema import DbRow, configs, datasets, datasources, scheduled_runs, workers
from .common import owned
from .configs import config_data
from .datasets import get_dataset, resolve_datasource
from .dispatch import DISPATCH_ORDER, runs_on_fits
from .leases import abort_active_runs
from .shards import end_shards
from .workers import get_worker, touch_worker


def get_scheduled(conn: Connection, user_id: str, scheduled_id: str) -> DbRow:
    return owned(
        conn, scheduled_runs, scheduled_id, user_id, ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, "scheduled run"
    )


class AccessCheckNeeded(Exception):
    """``create_scheduled`` stopped before its insert: the run's INPUT datasource must be checked first (a
    bucket: a network call, never made inside a write transaction). Check it, then call again with
    ``needs_check`` None."""

    def __init__(self, datasource: dict[str, Any]) -> None:
        super().__init__("the INPUT datasource needs an access check before the run is scheduled")
        self.datasource = datasource


def create_scheduled(
    conn: Connection,
    user_id: str,
    dataset_id: str,
    req: ScheduledRunCreateRequest,
    validate: bool,
    notify_channel: str | None = None,
    needs_check: Callable[[WorkerConfigData, dict[str, Any]], bool] | None = None,
) -> str:
    """A new OPEN scheduled run: one read (dataset, config, datasources) and one insert.

    ``notify_channel`` (PostgreSQL): the insert itself sends the wake-up NOTIFY on that channel (one
    statement, not two; it is delivered on commit like a NOTIFY statement). ``needs_check(config, input
    datasource)`` True raises ``AccessCheckNeeded`` before the insert (a LOCAL dataset never pays for it).
    """
    from lightly_protocol.config_support import refusals
    from lightly_protocol.validation import config_problems

    cfg, by_purpose = _schedule_inputs(conn, user_id, dataset_id, req.config_id)
    # the options this worker does not support are refused even with disableConfigValidation (the worker
    # would refuse the run anyway): config_problems starts with them
    problems = config_problems(cfg.config) if validate else refusals(cfg.config)
    if validate and resolve_datasource(by_purpose, DatasourcePurpose.INPUT) is None:
        problems.append(
            "the dataset has no INPUT datasource: set one first, e.g. client.set_local_config(purpose='INPUT')"
        )
    if problems:
        raise ApiError(400, ApiErrorCode.DOCKER_WORKER_CONFIG_INVALID, "; ".join(problems))
    source = resolve_datasource(by_purpose, DatasourcePurpose.INPUT)
    if needs_check is not None and source is not None and needs_check(cfg, source):
        raise AccessCheckNeeded(source)
    now = now_ms()
    sid = new_id()
    insert = scheduled_runs.insert().values(
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
    if notify_channel:
        created = insert.returning(scheduled_runs.c.id).cte("created")
        conn.execute(select(func.pg_notify(notify_channel, "")).select_from(created))
    else:
        conn.execute(insert)
    return sid


def _schedule_inputs(
    conn: Connection, user_id: str, dataset_id: str, config_id: str
) -> tuple[WorkerConfigData, dict[str, dict[str, Any]]]:
    """The user's config and the datasources (by purpose) of the user's dataset, in one query; the 404 of
    a missing (or not owned) dataset, then of a missing config."""
    rows = conn.execute(
        select(
            configs.c.id.label("config_id"),
            configs.c.created_at.label("config_created_at"),
            configs.c.config.label("config"),
            datasources.c.purpose,
            datasources.c.config.label("datasource"),
        )
        .select_from(
            datasets.outerjoin(configs, and_(configs.c.id == config_id, configs.c.user_id == user_id)).outerjoin(
                datasources, datasources.c.dataset_id == datasets.c.id
            )
        )
        .where(datasets.c.id == dataset_id, datasets.c.user_id == user_id)
    ).all()
    if not rows:
        raise not_found(ApiErrorCode.DATASET_UNKNOWN, "dataset", dataset_id)
    first = rows[0]
    if first.config_id is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_CONFIG_UNKNOWN, "worker config", config_id)
    by_purpose = {r.purpose: json.loads(r.datasource) for r in rows if r.purpose is not None}
    return config_data(first.config_id, first.config_created_at, first.config), by_purpose


def list_scheduled_for_dataset(
    conn: Connection, user_id: str, dataset_id: str, states: Sequence[str]
) -> Sequence[DbRow]:
    get_dataset(conn, user_id, dataset_id)
    wanted = list(states) or [ScheduledState.OPEN, ScheduledState.LOCKED]
    return conn.execute(
        select(scheduled_runs)
        .where(scheduled_runs.c.dataset_id == dataset_id, scheduled_runs.c.state.in_(wanted))
        .order_by(*DISPATCH_ORDER)
    ).all()


def _lock(conn: Connection, dataset_id: str, worker_id: str, s: DbRow) -> None:
    """Atomic compare-and-set OPEN -> LOCKED of ``s`` (read by ``_claim`` in this transaction, with the
    worker's labels); at most one LOCKED run per dataset (a unique index)."""
    labels = json.loads(s.worker_labels)
    if not runs_on_fits(s, set(labels)):
        raise conflict(
            f"worker {worker_id} has labels {labels} but scheduled run {s.id} "
            f"needs runsOn {json.loads(s.runs_on)}; register a worker with those labels",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )
    now = now_ms()
    claim = (
        update(scheduled_runs)
        .where(scheduled_runs.c.id == s.id, scheduled_runs.c.state == ScheduledState.OPEN)
        .values(state=ScheduledState.LOCKED, worker_id=worker_id, last_modified_at=now)
    )
    touch = update(workers).where(workers.c.id == worker_id).values(last_seen_at=now)
    try:
        # no savepoint: a violation aborts the whole transaction, which the 409 rolls back anyway
        if conn.dialect.name == "postgresql":
            # one statement: the worker's row is touched only when the claim took (its rowcount says so)
            claimed = claim.returning(scheduled_runs.c.id).cte("claimed")
            res = conn.execute(touch.where(select(claimed.c.id).exists()))
        else:
            res = conn.execute(claim)
            if res.rowcount == 1:
                conn.execute(touch)
    except IntegrityError:
        raise conflict(
            f"another run of dataset {dataset_id} is already LOCKED; scheduled run {s.id} can be "
            "locked when it is finished",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        ) from None
    if res.rowcount != 1:
        current = conn.execute(select(scheduled_runs.c.state).where(scheduled_runs.c.id == s.id)).scalar()
        raise conflict(
            f"scheduled run {s.id} is {current}, not OPEN: another worker claimed it or it ended",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )


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
        _claim(conn, user_id, dataset_id, worker_id, scheduled_id, req)
        return
    get_worker(conn, user_id, worker_id)
    s = scheduled_of_dataset(conn, user_id, dataset_id, scheduled_id)
    values: dict[str, Any] = {"last_modified_at": now_ms(), **_transition(conn, s, req.state, worker_id)}
    values.update(_reprioritised(s, values.get("state") or s.state, req))
    res = conn.execute(
        update(scheduled_runs)
        .where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.state == s.state)
        .values(**values)
    )
    # only when this update really ended it: a concurrent reopen (lease sweep, restart) wins otherwise,
    # and the shards of the run that goes on must not be canceled
    if res.rowcount and values.get("state") in (ScheduledState.DONE, ScheduledState.CANCELED):
        end_shards(conn, scheduled_id, values["state"])  # a split run's shards end with it
    touch_worker(conn, worker_id)


def scheduled_of_dataset(conn: Connection, user_id: str, dataset_id: str, scheduled_id: str) -> DbRow:
    """One of the user's scheduled runs, 404 unless it is a run of ``dataset_id`` (the path says so)."""
    s = get_scheduled(conn, user_id, scheduled_id)
    if s.dataset_id != dataset_id:
        raise _not_of_dataset(dataset_id, scheduled_id)
    return s


def _not_of_dataset(dataset_id: str, scheduled_id: str) -> ApiError:
    """The 404 of a scheduled run addressed under a dataset it does not belong to."""
    return not_found(
        ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, f"scheduled run of dataset {dataset_id}", scheduled_id
    )


def _claim(
    conn: Connection,
    user_id: str,
    dataset_id: str,
    worker_id: str,
    scheduled_id: str,
    req: ScheduledRunUpdateRequest,
) -> None:
    # one read: the scheduled run and the claiming worker's labels (NULL: no such worker of this user)
    worker_labels = (
        select(workers.c.labels)
        .where(workers.c.id == worker_id, workers.c.user_id == user_id)
        .scalar_subquery()
        .label("worker_labels")
    )
    s = conn.execute(
        select(scheduled_runs, worker_labels).where(
            scheduled_runs.c.id == scheduled_id, scheduled_runs.c.user_id == user_id
        )
    ).first()
    if s is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, "scheduled run", scheduled_id)
    if s.state == ScheduledState.LOCKED and s.worker_id == worker_id:
        return  # idempotent retry of our own claim
    if req.priority or req.runs_on is not None:
        raise bad_request("priority and runsOn cannot change while locking; send only {'state': 'LOCKED'}")
    if s.worker_labels is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_UNKNOWN, "worker", worker_id)
    if s.dataset_id != dataset_id:
        raise _not_of_dataset(dataset_id, scheduled_id)
    _lock(conn, dataset_id, worker_id, s)


def _transition(conn: Connection, s: DbRow, target: str, worker_id: str) -> dict[str, Any]:
    """The column values of the move of ``s`` to ``target`` by ``worker_id`` ({} when already there); 409
    for a move the state machine does not allow."""
    holder = s.state == ScheduledState.LOCKED and s.worker_id == worker_id
    if target == ScheduledState.OPEN:
        if s.state == ScheduledState.OPEN:
            return {}
        if holder:
            abort_active_runs(conn, s.id, "the worker handed the scheduled run back")
            return {"state": ScheduledState.OPEN, "worker_id": None}
    elif target == ScheduledState.DONE:
        if holder:
            return {"state": ScheduledState.DONE}
        if s.state == ScheduledState.DONE:
            return {}
    elif target == ScheduledState.CANCELED and s.state == ScheduledState.OPEN:
        return {"state": ScheduledState.CANCELED}
    raise conflict(_illegal(s, target, worker_id), ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED)


def _reprioritised(s: DbRow, state_after: str, req: ScheduledRunUpdateRequest) -> dict[str, Any]:
    """The column values of a priority/runsOn change, which only an OPEN run takes (409 otherwise)."""
    if not req.priority and req.runs_on is None:
        return {}
    if state_after != ScheduledState.OPEN:
        raise conflict(f"priority and runsOn of scheduled run {s.id} can only change while it is OPEN")
    values: dict[str, Any] = {}
    if req.priority:
        values.update(priority=req.priority, priority_rank=PRIORITY_RANK[Priority(req.priority)])
    if req.runs_on is not None:
        values.update(runs_on=json.dumps(sorted(set(req.runs_on))))
    return values


def _illegal(s: DbRow, target: str, worker_id: str) -> str:
    holder = f" held by worker {s.worker_id}" if s.state == ScheduledState.LOCKED else ""
    return (
        f"scheduled run {s.id} is {s.state}{holder}; worker {worker_id} cannot move it to {target} "
        "(allowed: OPEN->LOCKED, LOCKED->OPEN or DONE by the holder, OPEN->CANCELED)"
    )


def cancel_scheduled(conn: Connection, user_id: str, dataset_id: str, scheduled_id: str) -> None:
    s = scheduled_of_dataset(conn, user_id, dataset_id, scheduled_id)
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
