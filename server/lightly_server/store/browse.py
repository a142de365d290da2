"""What the web console lists (``lightly_server.console``): filtered pages of runs, the run each worker
holds, one page of a tag's samples. Each is one or two indexed queries, so a page costs the same over
10,000 runs or 100,000 samples (docs/benchmarks.md, "Web console")."""

from __future__ import annotations

from dataclasses import dataclass

from lightly_protocol.enums import TERMINAL_RUN_STATES, ScheduledState
from sqlalchemy import Connection, func, select

from .. import bitmask
from ..schema import DbRow, artifacts, datasets, run_logs, runs, samples, scheduled_runs, workers
from .dispatch import DISPATCH_ORDER


@dataclass(frozen=True)
class RunFilter:
    """The runs list's filters; None: any."""

    state: str | None = None
    dataset_id: str | None = None
    worker_id: str | None = None
    created_from: int | None = None  # ms, inclusive
    created_to: int | None = None  # ms, exclusive


def filtered_runs(conn: Connection, user_id: str, where: RunFilter, limit: int, offset: int) -> tuple[list[DbRow], int]:
    """(a page of the user's runs matching ``where``, newest first, with ``dataset_name`` and
    ``worker_name``; how many match in all)."""
    cond = [runs.c.user_id == user_id]
    if where.state:
        cond.append(runs.c.state == where.state)
    if where.dataset_id:
        cond.append(runs.c.dataset_id == where.dataset_id)
    if where.worker_id:
        cond.append(runs.c.worker_id == where.worker_id)
    if where.created_from is not None:
        cond.append(runs.c.created_at >= where.created_from)
    if where.created_to is not None:
        cond.append(runs.c.created_at < where.created_to)
    total = int(conn.execute(select(func.count()).select_from(runs).where(*cond)).scalar() or 0)
    q = (
        select(runs, datasets.c.name.label("dataset_name"), workers.c.name.label("worker_name"))
        .select_from(
            runs.outerjoin(datasets, datasets.c.id == runs.c.dataset_id).outerjoin(
                workers, workers.c.id == runs.c.worker_id
            )
        )
        .where(*cond)
        .order_by(runs.c.created_at.desc(), runs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(conn.execute(q).all()), total


def held_runs(conn: Connection, user_id: str) -> dict[str, DbRow]:
    """worker id -> the newest run it holds that has not ended (for the user's workers)."""
    q = (
        select(runs.c.id, runs.c.state, runs.c.worker_id, runs.c.created_at)
        .where(runs.c.user_id == user_id, runs.c.worker_id.is_not(None))
        .where(runs.c.state.not_in(list(TERMINAL_RUN_STATES)))
        .order_by(runs.c.created_at)
    )
    return {r.worker_id: r for r in conn.execute(q).all()}


def tag_page(conn: Connection, tag: DbRow, limit: int, offset: int) -> tuple[list[DbRow], int]:
    """(``idx``, ``file_name``) of one page of a tag's samples in sample order; how many the tag holds.
    The bitmask is read once and only the page's rows are fetched."""
    members = _set_bits(bitmask.decode(tag.bit_mask))
    wanted = members[offset : offset + limit]
    if not wanted:
        return [], len(members)
    q = (
        select(samples.c.idx, samples.c.file_name)
        .where(samples.c.dataset_id == tag.dataset_id, samples.c.idx.in_(wanted))
        .order_by(samples.c.idx)
    )
    return list(conn.execute(q).all()), len(members)


def _set_bits(bits: bytes) -> list[int]:
    """The indices of the set bits (least significant byte first), in order."""
    out: list[int] = []
    for byte_index, byte in enumerate(bits):
        if byte:
            base = byte_index << 3
            out.extend(base + b for b in range(8) if byte >> b & 1)
    return out


def queued_scheduled(conn: Connection, user_id: str, limit: int) -> list[DbRow]:
    """The user's OPEN scheduled runs (waiting for a worker) in dispatch order, with ``dataset_name``."""
    q = (
        select(scheduled_runs, datasets.c.name.label("dataset_name"))
        .select_from(scheduled_runs.join(datasets, datasets.c.id == scheduled_runs.c.dataset_id))
        .where(scheduled_runs.c.user_id == user_id, scheduled_runs.c.state == ScheduledState.OPEN)
        .order_by(*DISPATCH_ORDER)
        .limit(limit)
    )
    return list(conn.execute(q).all())


def log_tail(conn: Connection, run_id: str, n: int) -> list[DbRow]:
    """(``seq``, ``entry``) of a run's last ``n`` log lines, oldest first (the caller checked the owner)."""
    q = select(run_logs.c.seq, run_logs.c.entry).where(run_logs.c.run_id == run_id).order_by(run_logs.c.seq.desc())
    return list(reversed(conn.execute(q.limit(n)).all()))


def log_states(conn: Connection, run_id: str, limit: int = 50_000) -> list[str]:
    """The JSON entries of a run's log in order (at most ``limit``): their states and times give the
    stage timings."""
    q = select(run_logs.c.entry).where(run_logs.c.run_id == run_id).order_by(run_logs.c.seq).limit(limit)
    return [r.entry for r in conn.execute(q).all()]


def run_artifact_named(conn: Connection, run_id: str, file_name: str) -> DbRow | None:
    """The newest uploaded and confirmed artifact ``file_name`` of a run (the caller checked the owner)."""
    q = (
        select(artifacts.c.id, artifacts.c.size)
        .where(artifacts.c.run_id == run_id, artifacts.c.file_name == file_name)
        .where(artifacts.c.uploaded.is_(True), artifacts.c.confirmed.is_(True))
        .order_by(artifacts.c.created_at.desc())
        .limit(1)
    )
    return conn.execute(q).first()


def run_row(conn: Connection, run_id: str) -> DbRow:
    """A run by id, without an owner check (the caller checked it when it started the work)."""
    row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        raise LookupError(f"run {run_id} is gone")
    return row
