"""Worker configs."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import WorkerConfigData, WorkerConfigV4
from sqlalchemy import Connection

from ..ids import new_id, now_ms
from ..schema import configs
from .common import owned


def create_config(conn: Connection, user_id: str, config: WorkerConfigV4, orig: dict[str, Any]) -> str:
    cid = new_id()
    conn.execute(
        configs.insert().values(
            id=cid,
            user_id=user_id,
            version="V4",
            config=json.dumps({"config": config.wire(), "orig": orig}),
            created_at=now_ms(),
        )
    )
    return cid


def get_config(conn: Connection, user_id: str, config_id: str) -> WorkerConfigData:
    r = owned(conn, configs, config_id, user_id, ApiErrorCode.DOCKER_WORKER_CONFIG_UNKNOWN, "worker config")
    return config_data(r.id, r.created_at, r.config)


def config_data(config_id: str, created_at: int, stored_json: str) -> WorkerConfigData:
    """A stored config (its columns) as the wire model."""
    return WorkerConfigData(
        id=config_id,
        version="V4",
        created_at=created_at,
        config=WorkerConfigV4.model_validate(json.loads(stored_json)["config"]),
    )
