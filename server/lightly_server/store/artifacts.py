"""Artifacts of a run: created unconfirmed, their content uploaded (only while unconfirmed), then confirmed."""

from __future__ import annotations

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import ArtifactCreateRequest
from sqlalchemy import Connection, select, update

from ..errors import ApiError
from ..ids import new_id, now_ms
from ..schema import DbRow, artifacts
from .common import owned
from .runs import get_run
from .workers import touch_worker


def create_artifact(conn: Connection, user_id: str, run_id: str, req: ArtifactCreateRequest) -> str:
    """A new artifact of one of the user's runs, not uploaded yet; renews the run's worker's lease."""
    r = get_run(conn, user_id, run_id)
    aid = new_id()
    conn.execute(
        artifacts.insert().values(
            id=aid,
            run_id=run_id,
            type=req.type,
            file_name=req.file_name,
            storage_location=req.storage_location or "LIGHTLY",
            uploaded=False,
            confirmed=False,
            created_at=now_ms(),
        )
    )
    touch_worker(conn, r.worker_id)
    return aid


def get_artifact(conn: Connection, user_id: str, run_id: str, artifact_id: str) -> DbRow:
    """An artifact of one of the user's runs (404 for the run or the artifact)."""
    get_run(conn, user_id, run_id)
    code = ApiErrorCode.DOCKER_RUN_ARTIFACT_UNKNOWN
    return owned(conn, artifacts, artifact_id, run_id, code, "artifact", owner_column="run_id")


def find_artifact(conn: Connection, artifact_id: str) -> DbRow | None:
    """The artifact of a signed URL (the signature, not a token, authorises it)."""
    return conn.execute(select(artifacts).where(artifacts.c.id == artifact_id)).first()


def confirm_artifact(conn: Connection, user_id: str, run_id: str, artifact_id: str) -> None:
    """Its content is final; 409 while nothing was uploaded."""
    a = get_artifact(conn, user_id, run_id, artifact_id)
    if not a.uploaded:
        raise ApiError(
            409,
            ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
            f"artifact {artifact_id} has no uploaded content yet: PUT the file to its signedWriteUrl first",
        )
    conn.execute(update(artifacts).where(artifacts.c.id == artifact_id).values(confirmed=True))


def is_confirmed(conn: Connection, artifact_id: str) -> bool:
    """Whether the artifact is confirmed, read under its row lock (in a write transaction)."""
    row = conn.execute(select(artifacts.c.confirmed).where(artifacts.c.id == artifact_id).with_for_update()).first()
    return bool(row and row.confirmed)


def mark_uploaded(conn: Connection, artifact_id: str, size: int) -> None:
    conn.execute(update(artifacts).where(artifacts.c.id == artifact_id).values(uploaded=True, size=size))
