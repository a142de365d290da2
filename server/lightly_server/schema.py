"""The database schema: every table, the schema version and the migrations between versions.

Shared by the engine and its migration (``db.py``), the start-up data migration (``normalise.py``) and
the modules that run SQL (the store, ``auth.py``, ``crypto.py``, ``metrics.py``, the long polls' wake-ups).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    text,
)

#: a row of any query (SQLAlchemy's ``Row`` is generic in the types of its columns)
DbRow: TypeAlias = Row[*tuple[Any, ...]]

metadata = MetaData()
ID = String(24)

users = Table(
    "users",
    metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", ID, ForeignKey("users.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("label", String(200)),  # what the token is for (``create-token --label``), e.g. a fleet (version 3)
    Column("last_used_at", BigInteger),  # ms, to the minute: written at most once a minute per process (version 3)
)

workers = Table(
    "workers",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("name", String(300), nullable=False),
    Column("labels", Text, nullable=False),  # JSON list
    Column("state", String(16), nullable=False),
    Column("docker_version", String(200)),
    Column("created_at", BigInteger, nullable=False),
    Column("last_modified_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    Column("session_id", String(64)),  # the worker process that reported last (X-Lightly-Worker-Session)
    Index("ux_workers_user_name", "user_id", "name", unique=True),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("name", String(300), nullable=False),
    Column("type", String(16), nullable=False),
    Column("img_type", String(16)),
    Column("parent_dataset_id", ID),
    Column("created_at", BigInteger, nullable=False),
    Column("last_modified_at", BigInteger, nullable=False),
    Index("ux_datasets_user_name", "user_id", "name", unique=True),
)

datasources = Table(
    "datasources",
    metadata,
    Column("id", ID, primary_key=True),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("config", Text, nullable=False),  # JSON, wire form
    Column("created_at", BigInteger, nullable=False),
    Index("ux_datasources_purpose", "dataset_id", "purpose", unique=True),
)

configs = Table(
    "worker_configs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("version", String(4), nullable=False),
    Column("config", Text, nullable=False),  # JSON, wire form
    Column("created_at", BigInteger, nullable=False),
)

scheduled_runs = Table(
    "scheduled_runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("config_id", ID, ForeignKey("worker_configs.id"), nullable=False),
    Column("priority", String(10), nullable=False),
    Column("priority_rank", Integer, nullable=False),
    Column("runs_on", Text, nullable=False),  # JSON list
    Column("state", String(10), nullable=False),
    Column("worker_id", ID),  # the worker holding the lock
    Column("attempts", Integer, nullable=False, default=0),
    Column("failure", Text),  # why it ended without a successful run
    Column("created_at", BigInteger, nullable=False),
    Column("last_modified_at", BigInteger, nullable=False),
    Index("ix_sched_dispatch", "state", "priority_rank", "created_at"),
    Index("ix_sched_dataset", "dataset_id", "state"),
    # at most one LOCKED scheduled run per dataset, enforced by the database itself
    Index(
        "ux_sched_one_locked_per_dataset",
        "dataset_id",
        unique=True,
        sqlite_where=text("state = 'LOCKED'"),
        postgresql_where=text("state = 'LOCKED'"),
    ),
)

runs = Table(
    "runs",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("docker_version", String(200), nullable=False),
    Column("state", String(40), nullable=False),
    Column("dataset_id", ID),
    Column("config_id", ID),
    Column("scheduled_id", ID),
    Column("worker_id", ID),
    Column("message", Text),
    Column("archived", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_modified_at", BigInteger, nullable=False),
    Index("ix_runs_user_created", "user_id", "created_at"),
    Index("ix_runs_scheduled", "scheduled_id"),
    Index("ix_runs_dataset", "dataset_id"),
)

run_logs = Table(
    "run_logs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("run_id", ID, ForeignKey("runs.id"), nullable=False),
    Column("entry", Text, nullable=False),  # JSON, wire form
    Index("ix_run_logs_run_seq", "run_id", "seq"),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", ID, primary_key=True),
    Column("run_id", ID, ForeignKey("runs.id"), nullable=False),
    Column("type", String(40), nullable=False),
    Column("file_name", String(1000), nullable=False),
    Column("storage_location", String(16)),
    Column("uploaded", Boolean, nullable=False, default=False),
    Column("confirmed", Boolean, nullable=False, default=False),
    Column("size", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_artifacts_run", "run_id"),
)

run_selections = Table(
    "run_selections",
    metadata,
    Column("run_id", ID, ForeignKey("runs.id"), primary_key=True),
    Column("tag_name", String(300)),
    Column("filenames", Text, nullable=False),  # JSON list
)

samples = Table(
    "samples",
    metadata,
    Column("dataset_id", ID, ForeignKey("datasets.id"), primary_key=True),
    Column("idx", Integer, primary_key=True),  # position in the dataset (the bitmask bit)
    Column("file_name", String(2000), nullable=False),
    Index("ux_samples_name", "dataset_id", "file_name", unique=True),
)

tags = Table(
    "tags",
    metadata,
    Column("id", ID, primary_key=True),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("name", String(300), nullable=False),
    Column("prev_tag_id", ID),
    Column("run_id", ID),
    Column("bit_mask", Text, nullable=False),  # hex, "0x..."
    Column("tot_size", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ux_tags_name", "dataset_id", "name", unique=True),
)

# ---- extension: shards of split scheduled runs (docs/server.md "Shards"). Both tables are newer
# than schema version 2 and need no migration: ``metadata.create_all`` adds them on start, and an older
# server ignores them.

#: one published plan per scheduled run: the listing's digest and how it was split
shard_plans = Table(
    "shard_plans",
    metadata,
    Column("scheduled_id", ID, ForeignKey("scheduled_runs.id"), primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("run_id", ID),  # the coordinator's current run
    Column("input_digest", String(64), nullable=False),
    Column("total", BigInteger, nullable=False),  # files in the listing
    Column("shard_size", Integer, nullable=False),
    Column("parallelism", Integer),  # None: "auto" (no cap)
    Column("created_at", BigInteger, nullable=False),
    Column("last_modified_at", BigInteger, nullable=False),
)

shards = Table(
    "shards",
    metadata,
    Column("id", ID, primary_key=True),
    Column("user_id", ID, nullable=False),
    Column("scheduled_id", ID, ForeignKey("scheduled_runs.id"), nullable=False),
    Column("idx", Integer, nullable=False),  # 0..n-1 in input order
    Column("start", BigInteger, nullable=False),
    Column("stop", BigInteger, nullable=False),
    Column("state", String(10), nullable=False),
    Column("worker_id", ID),  # the lease holder (LEASED), else the last holder
    Column("attempts", Integer, nullable=False, default=0),
    Column("processed", BigInteger, nullable=False, default=0),
    Column("leased_at", BigInteger),  # last claim or heartbeat (ms): the shard's lease
    Column("names", LargeBinary, nullable=False),  # gzip of the shard's filenames joined by newlines
    Column("result_bytes", BigInteger),  # size of the stored result (DONE); the bytes live in the artifacts dir
    Column("message", Text),  # why FAILED / CANCELED
    Column("updated_at", BigInteger, nullable=False),
    Index("ux_shards_scheduled_idx", "scheduled_id", "idx", unique=True),
    Index("ix_shards_scheduled_state", "scheduled_id", "state", "idx"),  # a run's next OPEN shard, its counts
    Index("ix_shards_user_state", "user_id", "state"),  # OPEN shards of a user (the work poll)
    Index("ix_shards_worker_state", "worker_id", "state"),  # LEASED by a worker (delete, session restart)
    Index("ix_shards_state_leased", "state", "leased_at"),  # the lease sweep
)

# ---- a dataset's embeddings (Lightly's embeddings API): uploaded CSVs and the ones a completed run
# registered. Newer than schema version 3 and needs no migration: ``metadata.create_all`` adds it.

embeddings = Table(
    "embeddings",
    metadata,
    Column("id", ID, primary_key=True),
    Column("dataset_id", ID, ForeignKey("datasets.id"), nullable=False),
    Column("name", String(300), nullable=False),
    Column("run_id", ID),  # registered from this run's artifact (``artifact_id``); else uploaded
    Column("artifact_id", ID),
    Column("uploaded", Boolean, nullable=False, default=False),  # the CSV is stored (is_processed)
    Column("size", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_embeddings_dataset", "dataset_id", "created_at"),
)

# ---- web console sessions signed out before they expire (``console.session``): a copied session cookie
# stops working at sign-out. Rows are the digest of the cookie, kept until the cookie would have expired.
# Newer than schema version 3 and needs no migration: ``metadata.create_all`` adds it.

console_signouts = Table(
    "console_signouts",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),  # unix seconds
    Index("ix_console_signouts_expires", "expires_at"),
)

settings = Table(
    "server_settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)

SCHEMA_VERSION = 3

#: migrations from version N-1 to N, applied in order on start; version 1 is metadata.create_all
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE workers ADD COLUMN session_id VARCHAR(64)"],  # worker process sessions (ownership)
    3: [  # token labels and last use (list-tokens, revoke-token)
        "ALTER TABLE tokens ADD COLUMN label VARCHAR(200)",
        "ALTER TABLE tokens ADD COLUMN last_used_at BIGINT",
    ],
}
