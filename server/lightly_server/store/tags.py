"""Tags: a run's selection materialised as a dataset tag, tag lookup and filenames."""

from __future__ import annotations

import json

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import MAX_NAME_LENGTH
from sqlalchemy import Connection, select, update

from .. import bitmask
from ..ids import new_id, now_ms
from ..schema import DbRow, datasets, run_selections, samples, tags
from .common import owned
from .datasets import get_dataset


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


def materialize_selection_tag(conn: Connection, run: DbRow) -> str | None:
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


def list_tags(conn: Connection, user_id: str, dataset_id: str) -> list[DbRow]:
    """The tags of one of the user's datasets, oldest first."""
    get_dataset(conn, user_id, dataset_id)
    q = select(tags).where(tags.c.dataset_id == dataset_id).order_by(tags.c.created_at, tags.c.id)
    return list(conn.execute(q).all())


def tags_of_run(conn: Connection, run_id: str) -> list[DbRow]:
    return list(conn.execute(select(tags).where(tags.c.run_id == run_id).order_by(tags.c.created_at)).all())


def get_tag(conn: Connection, user_id: str, dataset_id: str, tag_id: str) -> DbRow:
    get_dataset(conn, user_id, dataset_id)
    return owned(conn, tags, tag_id, dataset_id, ApiErrorCode.TAG_UNKNOWN, "tag", owner_column="dataset_id")


def tag_filenames(conn: Connection, tag: DbRow) -> list[str]:
    rows = conn.execute(
        select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == tag.dataset_id).order_by(samples.c.idx)
    ).all()
    inside = bitmask.members(tag.bit_mask, (r.idx for r in rows))
    return [r.file_name for r, yes in zip(rows, inside, strict=True) if yes]
