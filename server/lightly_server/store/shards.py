"""Shards of split scheduled runs (extension; docs/server.md "Shards (extension, /v1/ext/)").

Every rule of them lives here, once: publishing a listing (a new plan, or the same listing again: resume),
the atomic claim within the run's parallelism cap, heartbeats and hand-backs, results (only from the
holder), reopening what a lost worker held (lease expiry, deregistration, a restarted process) with
attempts counted, the end of a scheduled run (its shards CANCELED), and the summary the operator reads.

Shards belong to the scheduled run, not to the run: a retried run (its coordinator crashed) republishes
the same listing and finds its finished shards. Every query is scoped to the calling user. The result
bytes live in the artifacts directory (``shard_results``); this module only says which to keep.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from lightly_protocol.enums import ApiErrorCode, ScheduledState, ShardState
from lightly_protocol.models import MAX_MESSAGE_LENGTH
from lightly_protocol.shards import (
    ShardAssignment,
    ShardData,
    ShardPlanData,
    ShardSummary,
    listing_digest,
    shard_ranges,
)
from sqlalchemy import Connection, case, delete, func, select, text, update
from sqlalchemy.exc import IntegrityError

from ..errors import ApiError, bad_request, conflict
from ..ids import new_id, now_ms
from ..schema import DbRow, runs, scheduled_runs, shard_plans, shards, workers
from .common import owned
from .configs import get_config
from .dispatch import DISPATCH_ORDER, parse_runs_on

#: the scheduled-run states in which its shards live; any other (DONE, CANCELED) ends them
ACTIVE = (ScheduledState.OPEN, ScheduledState.LOCKED)
#: PostgreSQL channel of shard wake-ups; the payload is the user id (``longpoll.shard_wakeup``)
CHANNEL = "lightly_shards"
#: at most this many shards per plan (a larger shardSize splits a bigger listing)
MAX_SHARDS = 100_000

#: every column but the names (a blob read only by ``shard_files``)
_COLS = [c for c in shards.c if c.name != "names"]


def _touch(conn: Connection, worker_id: str, now: int) -> None:
    """Renew the worker's lease. Always before its shard's row: one lock order (workers, then shards), the
    lease sweep's, so concurrent transactions never deadlock on PostgreSQL."""
    conn.execute(update(workers).where(workers.c.id == worker_id).values(last_seen_at=now))


def _not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, ApiErrorCode.NOT_FOUND, f"{what} {ident} does not exist (or belongs to another user)")


def notify(conn: Connection, user_ids: Iterable[str]) -> None:
    """Shards of these users opened (or a capped run freed a slot): wake their work long-polls.

    PostgreSQL: a NOTIFY that travels with the commit to every replica. SQLite: nothing here; the caller
    pokes its own process after the commit and other processes see it on their next poll.
    """
    if conn.dialect.name == "postgresql":
        for uid in sorted(set(user_ids)):
            conn.execute(text("SELECT pg_notify(:channel, :uid)"), {"channel": CHANNEL, "uid": uid})


# ---------------------------------------------------------------- wire forms


def _parallelism(stored: int | None) -> int | Literal["auto"]:
    return "auto" if stored is None else stored


def shard_data(r: DbRow, run_id: str | None) -> ShardData:
    return ShardData(
        id=r.id,
        scheduled_id=r.scheduled_id,
        run_id=run_id,
        index=r.idx,
        start=r.start,
        stop=r.stop,
        state=r.state,
        worker_id=r.worker_id,
        attempts=r.attempts,
        processed=r.processed,
        result_bytes=r.result_bytes,
        message=r.message,
        updated_at=r.updated_at,
    )


def _plan_row(conn: Connection, scheduled_id: str) -> DbRow | None:
    return conn.execute(select(shard_plans).where(shard_plans.c.scheduled_id == scheduled_id)).first()


def _plan_data(conn: Connection, plan: DbRow, created: bool) -> ShardPlanData:
    rows = conn.execute(select(*_COLS).where(shards.c.scheduled_id == plan.scheduled_id).order_by(shards.c.idx)).all()
    return ShardPlanData(
        input_digest=plan.input_digest,
        total=plan.total,
        shard_size=plan.shard_size,
        parallelism=_parallelism(plan.parallelism),
        created=created,
        shards=[shard_data(r, plan.run_id) for r in rows],
    )


