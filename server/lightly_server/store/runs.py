"""Runs and their state machine: create, update (terminal states finish the scheduled run), logs, selection."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol import paths
from lightly_protocol.enums import TERMINAL_RUN_STATES, ApiErrorCode, RunState, ScheduledState
from lightly_protocol.models import LogCreateEntry, LogData, LogEntryData, RunCreateRequest, RunUpdateRequest
from sqlalchemy import Connection, and_, func, select, update

from ..errors import ApiError, bad_request, conflict
from ..ids import new_id, now_ms
from ..schema import DbRow, run_logs, run_selections, runs, scheduled_runs
from .common import owned, paged
from .configs import get_config
from .datasets import get_dataset
from .embeddings import register_run_embedding
from .schedule import get_scheduled
from .shards import end_shards
from .tags import materialize_selection_tag, tags_of_run
from .workers import touch_worker


def get_run(conn: Connection, user_id: str, run_id: str) -> DbRow:
    return owned(conn, runs, run_id, user_id, ApiErrorCode.DOCKER_RUN_UNKNOWN, "run")


def list_runs(
    conn: Connection, user_id: str, page_size: int | None, page_offset: int | None, show_archived: bool = True
) -> list[DbRow]:
    """A page of the user's runs, oldest first."""
    q = select(runs).where(runs.c.user_id == user_id)
    if not show_archived:
        q = q.where(runs.c.archived.is_(False))
    return paged(conn, q.order_by(runs.c.created_at, runs.c.id), page_size, page_offset)


def count_runs(conn: Connection, user_id: str) -> int:
    return int(conn.execute(select(func.count()).select_from(runs).where(runs.c.user_id == user_id)).scalar() or 0)


def runs_of_dataset(
    conn: Connection, user_id: str, dataset_id: str, page_size: int | None, page_offset: int | None
) -> list[DbRow]:
    """A page of the runs of one of the user's datasets, oldest first."""
    get_dataset(conn, user_id, dataset_id)
    q = select(runs).where(runs.c.user_id == user_id, runs.c.dataset_id == dataset_id)
    return paged(conn, q.order_by(runs.c.created_at, runs.c.id), page_size, page_offset)


def run_tags(conn: Connection, user_id: str, run_id: str) -> list[DbRow]:
    """The tags one of the user's runs made, oldest first."""
    get_run(conn, user_id, run_id)
    return tags_of_run(conn, run_id)


def create_run(conn: Connection, user_id: str, req: RunCreateRequest) -> str:
    worker_id = None
    dataset_id, config_id = req.dataset_id, req.config_id
    if dataset_id:
        get_dataset(conn, user_id, dataset_id)
    if config_id:
        get_config(conn, user_id, config_id)
    if req.scheduled_id:
        s = get_scheduled(conn, user_id, req.scheduled_id)
        if s.state != ScheduledState.LOCKED:
            raise conflict(
                f"scheduled run {s.id} is {s.state}: lock it first "
                f"(PUT {paths.scheduled_run(s.dataset_id, '<workerId>', s.id)} state=LOCKED)"
            )
        if dataset_id and dataset_id != s.dataset_id:
            raise bad_request(f"datasetId {dataset_id} differs from the scheduled run's dataset {s.dataset_id}")
        existing = conn.execute(
            select(runs.c.id).where(runs.c.scheduled_id == s.id, runs.c.state.not_in(list(TERMINAL_RUN_STATES)))
        ).first()
        if existing:
            return str(existing.id)  # a retried create: the run already exists
        worker_id, dataset_id, config_id = s.worker_id, s.dataset_id, config_id or s.config_id
    now = now_ms()
    rid = new_id()
    conn.execute(
        runs.insert().values(
            id=rid,
            user_id=user_id,
            docker_version=req.docker_version,
            state=RunState.STARTED,
            dataset_id=dataset_id,
            config_id=config_id,
            scheduled_id=req.scheduled_id,
            worker_id=worker_id,
            message=req.message,
            archived=False,
            created_at=now,
            last_modified_at=now,
        )
    )
    touch_worker(conn, worker_id)
    return rid


