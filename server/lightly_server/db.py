"""Database schema, engine set-up and schema migration (SQLite default, PostgreSQL production)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

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

# ---- extension (issue 11): shards of split scheduled runs (docs/server.md "Shards"). Both tables are newer
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


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """An engine for ``url``. SQLite: WAL, busy timeout, and BEGIN IMMEDIATE for writers.

    Writers on SQLite must take the write lock at BEGIN; a deferred transaction that reads and
    then writes fails with SQLITE_BUSY under WAL instead of waiting. ``write_engine`` gives such
    connections; reads use plain BEGIN and never block writers.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        memory = not u.database or u.database == ":memory:"
        pool_args: dict[str, Any] = {"poolclass": StaticPool} if memory else {"pool_size": 20, "max_overflow": 40}
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool_args)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        url = u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    # a host that drops packets instead of refusing must not hang a request: connecting gives up after 10 s
    # (the request then answers 503, see error_handlers)
    engine = create_engine(
        url,
        pool_size=20,
        max_overflow=40,
        pool_use_lifo=True,  # the connection used last comes back first: a busy server's stay hot
        pool_timeout=30,
        connect_args={"connect_timeout": 10},
    )
    _ping_when_idle(engine)
    return engine


#: a pooled connection unused for longer than this is pinged before use
PING_IDLE_S = 1.0


def _ping_when_idle(engine: Engine, idle_s: float = PING_IDLE_S) -> None:
    """A ping (``SELECT 1``) before handing out a connection that sat idle for over ``idle_s``.

    SQLAlchemy's ``pool_pre_ping`` pings on *every* checkout: one round trip more per transaction, four
    on the way from a scheduled run to its claim. A connection used a moment ago is alive; one idle
    across a database restart or a dropped link is pinged, and a dead one is replaced (the pool retries
    the checkout with a fresh connection and drops every connection older than the failure).
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since <= idle_s:
            return  # fresh from connect(), or used a moment ago
        if not engine.dialect._do_ping_w_event(dbapi_conn):  # False: a disconnect (anything else raises)
            raise InvalidatePoolError("a pooled connection failed its ping")


class Database:
    """Engine plus the two transaction kinds the server uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sqlite = is_sqlite(self.engine)
        self._write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.sqlite else self.engine
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.sqlite else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        # SQLite has one writer at a time: queueing this process's writers on a lock is far cheaper than
        # letting them sleep in SQLite's busy handler (1-100 ms back-offs); other processes still use that.
        with self._write_lock, self._write_engine.connect() as conn, conn.begin():
            yield conn

    def migrate(self) -> None:
        """Create or upgrade the schema; safe when several replicas start at once."""
        with self.write() as conn:
            if not self.sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(settings.select().where(settings.c.key == "schema_version")).first()
            current = int(row.value) if row else 0
            if current == 0:
                conn.execute(settings.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                current = SCHEMA_VERSION
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"database schema version {current} is newer than this server ({SCHEMA_VERSION}): "
                    "upgrade the server"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS.get(version, []):
                    conn.execute(text(statement))
                log.info("migrated database schema to version %d", version)
            if current != SCHEMA_VERSION:
                conn.execute(
                    settings.update().where(settings.c.key == "schema_version").values(value=str(SCHEMA_VERSION))
                )
            from .normalise import normalise_names

            normalise_names(conn)  # names stored before the protocol's patterns were enforced

    def dispose(self) -> None:
        self.engine.dispose()


def listen_forever(
    db: Database,
    channel: str,
    stop: threading.Event,
    on_connect: Callable[[], None],
    on_notify: Callable[[str], None],
    on_lost: Callable[[], None] = lambda: None,
) -> None:
    """PostgreSQL ``LISTEN channel`` until ``stop`` is set, reconnecting 1 s after a lost connection.

    ``on_connect`` runs after each (re)connect (a notification may have been missed meanwhile),
    ``on_notify`` with each notification's payload, ``on_lost`` when the connection is lost.
    """
    import psycopg

    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(f"LISTEN {channel}")
                on_connect()
                while not stop.is_set():
                    for n in conn.notifies(timeout=1.0):
                        on_notify(n.payload)
        except Exception as exc:
            log.warning("LISTEN %s: connection to PostgreSQL lost (%s); reconnecting in 1 s", channel, exc)
            on_lost()
            time.sleep(1.0)