def _scheduled(conn: Connection, user_id: str, scheduled_id: str) -> DbRow:
    return owned(
        conn, scheduled_runs, scheduled_id, user_id, ApiErrorCode.DOCKER_WORKER_SCHEDULE_UNKNOWN, "scheduled run"
    )


def _shard(conn: Connection, user_id: str, shard_id: str) -> DbRow:
    r = conn.execute(select(*_COLS).where(shards.c.id == shard_id, shards.c.user_id == user_id)).first()
    if r is None:
        raise _not_found("shard", shard_id)
    return r


def _holder_check(s: DbRow, worker_id: str, action: str) -> None:
    if s.state != ScheduledState.LOCKED or s.worker_id != worker_id:
        holder = f" by worker {s.worker_id}" if s.state == ScheduledState.LOCKED else ""
        raise conflict(
            f"scheduled run {s.id} is {s.state}{holder}, not LOCKED by worker {worker_id}: only its coordinator "
            f"(the worker that locked it) {action}",
            ApiErrorCode.DOCKER_WORKER_SCHEDULE_UPDATE_FAILED,
        )


# ---------------------------------------------------------------- publish / read the plan


def publish_shards(
    conn: Connection,
    user_id: str,
    scheduled_id: str,
    worker_id: str,
    run_id: str,
    shard_size: int,
    parallelism: int | None,
    names: Sequence[str],
) -> tuple[ShardPlanData, list[str]]:
    """The coordinator publishes its listing. Returns the plan and the shard ids whose results to delete.

    The same listing (digest) and shard size as the stored plan: the plan is kept (DONE shards keep their
    results, LEASED ones their holders, FAILED and CANCELED ones open again for this new attempt) and its run becomes
    ``run_id``. Anything else replaces the plan and its results. ``parallelism`` None: no cap ("auto").
    """
    s = _scheduled(conn, user_id, scheduled_id)
    _holder_check(s, worker_id, "publishes its shards")
    r = owned(conn, runs, run_id, user_id, ApiErrorCode.DOCKER_RUN_UNKNOWN, "run")
    if r.scheduled_id != scheduled_id:
        raise conflict(f"run {run_id} belongs to scheduled run {r.scheduled_id}, not {scheduled_id}")
    if shard_size < 1:
        raise bad_request("shardSize must be at least 1")
    ranges = shard_ranges(len(names), shard_size)
    if len(ranges) > MAX_SHARDS:
        raise bad_request(
            f"{len(names)} files in shards of {shard_size} make {len(ranges)} shards; at most {MAX_SHARDS}: "
            "use a larger shardSize"
        )
    digest = listing_digest(list(names))
    now = now_ms()
    plan = conn.execute(select(shard_plans).where(shard_plans.c.scheduled_id == scheduled_id).with_for_update()).first()
    if plan is not None and (plan.input_digest, plan.shard_size, plan.total) == (digest, shard_size, len(names)):
        _resume(conn, user_id, scheduled_id, run_id, parallelism, now)
        return _plan_data(conn, _plan_row(conn, scheduled_id), created=False), []  # type: ignore[arg-type]  # it exists
    stale = _drop_plan(conn, scheduled_id) if plan is not None else []
    try:
        with conn.begin_nested():
            conn.execute(
                shard_plans.insert().values(
                    scheduled_id=scheduled_id,
                    user_id=user_id,
                    run_id=run_id,
                    input_digest=digest,
                    total=len(names),
                    shard_size=shard_size,
                    parallelism=parallelism,
                    created_at=now,
                    last_modified_at=now,
                )
            )
    except IntegrityError:
        raise conflict(f"scheduled run {scheduled_id}: another publish of its shards ran at once; retry") from None
    rows = _new_shards(user_id, scheduled_id, names, ranges, now)
    for chunk in range(0, len(rows), 1000):
        conn.execute(shards.insert(), rows[chunk : chunk + 1000])
    if rows:
        notify(conn, [user_id])
    return _plan_data(conn, _plan_row(conn, scheduled_id), created=True), stale  # type: ignore[arg-type]  # just written


