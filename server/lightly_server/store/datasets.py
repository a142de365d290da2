"""Datasets and their datasources."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.enums import ApiErrorCode, DatasourcePurpose
from lightly_protocol.models import DatasetCreateRequest
from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from ..errors import conflict
from ..ids import new_id, now_ms
from ..schema import DbRow, datasets, datasources, samples
from .common import owned, paged


def get_dataset(conn: Connection, user_id: str, dataset_id: str) -> DbRow:
    return owned(conn, datasets, dataset_id, user_id, ApiErrorCode.DATASET_UNKNOWN, "dataset")


def list_datasets(
    conn: Connection,
    user_id: str,
    page_size: int | None,
    page_offset: int | None,
    name: str | None = None,
    exact: bool = False,
) -> list[DbRow]:
    """A page of the user's datasets, oldest first; ``name``: only that name (``exact``) or names starting so."""
    q = select(datasets).where(datasets.c.user_id == user_id)
    if name is not None:
        q = q.where(datasets.c.name == name if exact else datasets.c.name.startswith(name, autoescape=True))
    return paged(conn, q.order_by(datasets.c.created_at, datasets.c.id), page_size, page_offset)


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


def dataset_filenames(conn: Connection, user_id: str, dataset_id: str) -> list[str]:
    """The sample filenames of one of the user's datasets, in sample order."""
    get_dataset(conn, user_id, dataset_id)
    return list(
        conn.execute(
            select(samples.c.file_name).where(samples.c.dataset_id == dataset_id).order_by(samples.c.idx)
        ).scalars()
    )
