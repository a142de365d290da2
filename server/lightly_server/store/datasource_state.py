"""What the server keeps about a datasource besides its config: ``processedUntilTimestamp``; and the inputs
a scheduling check reads (the run's config and the dataset's datasources)."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.enums import ApiErrorCode, DatasourcePurpose
from lightly_protocol.models import WorkerConfigData
from sqlalchemy import Connection, update

from ..errors import ApiError
from ..schema import datasources
from .datasets import get_dataset, get_datasources, resolve_datasource
from .schedule import _schedule_inputs

#: the stored config's key holding processedUntilTimestamp (never answered: private keys start with '_')
PROCESSED_UNTIL = "_processedUntilTimestamp"


def _input_datasource(conn: Connection, user_id: str, dataset_id: str) -> dict[str, Any]:
    get_dataset(conn, user_id, dataset_id)
    config = resolve_datasource(get_datasources(conn, dataset_id), DatasourcePurpose.INPUT)
    if config is None:
        raise ApiError(
            404,
            ApiErrorCode.DATASET_DATASOURCE_UNKNOWN,
            f"dataset {dataset_id} has no INPUT datasource yet; set one with PUT .../datasource",
        )
    return config


def processed_until(conn: Connection, user_id: str, dataset_id: str) -> int:
    """The INPUT datasource's processedUntilTimestamp (unix seconds; 0 when never set)."""
    return int(_input_datasource(conn, user_id, dataset_id).get(PROCESSED_UNTIL, 0))


def set_processed_until(conn: Connection, user_id: str, dataset_id: str, timestamp: int) -> None:
    config = _input_datasource(conn, user_id, dataset_id)
    config[PROCESSED_UNTIL] = timestamp
    conn.execute(update(datasources).where(datasources.c.id == config["id"]).values(config=json.dumps(config)))


def schedule_inputs(
    conn: Connection, user_id: str, dataset_id: str, config_id: str
) -> tuple[WorkerConfigData, dict[str, dict[str, Any]]]:
    """The user's worker config and the dataset's datasources by purpose (404s as scheduling answers them)."""
    return _schedule_inputs(conn, user_id, dataset_id, config_id)


def previous_processed_until(previous: dict[str, Any] | None) -> dict[str, Any]:
    """What a replaced datasource config keeps: its processedUntilTimestamp."""
    return {PROCESSED_UNTIL: previous[PROCESSED_UNTIL]} if previous and PROCESSED_UNTIL in previous else {}
