"""THE dispatch rule and the queries both poll paths use: which OPEN runs a worker may take."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence

from lightly_protocol.enums import ScheduledState
from sqlalchemy import Connection, select

from ..schema import DbRow, scheduled_runs

DISPATCH_ORDER = (scheduled_runs.c.priority_rank.desc(), scheduled_runs.c.created_at, scheduled_runs.c.id)


def open_candidates(conn: Connection, user_ids: Iterable[str]) -> tuple[Sequence[DbRow], set[str]]:
    """OPEN scheduled runs of these users in dispatch order, and those of their datasets that hold a lock.

    One query, and O(open runs): whether a run's dataset is locked is an EXISTS on the one-LOCKED-run-per-
    dataset index, so a fleet of thousands of busy workers (as many LOCKED runs) adds nothing to it.
    """
    ids = list(set(user_ids))
    holder = scheduled_runs.alias("holder")
    dataset_locked = (
        select(holder.c.id)
        .where(holder.c.dataset_id == scheduled_runs.c.dataset_id, holder.c.state == ScheduledState.LOCKED)
        .exists()
        .label("dataset_locked")
    )
    rows = conn.execute(
        select(scheduled_runs, dataset_locked)
        .where(scheduled_runs.c.state == ScheduledState.OPEN, scheduled_runs.c.user_id.in_(ids))
        .order_by(*DISPATCH_ORDER)
    ).all()
    return rows, {r.dataset_id for r in rows if r.dataset_locked}


def has_open_runs(conn: Connection, scheduled_id: str) -> bool:
    """Whether the dataset of a scheduled run has an OPEN scheduled run: one that the run's lock (now
    ended) was holding back. When it has none, the end of the run changes nothing a waiting worker
    could get (no wake-up is needed)."""
    its_dataset = select(scheduled_runs.c.dataset_id).where(scheduled_runs.c.id == scheduled_id).scalar_subquery()
    found = conn.execute(
        select(scheduled_runs.c.id)
        .where(scheduled_runs.c.dataset_id == its_dataset, scheduled_runs.c.state == ScheduledState.OPEN)
        .limit(1)
    ).first()
    return found is not None


@functools.lru_cache(maxsize=4096)
def parse_runs_on(raw: str) -> frozenset[str]:
    """A stored runsOn (sorted JSON list) as a set; a fleet has few distinct ones, so this is cached."""
    return frozenset(json.loads(raw))


def runs_on_fits(row: DbRow, labels: set[str] | frozenset[str]) -> bool:
    return parse_runs_on(row.runs_on) <= labels


def dispatchable(
    row: DbRow, labels: set[str] | frozenset[str] | None, locked_datasets: set[str], include_unlockable: bool
) -> bool:
    """THE dispatch rule, used by both poll paths (plain listing and long-poll wake-ups).

    runsOn ⊆ labels (labels None = any), and by default an OPEN run only when its dataset holds no
    lock (a LOCKED run is never "unlockable" from its own listing's point of view).
    """
    return (labels is None or runs_on_fits(row, labels)) and (
        include_unlockable or row.state != ScheduledState.OPEN or row.dataset_id not in locked_datasets
    )


def filter_schedule(
    rows: Iterable[DbRow], locked_datasets: set[str], labels: set[str] | frozenset[str] | None, include_unlockable: bool
) -> list[DbRow]:
    """The rows the dispatch rule (``dispatchable``) lets through."""
    return [r for r in rows if dispatchable(r, labels, locked_datasets, include_unlockable)]


def schedule_query(
    conn: Connection,
    user_id: str,
    states: Sequence[str],
    labels: set[str] | frozenset[str] | None,
    include_unlockable: bool,
) -> list[DbRow]:
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