def _resume(conn: Connection, user_id: str, scheduled_id: str, run_id: str, parallelism: int | None, now: int) -> None:
    """The same listing again (a new attempt of the scheduled run): keep the plan, hand it to ``run_id``."""
    conn.execute(
        update(shard_plans)
        .where(shard_plans.c.scheduled_id == scheduled_id)
        .values(run_id=run_id, parallelism=parallelism, last_modified_at=now)
    )
    # FAILED ones get a new chance with this attempt of the scheduled run; CANCELED ones of a run that is
    # still active (its end raced with a reopen) are open again too (their results are gone)
    res = conn.execute(
        update(shards)
        .where(
            shards.c.scheduled_id == scheduled_id,
            shards.c.state.in_([ShardState.FAILED, ShardState.CANCELED]),
        )
        .values(
            state=ShardState.OPEN,
            worker_id=None,
            attempts=0,
            leased_at=None,
            result_bytes=None,
            message=None,
            updated_at=now,
        )
    )
    if res.rowcount:
        notify(conn, [user_id])


def _drop_plan(conn: Connection, scheduled_id: str) -> list[str]:
    """Deletes a plan and its shards; returns the ids of the shards whose stored results must go too."""
    stale = list(
        conn.execute(
            select(shards.c.id).where(shards.c.scheduled_id == scheduled_id, shards.c.result_bytes.is_not(None))
        ).scalars()
    )
    conn.execute(delete(shards).where(shards.c.scheduled_id == scheduled_id))
    conn.execute(delete(shard_plans).where(shard_plans.c.scheduled_id == scheduled_id))
    return stale


def _new_shards(
    user_id: str, scheduled_id: str, names: Sequence[str], ranges: Sequence[tuple[int, int]], now: int
) -> list[dict[str, Any]]:
    """The rows of a new plan's shards, all OPEN, each with its names (gzip: one row read serves ``/files``)."""
    return [
        {
            "id": new_id(),
            "user_id": user_id,
            "scheduled_id": scheduled_id,
            "idx": i,
            "start": start,
            "stop": stop,
            "state": ShardState.OPEN,
            "worker_id": None,
            "attempts": 0,
            "processed": 0,
            "leased_at": None,
            "names": gzip.compress("\n".join(names[start:stop]).encode("utf-8"), compresslevel=6, mtime=0),
            "result_bytes": None,
            "message": None,
            "updated_at": now,
        }
        for i, (start, stop) in enumerate(ranges)
    ]


def get_shard_plan(conn: Connection, user_id: str, scheduled_id: str) -> ShardPlanData:
    _scheduled(conn, user_id, scheduled_id)
    plan = _plan_row(conn, scheduled_id)
    if plan is None:
        raise _not_found("shard plan of scheduled run", scheduled_id)
    return _plan_data(conn, plan, created=False)


def shard_files(conn: Connection, user_id: str, shard_id: str) -> list[str]:
    blob = conn.execute(select(shards.c.names).where(shards.c.id == shard_id, shards.c.user_id == user_id)).scalar()
    if blob is None:
        raise _not_found("shard", shard_id)
    raw = gzip.decompress(blob).decode("utf-8")
    return raw.split("\n") if raw else []


# ---------------------------------------------------------------- claims


def has_claimable_shard(conn: Connection, user_id: str, labels: set[str] | frozenset[str] | None) -> bool:
    """Read-only: could ``claim`` hand this user's worker with ``labels`` a shard now? (No write lock.)"""
    return bool(_candidates(conn, user_id, labels, None))


