"""A dataset's embeddings (Lightly's embeddings API): CSVs a user uploads, and the one each completed run
registers from its ``data/selected_embeddings_including_datapool.csv`` artifact (named ``default_<time>``,
the name ``download_embeddings_csv`` looks for)."""

from __future__ import annotations

import time

from lightly_protocol.enums import ApiErrorCode
from lightly_protocol.models import DatasetEmbeddingData
from sqlalchemy import Connection, delete, select, update

from ..errors import bad_request
from ..ids import new_id, now_ms
from ..schema import DbRow, artifacts, embeddings
from .common import owned
from .datasets import get_dataset

#: the artifact of a completed run that becomes its ``default_<time>`` embedding: the embeddings of the
#: samples the run added to the dataset (its selection) and of the datapool's earlier ones
RUN_EMBEDDINGS_ARTIFACT = "data/selected_embeddings_including_datapool.csv"
MAX_EMBEDDING_NAME = 300


def embedding_data(r: DbRow) -> DatasetEmbeddingData:
    return DatasetEmbeddingData(
        id=r.id, name=r.name, is_processed=bool(r.uploaded), created_at=r.created_at, is2d=False
    )


def list_embeddings(conn: Connection, user_id: str, dataset_id: str) -> list[DbRow]:
    """The dataset's stored embeddings, newest first (the client takes the first as the latest)."""
    get_dataset(conn, user_id, dataset_id)
    q = (
        select(embeddings)
        .where(embeddings.c.dataset_id == dataset_id, embeddings.c.uploaded.is_(True))
        .order_by(embeddings.c.created_at.desc(), embeddings.c.id.desc())
    )
    return list(conn.execute(q).all())


def embedding_name_problem(name: str) -> str | None:
    if not name.strip():
        return "name must not be empty"
    if len(name) > MAX_EMBEDDING_NAME:
        return f"name: at most {MAX_EMBEDDING_NAME} characters (got {len(name)})"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in name):
        return "name must not contain control characters"
    return None


def create_embedding(conn: Connection, user_id: str, dataset_id: str, name: str) -> str:
    """A new embedding of the dataset, listed once its CSV is uploaded to its signed URL."""
    get_dataset(conn, user_id, dataset_id)
    problem = embedding_name_problem(name)
    if problem:
        raise bad_request(problem)
    eid = new_id()
    conn.execute(
        embeddings.insert().values(
            id=eid, dataset_id=dataset_id, name=name, uploaded=False, created_at=now_ms(), run_id=None
        )
    )
    return eid


def get_embedding(conn: Connection, user_id: str, dataset_id: str, embedding_id: str) -> DbRow:
    get_dataset(conn, user_id, dataset_id)
    code = ApiErrorCode.EMBEDDING_UNKNOWN
    return owned(conn, embeddings, embedding_id, dataset_id, code, "embedding", owner_column="dataset_id")


def find_embedding(conn: Connection, embedding_id: str, *, for_update: bool = False) -> DbRow | None:
    """The embedding of a signed URL (the signature, not a token, authorises it)."""
    q = select(embeddings).where(embeddings.c.id == embedding_id)
    return conn.execute(q.with_for_update() if for_update else q).first()


def mark_embedding_uploaded(conn: Connection, embedding_id: str, size: int) -> None:
    conn.execute(update(embeddings).where(embeddings.c.id == embedding_id).values(uploaded=True, size=size))


def delete_embedding(conn: Connection, user_id: str, dataset_id: str, embedding_id: str) -> DbRow:
    r = get_embedding(conn, user_id, dataset_id, embedding_id)
    conn.execute(delete(embeddings).where(embeddings.c.id == embedding_id))
    return r


def register_run_embedding(conn: Connection, run: DbRow) -> str | None:
    """A completed run's confirmed embeddings artifact becomes the dataset's ``default_<time>`` embedding."""
    if not run.dataset_id:
        return None
    a = conn.execute(
        select(artifacts.c.id, artifacts.c.size).where(
            artifacts.c.run_id == run.id,
            artifacts.c.file_name == RUN_EMBEDDINGS_ARTIFACT,
            artifacts.c.confirmed.is_(True),
        )
    ).first()
    if a is None:
        return None
    eid = new_id()
    now = now_ms()
    stamp = time.strftime("%Y%m%d_%Hh%Mm%Ss", time.gmtime(now / 1000))
    conn.execute(
        embeddings.insert().values(
            id=eid,
            dataset_id=run.dataset_id,
            name=f"default_{stamp}",
            run_id=run.id,
            artifact_id=a.id,
            uploaded=True,
            size=a.size,
            created_at=now,
        )
    )
    return eid
