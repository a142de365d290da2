"""Tags: the dataset's ``initial-tag`` (every sample), a run's selection materialised as a dataset tag,
tags a user creates from a bitmask, tag lookup and filenames."""

from __future__ import annotations

import json

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import MAX_NAME_LENGTH, TagCreateRequest
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import IntegrityError

from .. import bitmask
from ..errors import bad_request, conflict
from ..ids import new_id, now_ms
from ..schema import DbRow, datasets, run_selections, runs, samples, tags
from .common import owned
from .datasets import get_dataset

#: Lightly's name of the tag that holds every sample of a dataset
INITIAL_TAG = "initial-tag"


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
        refresh_initial_tag(conn, dataset_id, len(known))
    return known


def refresh_initial_tag(conn: Connection, dataset_id: str, n_samples: int) -> str:
    """The dataset's ``initial-tag`` covers its ``n_samples`` samples (created with the first ones)."""
    mask = bitmask.encode(range(n_samples), n_samples)
    row = conn.execute(select(tags.c.id).where(tags.c.dataset_id == dataset_id, tags.c.name == INITIAL_TAG)).first()
    if row is not None:
        conn.execute(update(tags).where(tags.c.id == row.id).values(bit_mask=mask, tot_size=n_samples))
        return str(row.id)
    tid = new_id()
    conn.execute(
        tags.insert().values(
            id=tid,
            dataset_id=dataset_id,
            name=INITIAL_TAG,
            prev_tag_id=None,
            run_id=None,
            bit_mask=mask,
            tot_size=n_samples,
            created_at=now_ms(),
        )
    )
    return tid


def initial_tag_id(conn: Connection, dataset_id: str) -> str | None:
    row = conn.execute(select(tags.c.id).where(tags.c.dataset_id == dataset_id, tags.c.name == INITIAL_TAG)).first()
    return None if row is None else str(row.id)


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
            prev_tag_id=initial_tag_id(conn, run.dataset_id),
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


def tag_samples(conn: Connection, tag: DbRow) -> list[DbRow]:
    """(``idx``, ``file_name``) of the tag's samples, in sample order."""
    rows = conn.execute(
        select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == tag.dataset_id).order_by(samples.c.idx)
    ).all()
    inside = bitmask.members(tag.bit_mask, (r.idx for r in rows))
    return [r for r, yes in zip(rows, inside, strict=True) if yes]


def tag_filenames(conn: Connection, tag: DbRow) -> list[str]:
    rows = conn.execute(
        select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == tag.dataset_id).order_by(samples.c.idx)
    ).all()
    inside = bitmask.members(tag.bit_mask, (r.idx for r in rows))
    return [r.file_name for r, yes in zip(rows, inside, strict=True) if yes]


def create_tag(conn: Connection, user_id: str, dataset_id: str, req: TagCreateRequest) -> str:
    """A tag of the dataset's samples whose bits ``req.bit_mask_data`` sets (each bit a sample index).

    ``totSize`` must be the dataset's sample count (what the client counted the bits against), the
    parent tag must be of this dataset, the name new in it, and ``runId`` one of the user's runs."""
    get_dataset(conn, user_id, dataset_id)
    owned(conn, tags, req.prev_tag_id, dataset_id, ApiErrorCode.TAG_UNKNOWN, "prevTagId: tag", "dataset_id")
    if req.run_id is not None:
        owned(conn, runs, req.run_id, user_id, ApiErrorCode.DOCKER_RUN_UNKNOWN, "runId: run")
    n = conn.execute(select(func.count()).select_from(samples).where(samples.c.dataset_id == dataset_id)).scalar() or 0
    if req.tot_size != n:
        raise bad_request(
            f"totSize is {req.tot_size} but dataset {dataset_id} has {n} samples; count the bits against "
            "the dataset's current filenames (GET .../mappings)"
        )
    bits = bitmask.decode(req.bit_mask_data)
    if any(bits[i >> 3] >> (i & 7) & 1 for i in range(n, len(bits) * 8)):
        raise bad_request(f"bitMaskData sets a bit at or beyond totSize {n}: the dataset has no such sample")
    if not any(bits):
        raise bad_request("bitMaskData selects no sample; a tag needs at least one")
    tid = new_id()
    try:
        with conn.begin_nested():
            conn.execute(
                tags.insert().values(
                    id=tid,
                    dataset_id=dataset_id,
                    name=req.name,
                    prev_tag_id=req.prev_tag_id,
                    run_id=req.run_id,
                    # the mask's hex has no leading zero bytes: its bytes may cover fewer than n bits
                    bit_mask=bitmask.encode(
                        (i for i in range(min(n, len(bits) * 8)) if bits[i >> 3] >> (i & 7) & 1), n
                    ),
                    tot_size=n,
                    created_at=now_ms(),
                )
            )
    except IntegrityError:
        raise conflict(f"dataset {dataset_id} already has a tag named {req.name!r}; pick another name") from None
    conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(last_modified_at=now_ms()))
    return tid
