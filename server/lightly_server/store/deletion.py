"""Deleting a dataset: what goes with it, what stays (the user's run history), and when it is refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from lightly_protocol.enums import TERMINAL_RUN_STATES, ApiErrorCode, ScheduledState
from sqlalchemy import Connection, delete, select, update

from ..errors import conflict
from ..schema import (
    datasets,
    datasources,
    embeddings,
    runs,
    samples,
    scheduled_runs,
    shard_plans,
    shards,
    tags,
)
from .datasets import get_dataset


@dataclass
class Deleted:
    """Files the caller removes after the commit: uploaded embedding CSVs and stored shard results."""

    embedding_ids: list[str] = field(default_factory=list)
    shard_ids: list[str] = field(default_factory=list)


def delete_dataset(conn: Connection, user_id: str, dataset_id: str) -> Deleted:
    """Delete one of the user's datasets with its tags, samples, datasources, embeddings and scheduled runs.

    Refused (409) while a worker processes a run of it: a LOCKED scheduled run or a run that has not
    ended. Its OPEN scheduled runs go with it (no worker could ever run them). The user's runs stay (run
    history, logs, artifacts), without their reference to the dataset."""
    get_dataset(conn, user_id, dataset_id)
    busy = conn.execute(
        select(runs.c.id, runs.c.state)
        .where(runs.c.dataset_id == dataset_id, runs.c.state.not_in(list(TERMINAL_RUN_STATES)))
        .limit(1)
    ).first()
    locked = conn.execute(
        select(scheduled_runs.c.id).where(
            scheduled_runs.c.dataset_id == dataset_id, scheduled_runs.c.state == ScheduledState.LOCKED
        )
    ).first()
    if busy is not None:
        what = f"run {busy.id} is {busy.state}"
    elif locked is not None:
        what = f"scheduled run {locked.id} is LOCKED"
    else:
        what = ""
    if what:
        raise conflict(
            f"dataset {dataset_id} is in use: {what} on a worker; delete the dataset once the run has ended",
            ApiErrorCode.ILLEGAL_ACTION_RESOURCE_IN_USE,
        )
    out = Deleted()
    scheduled = select(scheduled_runs.c.id).where(scheduled_runs.c.dataset_id == dataset_id)
    out.shard_ids = list(
        conn.execute(
            select(shards.c.id).where(shards.c.scheduled_id.in_(scheduled), shards.c.result_bytes.is_not(None))
        ).scalars()
    )
    out.embedding_ids = list(
        conn.execute(
            select(embeddings.c.id).where(embeddings.c.dataset_id == dataset_id, embeddings.c.artifact_id.is_(None))
        ).scalars()
    )
    conn.execute(delete(shards).where(shards.c.scheduled_id.in_(scheduled)))
    conn.execute(delete(shard_plans).where(shard_plans.c.scheduled_id.in_(scheduled)))
    conn.execute(update(runs).where(runs.c.dataset_id == dataset_id).values(dataset_id=None))
    conn.execute(delete(scheduled_runs).where(scheduled_runs.c.dataset_id == dataset_id))
    for table in (tags, samples, datasources, embeddings):
        conn.execute(delete(table).where(table.c.dataset_id == dataset_id))
    conn.execute(update(datasets).where(datasets.c.parent_dataset_id == dataset_id).values(parent_dataset_id=None))
    conn.execute(delete(datasets).where(datasets.c.id == dataset_id))
    return out