def _candidates(
    conn: Connection, user_id: str, labels: set[str] | frozenset[str] | None, scheduled_id: str | None
) -> list[DbRow]:
    """Plans with OPEN shards a worker with ``labels`` may take (runsOn ⊆ labels, under the cap), in dispatch order."""
    has_open = (
        select(shards.c.id)
        .where(shards.c.scheduled_id == shard_plans.c.scheduled_id, shards.c.state == ShardState.OPEN)
        .exists()
    )
    q = (
        select(
            shard_plans.c.scheduled_id,
            shard_plans.c.parallelism,
            shard_plans.c.input_digest,
            shard_plans.c.run_id,
            scheduled_runs.c.runs_on,
            scheduled_runs.c.dataset_id,
            scheduled_runs.c.config_id,
        )
        .select_from(shard_plans.join(scheduled_runs, scheduled_runs.c.id == shard_plans.c.scheduled_id))
        .where(shard_plans.c.user_id == user_id, scheduled_runs.c.state.in_(ACTIVE), has_open)
        .order_by(*DISPATCH_ORDER)
    )
    if scheduled_id is not None:
        q = q.where(shard_plans.c.scheduled_id == scheduled_id)
    rows = [r for r in conn.execute(q).all() if labels is None or parse_runs_on(r.runs_on) <= labels]
    capped = [r.scheduled_id for r in rows if r.parallelism is not None]
    if not capped:
        return rows
    leased = _leased_counts(conn, capped)
    return [r for r in rows if r.parallelism is None or leased.get(r.scheduled_id, 0) < r.parallelism]


def _leased_counts(conn: Connection, scheduled_ids: list[str]) -> dict[str, int]:
    return dict(
        conn.execute(
            select(shards.c.scheduled_id, func.count())
            .where(shards.c.scheduled_id.in_(scheduled_ids), shards.c.state == ShardState.LEASED)
            .group_by(shards.c.scheduled_id)
        ).all()
    )


def claim_shard(
    conn: Connection,
    user_id: str,
    worker_id: str,
    labels: set[str] | frozenset[str] | None,
    scheduled_id: str | None = None,
) -> ShardAssignment | None:
    """THE atomic claim: the first OPEN shard (dispatch order of the runs, then index order) of a run under its
    cap becomes LEASED by ``worker_id`` (attempts + 1). None when there is none. Call in a write transaction.

    The cap is checked under the plan's row lock (PostgreSQL: ``FOR UPDATE``; SQLite: the one writer), so
    concurrent claims never lease more than ``parallelism`` shards of a run, and the conditional update
    (``WHERE state = 'OPEN'``) never hands one shard to two workers.
    """
    for cand in _candidates(conn, user_id, labels, scheduled_id):
        conn.execute(
            select(shard_plans.c.scheduled_id).where(shard_plans.c.scheduled_id == cand.scheduled_id).with_for_update()
        ).first()
        if (
            cand.parallelism is not None
            and _leased_counts(conn, [cand.scheduled_id]).get(cand.scheduled_id, 0) >= cand.parallelism
        ):
            continue
        row = conn.execute(
            select(*_COLS)
            .where(shards.c.scheduled_id == cand.scheduled_id, shards.c.state == ShardState.OPEN)
            .order_by(shards.c.idx)
            .limit(1)
        ).first()
        if row is None:
            continue
        now = now_ms()
        _touch(conn, worker_id, now)
        res = conn.execute(
            update(shards)
            .where(shards.c.id == row.id, shards.c.state == ShardState.OPEN)
            .values(
                state=ShardState.LEASED,
                worker_id=worker_id,
                attempts=shards.c.attempts + 1,
                processed=0,
                leased_at=now,
                message=None,
                updated_at=now,
            )
        )
        if res.rowcount != 1:
            continue
        taken = conn.execute(select(*_COLS).where(shards.c.id == row.id)).one()
        return ShardAssignment(
            shard=shard_data(taken, cand.run_id),
            dataset_id=cand.dataset_id,
            config=get_config(conn, user_id, cand.config_id).config,
            input_digest=cand.input_digest,
        )
    return None


def claim_own_shard(conn: Connection, user_id: str, worker_id: str, scheduled_id: str) -> ShardAssignment | None:
    """The coordinator takes the next OPEN shard of the run it holds (same cap, same atomic claim)."""
    _holder_check(_scheduled(conn, user_id, scheduled_id), worker_id, "claims its shards here")
    if _plan_row(conn, scheduled_id) is None:
        raise _not_found("shard plan of scheduled run", scheduled_id)
    return claim_shard(conn, user_id, worker_id, None, scheduled_id)


