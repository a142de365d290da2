"""Rows to wire models (the ``*_data`` functions); lists read their related rows in one query."""

from __future__ import annotations

import json
from collections.abc import Sequence

from lightly_protocol.enums import DatasourcePurpose, ImageType, ScheduledState, WorkerType
from lightly_protocol.models import (
    ArtifactData,
    DatasetData,
    RunData,
    ScheduledRunData,
    TagData,
    WorkerData,
    safe_artifact_name,
)
from sqlalchemy import Connection, func, select

from ..schema import DbRow, artifacts, datasources, samples


def worker_data(r: DbRow) -> WorkerData:
    return WorkerData(
        id=r.id,
        user_id=r.user_id,
        name=r.name,
        worker_type=WorkerType.FULL,
        state=r.state,
        created_at=r.created_at,
        last_modified_at=r.last_modified_at,
        labels=json.loads(r.labels),
        docker_version=r.docker_version,
    )


def datasets_data(conn: Connection, rows: Sequence[DbRow]) -> list[DatasetData]:
    """Wire form of datasets, with sample counts and datasource ids read in two queries for all of them."""
    ids = [r.id for r in rows]
    counts: dict[str, int] = {}
    sources: dict[str, list[str]] = {}
    full: set[str] = set()  # datasets whose samples are full images in an input datasource (read URLs)
    if ids:
        counts = dict(
            conn.execute(
                select(samples.c.dataset_id, func.count())
                .where(samples.c.dataset_id.in_(ids))
                .group_by(samples.c.dataset_id)
            ).all()
        )
        for dataset_id, ds_id, purpose in conn.execute(
            select(datasources.c.dataset_id, datasources.c.id, datasources.c.purpose).where(
                datasources.c.dataset_id.in_(ids)
            )
        ):
            sources.setdefault(dataset_id, []).append(ds_id)
            if purpose in (DatasourcePurpose.INPUT, DatasourcePurpose.INPUT_OUTPUT):
                full.add(dataset_id)
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
            img_type=r.img_type or (ImageType.FULL if r.id in full else None),
            datasources=sources.get(r.id) or None,
            parent_dataset_id=r.parent_dataset_id,
        )
        for r in rows
    ]


def dataset_data(conn: Connection, r: DbRow) -> DatasetData:
    return datasets_data(conn, [r])[0]


def scheduled_data(r: DbRow) -> ScheduledRunData:
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


def runs_data(conn: Connection, rows: Sequence[DbRow]) -> list[RunData]:
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


def run_data(conn: Connection, r: DbRow) -> RunData:
    return runs_data(conn, [r])[0]


def tag_data(r: DbRow) -> TagData:
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
