"""Engine set-up, transactions and schema migration (SQLite default, PostgreSQL production); the tables
are in ``schema.py``."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.pool import StaticPool

from .normalise import normalise_names
from .schema import MIGRATIONS, SCHEMA_VERSION, metadata, settings

log = logging.getLogger(__name__)


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
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
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