# ---------------------------------------------------------------- the holder's calls


def _lost(r: DbRow, worker_id: str) -> ApiError:
    """The 409 of a caller that does not hold shard ``r`` (any more), saying why."""
    if r.state == ShardState.LEASED:
        why = f"it is LEASED by worker {r.worker_id} now (this worker's lease expired or it never held it)"
    elif r.state == ShardState.OPEN:
        why = "it is OPEN again (the lease expired, or it was handed back)"
    elif r.state == ShardState.DONE:
        why = f"it is DONE (result from worker {r.worker_id})"
    else:
        why = f"it is {r.state}: {r.message or 'no reason recorded'}"
    return conflict(f"worker {worker_id} does not hold shard {r.id}: {why}; drop it")


def _check_run_alive(conn: Connection, r: DbRow) -> None:
    """409 when the shard's scheduled run has ended (the lease sweep then CANCELs its shards)."""
    state = conn.execute(select(scheduled_runs.c.state).where(scheduled_runs.c.id == r.scheduled_id)).scalar()
    if state not in ACTIVE:
        raise conflict(
            f"shard {r.id}: scheduled run {r.scheduled_id} ended ({state}); its shards are canceled, drop it"
        )


def heartbeat_shard(conn: Connection, user_id: str, shard_id: str, worker_id: str, processed: int | None) -> ShardData:
    """The holder renews the shard's lease (and its own), recording ``processed``. 409 if it lost the shard."""
    r = _shard(conn, user_id, shard_id)
    _check_run_alive(conn, r)
    if processed is not None and processed > r.stop - r.start:
        raise bad_request(f"processed ({processed}) is more than the shard's {r.stop - r.start} files")
    now = now_ms()
    _touch(conn, worker_id, now)
    values: dict[str, Any] = {"leased_at": now}
    if processed is not None:
        values["processed"] = processed
    res = conn.execute(
        update(shards)
        .where(shards.c.id == shard_id, shards.c.state == ShardState.LEASED, shards.c.worker_id == worker_id)
        .values(**values)
    )
    if res.rowcount != 1:
        raise _lost(r, worker_id)
    return _data(conn, shard_id)


def hand_back_shard(conn: Connection, user_id: str, shard_id: str, worker_id: str) -> ShardData:
    """The holder hands the shard back (SIGTERM): OPEN again, and this take does not count as an attempt."""
    r = _shard(conn, user_id, shard_id)
    _check_run_alive(conn, r)
    now = now_ms()
    res = conn.execute(
        update(shards)
        .where(shards.c.id == shard_id, shards.c.state == ShardState.LEASED, shards.c.worker_id == worker_id)
        .values(
            state=ShardState.OPEN,
            worker_id=None,
            attempts=case((shards.c.attempts > 0, shards.c.attempts - 1), else_=0),
            leased_at=None,
            updated_at=now,
        )
    )
    if res.rowcount != 1:
        raise _lost(r, worker_id)
    notify(conn, [user_id])
    return _data(conn, shard_id)


def check_shard_finish(conn: Connection, user_id: str, shard_id: str, worker_id: str) -> None:
    """Read-only: the 409 (or 404) ``finish`` would answer, before the bytes are sent."""
    r = _shard(conn, user_id, shard_id)
    _check_run_alive(conn, r)
    if r.state == ShardState.DONE:
        if r.worker_id != worker_id:
            raise conflict(
                f"shard {shard_id} is already DONE with the result of worker {r.worker_id}; this duplicate is discarded"
            )
    elif r.state != ShardState.LEASED or r.worker_id != worker_id:
        raise _lost(r, worker_id)


