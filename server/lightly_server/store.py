"""Domain operations on the database: every rule of the protocol and of dispatch lives here.

Functions take an open connection (a read or write transaction) and the calling user's id, and
raise ``ApiError`` with a message that says what to fix. Rows are turned into wire models by the
``*_data`` functions.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from lightly_protocol.enums import (
    PRIORITY_RANK,
    TERMINAL_RUN_STATES,
    ApiErrorCode,
    DatasourcePurpose,
    Priority,
    RunState,
    ScheduledState,
    WorkerState,
)
from lightly_protocol.models import (
    MAX_NAME_LENGTH,
    ArtifactData,
    DatasetCreateRequest,
    DatasetData,
    LogCreateEntry,
    LogData,
    LogEntryData,
    RunCreateRequest,
    RunData,
    RunUpdateRequest,
    ScheduledRunCreateRequest,
    ScheduledRunData,
    ScheduledRunUpdateRequest,
    TagData,
    WorkerConfigData,
    WorkerConfigV4,
    WorkerCreateRequest,
    WorkerData,
    safe_artifact_name,
)
from sqlalchemy import Connection, Row, and_, func, select, update
from sqlalchemy.exc import IntegrityError

from . import bitmask
from .db import (
    artifacts,
    configs,
    datasets,
    datasources,
    run_logs,
    run_selections,
    runs,
    samples,
    scheduled_runs,
    tags,
    workers,
)
from .errors import ApiError, bad_request, conflict, not_found
from .ids import new_id, now_ms

MAX_PAGE = 25000


# ---------------------------------------------------------------- converters


def worker_data(r: Row) -> WorkerData:
    return WorkerData(
        id=r.id,
        user_id=r.user_id,
        name=r.name,
        worker_type="FULL",
        state=r.state,
        created_at=r.created_at,
        last_modified_at=r.last_modified_at,
        labels=json.loads(r.labels),
        docker_version=r.docker_version,
    )


def datasets_data(conn: Connection, rows: Sequence[Row]) -> list[DatasetData]:
    """Wire form of datasets, with sample counts and datasource ids read in two queries for all of them."""
    ids = [r.id for r in rows]
    counts: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    if ids:
        counts = dict(
            conn.execute(
                select(samples.c.dataset_id, func.count())
                .where(samples.c.dataset_id.in_(ids))
                .group_by(samples.c.dataset_id)
            ).all()
        )
        for dataset_id, ds_id in conn.execute(
            select(datasources.c.dataset_id, datasources.c.id).where(datasources.c.dataset_id.in_(ids))
        ):
            sources.setdefault(dataset_id, []).append(ds_id)
    return [
        DatasetData(
            id=r.id,
            name=r.name,
            user_id=r.user_id,
            type=r.type,
            n_samples=int(counts.get(r.id, 0)),
            size_in_bytes=0,
            created_at=r.created_at,
            last_modified_at=r.last_modified_at,
            img_type=r.img_type,
            datasources=sources.get(r.id) or None,
            parent_dataset_id=r.parent_dataset_id,
        )
        for r in rows
    ]


def dataset_data(conn: Connection, r: Row) -> DatasetData:
    return datasets_data(conn, [r])[0]


def scheduled_data(r: Row) -> ScheduledRunData:
    return ScheduledRunData(
        id=r.id,
        dataset_id=r.dataset_id,
        user_id=r.user_id,
        config_id=r.config_id,
        priority=r.priority,
        runs_on=json.loads(r.runs_on),
        state=r.state,
        created_at=r.created_at,
        last_modified_at=r.last_modified_at,
        # our reading of the protocol's open `owner` field: the worker holding a LOCKED run
        owner=r.worker_id if r.state == ScheduledState.LOCKED else None,
    )


def runs_data(conn: Connection, rows: Sequence[Row]) -> list[RunData]:
    """Wire form of runs, with their confirmed artifacts read in one query for all of them."""
    by_run: dict[str, list[ArtifactData]] = {}
    ids = [r.id for r in rows]
    if ids:
        for a in conn.execute(
            select(artifacts)
            .where(artifacts.c.run_id.in_(ids), artifacts.c.confirmed.is_(True))
            .order_by(artifacts.c.created_at, artifacts.c.id)
        ):
            by_run.setdefault(a.run_id, []).append(
                ArtifactData(
                    id=a.id,
                    type=a.type,
                    # names stored by older servers may hold '/' or '..': never hand those to a client
                    file_name=safe_artifact_name(a.file_name, a.id),
                    storage_location=a.storage_location,
                    created_at=a.created_at,
                )
            )
    return [
        RunData(
            id=r.id,
            user_id=r.user_id,
            docker_version=r.docker_version,
            state=r.state,
            created_at=r.created_at,
            last_modified_at=r.last_modified_at,
            archived=bool(r.archived),
            dataset_id=r.dataset_id,
            config_id=r.config_id,
            scheduled_id=r.scheduled_id,
            message=r.message,
            artifacts=by_run.get(r.id, []),
        )
        for r in rows
    ]


def run_data(conn: Connection, r: Row) -> RunData:
    return runs_data(conn, [r])[0]


def tag_data(r: Row) -> TagData:
    return TagData(
        id=r.id,
        dataset_id=r.dataset_id,
        prev_tag_id=r.prev_tag_id,
        name=r.name,
        bit_mask_data=r.bit_mask,
        tot_size=r.tot_size,
        created_at=r.created_at,
        last_modified_at=r.created_at,
        run_id=r.run_id,
    )


def page(limit: int | None, offset: int | None) -> tuple[int, int]:
    size = MAX_PAGE if limit is None else limit
    off = 0 if offset is None else offset
    if size < 1 or off < 0:
        raise bad_request("pageSize must be >= 1 and pageOffset >= 0 (pageOffset is an element offset)")
    return min(size, MAX_PAGE), off


# ---------------------------------------------------------------- workers


def get_worker(conn: Connection, user_id: str, worker_id: str) -> Row:
    r = conn.execute(select(workers).where(workers.c.id == worker_id, workers.c.user_id == user_id)).first()
    if r is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_UNKNOWN, "worker", worker_id)
    return r


def register_worker(conn: Connection, user_id: str, req: WorkerCreateRequest) -> str:
    """Idempotent by name: the same name answers the same id (labels are fixed at first registration)."""
    existing = conn.execute(select(workers).where(workers.c.user_id == user_id, workers.c.name == req.name)).first()
    if existing:
        if req.docker_version and req.docker_version != existing.docker_version:
            conn.execute(update(workers).where(workers.c.id == existing.id).values(docker_version=req.docker_version))
        return existing.id
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


def default_worker(conn: Connection, user_id: str) -> Row:
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
    conn.execute(workers.delete().where(workers.c.id == worker_id))
    return reopened


# ---------------------------------------------------------------- datasets & datasources


def get_dataset(conn: Connection, user_id: str, dataset_id: str) -> Row:
    r = conn.execute(select(datasets).where(datasets.c.id == dataset_id, datasets.c.user_id == user_id)).first()
    if r is None:
        raise not_found(ApiErrorCode.DATASET_UNKNOWN, "dataset", dataset_id)
    return r


def create_dataset(conn: Connection, user_id: str, req: DatasetCreateRequest) -> str:
    if req.parent_dataset_id:
        get_dataset(conn, user_id, req.parent_dataset_id)
    now = now_ms()
    did = new_id()
    try:
        with conn.begin_nested():
            conn.execute(
                datasets.insert().values(
                    id=did,
                    user_id=user_id,
                    name=req.name,
                    type=req.type or "Images",
                    img_type=req.img_type,
                    parent_dataset_id=req.parent_dataset_id,
                    created_at=now,
                    last_modified_at=now,
                )
            )
    except IntegrityError:
        raise conflict(
            f"a dataset named {req.name!r} already exists; pick another name or reuse it",
            ApiErrorCode.DATASET_NAME_EXISTS,
        ) from None
    return did


def put_datasource(conn: Connection, user_id: str, dataset_id: str, config: dict[str, Any]) -> str:
    get_dataset(conn, user_id, dataset_id)
    purpose = config["purpose"]
    old = conn.execute(
        select(datasources.c.id).where(datasources.c.dataset_id == dataset_id, datasources.c.purpose == purpose)
    ).first()
    dsid = old.id if old else new_id()
    config = {**config, "id": dsid}
    if old:
        conn.execute(update(datasources).where(datasources.c.id == dsid).values(config=json.dumps(config)))
    else:
        conn.execute(
            datasources.insert().values(
                id=dsid,
                dataset_id=dataset_id,
                purpose=purpose,
                config=json.dumps(config),
                created_at=now_ms(),
            )
        )
    conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(last_modified_at=now_ms()))
    return dsid


def get_datasources(conn: Connection, dataset_id: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(select(datasources).where(datasources.c.dataset_id == dataset_id)).all()
    return {r.purpose: json.loads(r.config) for r in rows}


def resolve_datasource(by_purpose: dict[str, dict[str, Any]], purpose: str | None) -> dict[str, Any] | None:
    """INPUT/LIGHTLY fall back to INPUT_OUTPUT; no purpose: INPUT_OUTPUT, then INPUT, then LIGHTLY."""
    if purpose in (DatasourcePurpose.INPUT, DatasourcePurpose.LIGHTLY):
        order = [purpose, DatasourcePurpose.INPUT_OUTPUT]
    elif purpose == DatasourcePurpose.INPUT_OUTPUT:
        order = [DatasourcePurpose.INPUT_OUTPUT]
    else:
        order = [DatasourcePurpose.INPUT_OUTPUT, DatasourcePurpose.INPUT, DatasourcePurpose.LIGHTLY]
    for p in order:
        if p in by_purpose:
            return by_purpose[p]
    return None


# ---------------------------------------------------------------- worker configs


def create_config(conn: Connection, user_id: str, config: WorkerConfigV4, orig: dict[str, Any]) -> str:
    cid = new_id()
    conn.execute(
        configs.insert().values(
            id=cid,
            user_id=user_id,
            version="V4",
            config=json.dumps({"config": config.wire(), "orig": orig}),
            created_at=now_ms(),
        )
    )
    return cid


def get_config(conn: Connection, user_id: str, config_id: str) -> WorkerConfigData:
    r = conn.execute(select(configs).where(configs.c.id == config_id, configs.c.user_id == user_id)).first()
    if r is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_CONFIG_UNKNOWN, "worker config", config_id)
    stored = json.loads(r.config)
    return WorkerConfigData(
        id=r.id,
        version="V4",
        created_at=r.created_at,
        config=WorkerConfigV4.model_validate(stored["config"]),
    )


# ---------------------------------------------------------------- scheduled runs


def get_scheduled(conn: Connection, user_id: str, scheduled_id: str) -> Row:
    r = conn.execute(
        select(scheduled_runs).where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.user_id == user_id)
    ).first()
    if r is None:
        raise not_found(ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, "scheduled run", scheduled_id)
    return r


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


DISPATCH_ORDER = (scheduled_runs.c.priority_rank.desc(), scheduled_runs.c.created_at, scheduled_runs.c.id)


def list_scheduled_for_dataset(conn: Connection, user_id: str, dataset_id: str, states: Sequence[str]) -> list[Row]:
    get_dataset(conn, user_id, dataset_id)
    wanted = list(states) or [ScheduledState.OPEN, ScheduledState.LOCKED]
    return conn.execute(
        select(scheduled_runs)
        .where(scheduled_runs.c.dataset_id == dataset_id, scheduled_runs.c.state.in_(wanted))
        .order_by(*DISPATCH_ORDER)
    ).all()


def open_candidates(conn: Connection, user_ids: Iterable[str]) -> tuple[list[Row], set[str]]:
    """OPEN scheduled runs of these users in dispatch order, and the datasets that hold a lock."""
    ids = list(set(user_ids))
    rows = conn.execute(
        select(scheduled_runs)
        .where(scheduled_runs.c.state == ScheduledState.OPEN, scheduled_runs.c.user_id.in_(ids))
        .order_by(*DISPATCH_ORDER)
    ).all()
    locked = set(
        conn.execute(
            select(scheduled_runs.c.dataset_id).where(
                scheduled_runs.c.state == ScheduledState.LOCKED, scheduled_runs.c.user_id.in_(ids)
            )
        ).scalars()
    )
    return rows, locked


@functools.lru_cache(maxsize=4096)
def parse_runs_on(raw: str) -> frozenset[str]:
    """A stored runsOn (sorted JSON list) as a set; a fleet has few distinct ones, so this is cached."""
    return frozenset(json.loads(raw))


def runs_on_fits(row: Row, labels: set[str] | frozenset[str]) -> bool:
    return parse_runs_on(row.runs_on) <= labels


def dispatchable(
    row: Row, labels: set[str] | frozenset[str] | None, locked_datasets: set[str], include_unlockable: bool
) -> bool:
    """THE dispatch rule, used by both poll paths (plain listing and long-poll wake-ups).

    runsOn ⊆ labels (labels None = any), and by default an OPEN run only when its dataset holds no
    lock (a LOCKED run is never "unlockable" from its own listing's point of view).
    """
    return (labels is None or runs_on_fits(row, labels)) and (
        include_unlockable or row.state != ScheduledState.OPEN or row.dataset_id not in locked_datasets
    )


def filter_schedule(
    rows: Iterable[Row], locked_datasets: set[str], labels: set[str] | None, include_unlockable: bool
) -> list[Row]:
    """The rows the dispatch rule (``dispatchable``) lets through."""
    return [r for r in rows if dispatchable(r, labels, locked_datasets, include_unlockable)]


def schedule_query(
    conn: Connection, user_id: str, states: Sequence[str], labels: set[str] | None, include_unlockable: bool
) -> list[Row]:
    wanted = list(states) or [ScheduledState.OPEN]
    rows = conn.execute(
        select(scheduled_runs)
        .where(scheduled_runs.c.user_id == user_id, scheduled_runs.c.state.in_(wanted))
        .order_by(*DISPATCH_ORDER)
    ).all()
    locked: set[str] = set()
    if not include_unlockable:
        locked = set(
            conn.execute(
                select(scheduled_runs.c.dataset_id).where(
                    scheduled_runs.c.state == ScheduledState.LOCKED, scheduled_runs.c.user_id == user_id
                )
            ).scalars()
        )
    return filter_schedule(rows, locked, labels, include_unlockable)


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
    conn.execute(
        update(scheduled_runs)
        .where(scheduled_runs.c.id == scheduled_id, scheduled_runs.c.state == s.state)
        .values(**values)
    )
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
            values = {
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


# ---------------------------------------------------------------- runs


def get_run(conn: Connection, user_id: str, run_id: str) -> Row:
    r = conn.execute(select(runs).where(runs.c.id == run_id, runs.c.user_id == user_id)).first()
    if r is None:
        raise not_found(ApiErrorCode.DOCKER_RUN_UNKNOWN, "run", run_id)
    return r


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
                f"(PUT /v1/datasets/{s.dataset_id}/docker/worker/<workerId>/schedule/{s.id} state=LOCKED)"
            )
        if dataset_id and dataset_id != s.dataset_id:
            raise bad_request(f"datasetId {dataset_id} differs from the scheduled run's dataset {s.dataset_id}")
        existing = conn.execute(
            select(runs.c.id).where(runs.c.scheduled_id == s.id, runs.c.state.not_in(list(TERMINAL_RUN_STATES)))
        ).first()
        if existing:
            return existing.id  # a retried create: the run already exists
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


def run_for_scheduled(conn: Connection, user_id: str, scheduled_id: str) -> Row:
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


def update_run(conn: Connection, user_id: str, run_id: str, req: RunUpdateRequest) -> tuple[Row, bool]:
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
        conn.execute(update(scheduled_runs).where(and_(*cond)).values(**sched_values))
    if req.state == RunState.COMPLETED:
        materialize_selection_tag(conn, r)
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


# ---------------------------------------------------------------- selection -> tag


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


def ensure_samples(conn: Connection, dataset_id: str, filenames: list[str]) -> dict[str, int]:
    """Add unknown filenames to the dataset's samples (in order) and return name -> bit index."""
    known = dict(
        conn.execute(select(samples.c.file_name, samples.c.idx).where(samples.c.dataset_id == dataset_id)).all()
    )
    nxt = max(known.values(), default=-1) + 1
    new = []
    for name in filenames:
        if name not in known:
            known[name] = nxt
            new.append({"dataset_id": dataset_id, "idx": nxt, "file_name": name})
            nxt += 1
    if new:
        conn.execute(samples.insert(), new)
    return known


def materialize_selection_tag(conn: Connection, run: Row) -> str | None:
    sel = conn.execute(select(run_selections).where(run_selections.c.run_id == run.id)).first()
    if sel is None or not run.dataset_id:
        return None
    filenames = json.loads(sel.filenames)
    index = ensure_samples(conn, run.dataset_id, filenames)
    mask = bitmask.encode((index[name] for name in filenames), len(index))
    name = sel.tag_name or f"selected-{run.id}"
    existing = conn.execute(select(tags.c.id).where(tags.c.dataset_id == run.dataset_id, tags.c.name == name)).first()
    if existing:
        name = f"{name[: MAX_NAME_LENGTH - len(run.id) - 1]}-{run.id}"  # within the column
    tid = new_id()
    conn.execute(
        tags.insert().values(
            id=tid,
            dataset_id=run.dataset_id,
            name=name,
            prev_tag_id=None,
            run_id=run.id,
            bit_mask=mask,
            tot_size=len(index),
            created_at=now_ms(),
        )
    )
    conn.execute(update(datasets).where(datasets.c.id == run.dataset_id).values(last_modified_at=now_ms()))
    return tid


def get_tag(conn: Connection, user_id: str, dataset_id: str, tag_id: str) -> Row:
    get_dataset(conn, user_id, dataset_id)
    r = conn.execute(select(tags).where(tags.c.id == tag_id, tags.c.dataset_id == dataset_id)).first()
    if r is None:
        raise not_found(ApiErrorCode.TAG_UNKNOWN, "tag", tag_id)
    return r


def tag_filenames(conn: Connection, tag: Row) -> list[str]:
    rows = conn.execute(
        select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == tag.dataset_id).order_by(samples.c.idx)
    ).all()
    inside = bitmask.members(tag.bit_mask, (r.idx for r in rows))
    return [r.file_name for r, yes in zip(rows, inside, strict=True) if yes]


def dataset_filenames(conn: Connection, dataset_id: str) -> list[str]:
    return list(
        conn.execute(
            select(samples.c.file_name).where(samples.c.dataset_id == dataset_id).order_by(samples.c.idx)
        ).scalars()
    )
