"""Worker configs."""

from __future__ import annotations

import json
from typing import Any

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import WorkerConfigData, WorkerConfigV4
from sqlalchemy import Connection

from ..db import configs
from ..ids import new_id, now_ms
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
    stored = json.loads(r.config)
    return WorkerConfigData(
        id=r.id,
        version="V4",
        created_at=r.created_at,
        config=WorkerConfigV4.model_validate(stored["config"]),
    )
