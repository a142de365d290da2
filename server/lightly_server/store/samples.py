"""A dataset's samples by id: Lightly's sample ids are 24 hex characters; ours are the sample's index
(its bit in every tag's bitmask) written as 24 hex digits, so no column or migration is needed."""

from __future__ import annotations

from lightly_protocol.enums import ApiErrorCode
from sqlalchemy import Connection, select

from ..errors import not_found
from ..schema import DbRow, samples
from .datasets import get_dataset

MAX_SAMPLE_INDEX = 2**31 - 1  # the idx column is a 32-bit INTEGER


def sample_id_of(idx: int) -> str:
    return f"{idx:024x}"


def get_sample(conn: Connection, user_id: str, dataset_id: str, sample_id: str) -> DbRow:
    """The sample (``idx``, ``file_name``) of one of the user's datasets (404 for either)."""
    get_dataset(conn, user_id, dataset_id)
    return find_sample(conn, dataset_id, sample_id)


def find_sample(conn: Connection, dataset_id: str, sample_id: str) -> DbRow:
    """The sample of a dataset, without an owner check (a signed URL authorises it)."""
    idx = int(sample_id, 16)
    row = None
    if idx <= MAX_SAMPLE_INDEX:  # beyond: no such sample (and no such integer in the column)
        q = select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == dataset_id, samples.c.idx == idx)
        row = conn.execute(q).first()
    if row is None:
        raise not_found(ApiErrorCode.SAMPLE_UNKNOWN, "sample", sample_id)
    return row


def dataset_samples(conn: Connection, dataset_id: str) -> list[DbRow]:
    """(``idx``, ``file_name``) of every sample, in sample order."""
    q = select(samples.c.idx, samples.c.file_name).where(samples.c.dataset_id == dataset_id).order_by(samples.c.idx)
    return list(conn.execute(q).all())