def finish_shard(conn: Connection, user_id: str, shard_id: str, worker_id: str, size: int) -> tuple[ShardData, bool]:
    """The holder's result arrived (``size`` bytes): DONE. Returns (the shard, whether the caller must store
    the bytes now, inside this transaction). A repeat from the worker that finished it: (shard, False)."""
    r = _shard(conn, user_id, shard_id)
    _check_run_alive(conn, r)
    if r.state == ShardState.DONE:
        if r.worker_id == worker_id:
            return _data(conn, shard_id), False  # a retried upload: the first result stays
        raise conflict(
            f"shard {shard_id} is already DONE with the result of worker {r.worker_id}; this duplicate is discarded"
        )
    now = now_ms()
    _touch(conn, worker_id, now)
    res = conn.execute(
        update(shards)
        .where(shards.c.id == shard_id, shards.c.state == ShardState.LEASED, shards.c.worker_id == worker_id)
        .values(
            state=ShardState.DONE,
            result_bytes=size,
            processed=r.stop - r.start,
            leased_at=None,
            updated_at=now,
        )
    )
    if res.rowcount != 1:
        raise _lost(r, worker_id)
    notify(conn, [user_id])  # a capped run has a free slot now
    return _data(conn, shard_id), True


def shard_result_size(conn: Connection, user_id: str, shard_id: str) -> int:
    """The stored result's size; 404 until the shard is DONE."""
    r = _shard(conn, user_id, shard_id)
    if r.state != ShardState.DONE or r.result_bytes is None:
        raise ApiError(404, ApiErrorCode.NOT_FOUND, f"shard {shard_id} has no result: it is {r.state}, not DONE")
    return int(r.result_bytes)


def _data(conn: Connection, shard_id: str) -> ShardData:
    r = conn.execute(select(*_COLS).where(shards.c.id == shard_id)).one()
    run_id = conn.execute(select(shard_plans.c.run_id).where(shard_plans.c.scheduled_id == r.scheduled_id)).scalar()
    return shard_data(r, run_id)


# ---------------------------------------------------------------- faults: lost workers, ended runs


def _reopen(
    conn: Connection, held: Sequence[DbRow], reason: str, max_attempts: int | None, cond: Any = None
) -> list[str]:
    """Reopen LEASED shards (or, past ``max_attempts`` takes, FAIL them with the reason)."""
    now = now_ms()
    reopened: list[str] = []
    users: set[str] = set()
    for r in held:
        if max_attempts is not None and r.attempts >= max_attempts:
            values: dict[str, Any] = {
                "state": ShardState.FAILED,
                "message": f"gave up after {r.attempts} attempts; last: {reason}"[:MAX_MESSAGE_LENGTH],
            }
        else:
            values = {"state": ShardState.OPEN, "worker_id": None}
        where = [shards.c.id == r.id, shards.c.state == ShardState.LEASED, shards.c.worker_id == r.worker_id]
        if cond is not None:
            where.append(cond)
        res = conn.execute(update(shards).where(*where).values(leased_at=None, updated_at=now, **values))
        if res.rowcount and values["state"] == ShardState.OPEN:
            reopened.append(r.id)
            users.add(r.user_id)
    notify(conn, users)
    return reopened


def release_worker_shards(conn: Connection, worker_id: str, reason: str, max_attempts: int | None) -> list[str]:
    """A worker was deregistered or restarted: the shards it held reopen at once. Returns the reopened ids."""
    held = conn.execute(
        select(shards.c.id, shards.c.user_id, shards.c.worker_id, shards.c.attempts).where(
            shards.c.worker_id == worker_id, shards.c.state == ShardState.LEASED
        )
    ).all()
    return _reopen(conn, held, reason, max_attempts)


def expire_shard_leases(conn: Connection, lease_ms: int, max_attempts: int) -> list[str]:
    """LEASED shards not renewed for ``lease_ms`` reopen (or FAIL past ``max_attempts``). Safe on every replica."""
    cutoff = now_ms() - lease_ms
    held = conn.execute(
        select(shards.c.id, shards.c.user_id, shards.c.worker_id, shards.c.attempts).where(
            shards.c.state == ShardState.LEASED, shards.c.leased_at < cutoff
        )
    ).all()
    reason = f"its worker sent no heartbeat for more than {lease_ms / 1000:g} s (lease expired)"
    return _reopen(conn, held, reason, max_attempts, shards.c.leased_at < cutoff)