def run_for_scheduled(conn: Connection, user_id: str, scheduled_id: str) -> DbRow:
    """The run of a scheduled run; 404 until a worker picked it up (or after it was reopened)."""
    s = conn.execute(
        select(scheduled_runs).where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.user_id == user_id)
    ).first()
    if s is not None and s.state != ScheduledState.OPEN:
        r = conn.execute(
            select(runs)
            .where(runs.c.scheduled_id == scheduled_id, runs.c.user_id == user_id)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(1)
        ).first()
        if r is not None:
            return r
    raise ApiError(404, ApiErrorCode.DOCKER_RUN_UNKNOWN, f"no worker has picked up scheduled run {scheduled_id} yet")


def update_run(conn: Connection, user_id: str, run_id: str, req: RunUpdateRequest) -> tuple[DbRow, bool]:
    """Apply a state/message update. Returns (the run before, whether it just became terminal)."""
    r = get_run(conn, user_id, run_id)
    if r.state in TERMINAL_RUN_STATES:
        if r.state == req.state and (req.message is None or req.message == r.message):
            return r, False  # idempotent retry
        raise conflict(
            f"run {run_id} already ended as {r.state} ({r.message or 'no message'}); it cannot become {req.state}"
        )
    now = now_ms()
    values: dict[str, Any] = {"state": req.state, "last_modified_at": now}
    if req.message is not None:
        values["message"] = req.message
    res = conn.execute(
        update(runs).where(runs.c.id == run_id, runs.c.state.not_in(list(TERMINAL_RUN_STATES))).values(**values)
    )
    if res.rowcount != 1:
        raise conflict(f"run {run_id} ended concurrently; reload it")
    touch_worker(conn, r.worker_id)
    terminal = req.state in TERMINAL_RUN_STATES
    if terminal and r.scheduled_id:
        sched_values: dict[str, Any] = {"state": ScheduledState.DONE, "last_modified_at": now}
        if req.state != RunState.COMPLETED:
            sched_values["failure"] = f"run {run_id} ended {req.state}: {req.message or r.message or ''}".strip()
        cond = [scheduled_runs.c.id == r.scheduled_id, scheduled_runs.c.state == ScheduledState.LOCKED]
        if r.worker_id:
            cond.append(scheduled_runs.c.worker_id == r.worker_id)
        if conn.execute(update(scheduled_runs).where(and_(*cond)).values(**sched_values)).rowcount:
            end_shards(conn, r.scheduled_id, ScheduledState.DONE)  # its split run's shards end with it
    if req.state == RunState.COMPLETED:
        materialize_selection_tag(conn, r)
        register_run_embedding(conn, r)
    return r, terminal


def append_logs(conn: Connection, user_id: str, run_id: str, entries: list[LogCreateEntry]) -> None:
    r = get_run(conn, user_id, run_id)
    if r.state in TERMINAL_RUN_STATES:
        raise conflict(f"run {run_id} already ended as {r.state}; its log is closed (send log lines before the end)")
    if entries:
        conn.execute(
            run_logs.insert(),
            [{"run_id": run_id, "entry": json.dumps({**e.wire(), "state": e.state or r.state})} for e in entries],
        )
    touch_worker(conn, r.worker_id)


def read_logs(conn: Connection, user_id: str, run_id: str, cursor: int | None, limit: int = 5000) -> LogData:
    get_run(conn, user_id, run_id)
    rows = conn.execute(
        select(run_logs.c.seq, run_logs.c.entry)
        # seq is a 32-bit column on PostgreSQL: a larger cursor is past every line
        .where(run_logs.c.run_id == run_id, run_logs.c.seq > min(cursor or 0, 2**31 - 1))
        .order_by(run_logs.c.seq)
        .limit(limit)
    ).all()
    return LogData(
        cursor=rows[-1].seq if rows else (cursor or 0),
        logs=[LogEntryData.model_validate(json.loads(x.entry)) for x in rows],
    )


def set_selection(conn: Connection, user_id: str, run_id: str, filenames: list[str], tag_name: str | None) -> None:
    r = get_run(conn, user_id, run_id)
    if r.state in TERMINAL_RUN_STATES:
        raise conflict(f"run {run_id} already ended as {r.state}; send the selection before the final state")
    if not r.dataset_id:
        raise bad_request(f"run {run_id} has no dataset; a selection becomes a tag of the run's dataset")
    if len(set(filenames)) != len(filenames):
        raise bad_request("the selection lists a filename more than once")
    conn.execute(run_selections.delete().where(run_selections.c.run_id == run_id))
    conn.execute(run_selections.insert().values(run_id=run_id, tag_name=tag_name, filenames=json.dumps(filenames)))
    touch_worker(conn, r.worker_id)