def end_shards(conn: Connection, scheduled_id: str, state: str) -> None:
    """The scheduled run ended (``state``): its OPEN, LEASED and DONE shards become CANCELED. Their stored
    results are deleted by the next lease sweep (``sweep``), which also catches any end not hooked here."""
    conn.execute(
        update(shards)
        .where(
            shards.c.scheduled_id == scheduled_id,
            shards.c.state.in_([ShardState.OPEN, ShardState.LEASED, ShardState.DONE]),
        )
        .values(
            state=ShardState.CANCELED,
            leased_at=None,
            message=f"scheduled run {scheduled_id} ended ({state})",
            updated_at=now_ms(),
        )
    )


def sweep_shards(conn: Connection, lease_ms: int, max_attempts: int) -> tuple[list[str], list[str]]:
    """The lease sweep's part: expired shard leases reopen (or FAIL), shards of scheduled runs that ended by
    whichever path are CANCELED. Returns (reopened shard ids, shard ids whose stored result the caller
    deletes after the commit)."""
    reopened = expire_shard_leases(conn, lease_ms, max_attempts)
    ended = conn.execute(
        select(shards.c.scheduled_id, scheduled_runs.c.state)
        .select_from(shards.join(scheduled_runs, scheduled_runs.c.id == shards.c.scheduled_id))
        .where(
            shards.c.state.in_([ShardState.OPEN, ShardState.LEASED, ShardState.DONE]),
            scheduled_runs.c.state.not_in(list(ACTIVE)),
        )
        .distinct()
    ).all()
    for sid, state in ended:
        end_shards(conn, sid, state)
    stale = list(
        conn.execute(
            select(shards.c.id).where(shards.c.state == ShardState.CANCELED, shards.c.result_bytes.is_not(None))
        ).scalars()
    )
    if stale:
        conn.execute(update(shards).where(shards.c.id.in_(stale)).values(result_bytes=None))
    return reopened, stale


# ---------------------------------------------------------------- the summary


def shard_summary(conn: Connection, user_id: str) -> list[ShardSummary]:
    """Shard counts of the user's unfinished scheduled runs that have a plan (the operator's queue depth)."""
    plans = conn.execute(
        select(
            shard_plans.c.scheduled_id,
            shard_plans.c.parallelism,
            scheduled_runs.c.dataset_id,
            scheduled_runs.c.runs_on,
        )
        .select_from(shard_plans.join(scheduled_runs, scheduled_runs.c.id == shard_plans.c.scheduled_id))
        .where(shard_plans.c.user_id == user_id, scheduled_runs.c.state.in_(ACTIVE))
        .order_by(*DISPATCH_ORDER)
    ).all()
    if not plans:
        return []
    ids = [p.scheduled_id for p in plans]
    counts: dict[str, dict[str, int]] = {}
    for sid, state, n in conn.execute(
        select(shards.c.scheduled_id, shards.c.state, func.count())
        .where(shards.c.scheduled_id.in_(ids))
        .group_by(shards.c.scheduled_id, shards.c.state)
    ).all():
        counts.setdefault(sid, {})[state] = n
    holders: dict[str, list[str]] = {}
    for sid, wid in conn.execute(
        select(shards.c.scheduled_id, shards.c.worker_id).where(
            shards.c.user_id == user_id, shards.c.state == ShardState.LEASED
        )
    ).all():
        holders.setdefault(sid, []).append(wid)
    out = []
    for p in plans:
        c = counts.get(p.scheduled_id, {})
        out.append(
            ShardSummary(
                scheduled_id=p.scheduled_id,
                dataset_id=p.dataset_id,
                runs_on=sorted(parse_runs_on(p.runs_on)),
                open=c.get(ShardState.OPEN, 0),
                leased=c.get(ShardState.LEASED, 0),
                done=c.get(ShardState.DONE, 0),
                failed=c.get(ShardState.FAILED, 0),
                total=sum(c.values()),
                parallelism=_parallelism(p.parallelism),
                holders=sorted(holders.get(p.scheduled_id, [])),
            )
        )
    return out
