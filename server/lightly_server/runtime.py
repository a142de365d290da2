"""The shared state of one server process: database, token cache, wake-ups, metrics, keys, the lease sweep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from lightly_protocol.enums import WorkerState
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from . import crypto, store
from .artifacts import ArtifactStore
from .auth import TokenCache
from .db import Database
from .ids import now_ms
from .longpoll.polling_workers import PollingWorkers
from .longpoll.schedule_broker import CHANNEL, ScheduleBroker
from .longpoll.shard_wakeup import ShardWakeup
from .metrics import ServerMetrics
from .settings import ServerSettings
from .shard_results import delete_results

log = logging.getLogger("lightly_server")


@dataclass
class Tx:
    conn: Connection
    schedule_changed: bool = False
    #: PostgreSQL: the broker's channel, for a statement that sends the wake-up itself (``notify_inline``)
    channel: str | None = None
    notified: bool = False

    def notify_inline(self) -> str | None:
        """The channel for the statement that changes the queue to send the NOTIFY with it (PostgreSQL: a
        round trip less than a NOTIFY statement at commit); None on SQLite, where the commit pokes."""
        self.schedule_changed = True
        self.notified = self.channel is not None
        return self.channel


class Server:
    """Shared state of one server process."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.db.migrate()
        self.tokens = TokenCache(self.db)
        self.broker = ScheduleBroker(self.db)
        self.shard_wakeup = ShardWakeup(self.db)  # the work poll's wake-ups when shards open
        self.polling = PollingWorkers(self.db, interval_s=min(1.0, settings.lease_seconds / 8))
        self.metrics = ServerMetrics(self.db)
        # the secret key lives outside the database: credentials at rest, artifact URL signatures
        self.keyring = crypto.Keyring(crypto.load_keys(settings.secret_key_file))
        crypto.seal_stored_datasources(self.db, self.keyring)
        artifacts_dir = settings.resolved_artifacts_dir()
        self.artifacts = ArtifactStore(artifacts_dir, crypto.url_signing_key(self.db, self.keyring, artifacts_dir))
        self._tasks: list[asyncio.Task[None]] = []
        # the sweep judges workers only after they had one full lease to reach this process: after its
        # start, and again after a sweep failed (the database was unreachable, so were the workers' reports)
        self.judge_after = time.monotonic() + settings.lease_seconds

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction; waiting workers are woken after it commits if it changed the queue."""
        with self.db.write() as conn:
            tx = Tx(conn, channel=None if self.db.sqlite else CHANNEL)
            yield tx
            if tx.schedule_changed and not tx.notified and not self.db.sqlite:
                self.broker.publish(conn)  # NOTIFY travels with the commit to every replica
        if tx.schedule_changed and self.db.sqlite:
            self.broker.poke()

    def shards_changed(self, user_id: str) -> None:
        """After a commit that may let a work poll of ``user_id`` claim a shard: wake this process's
        waiters (PostgreSQL: the commit's NOTIFY reaches every replica instead)."""
        if self.db.sqlite:
            self.shard_wakeup.poke(user_id)

    async def start(self) -> None:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = 64
        await self.broker.start()
        self.shard_wakeup.start()
        self.judge_after = time.monotonic() + self.settings.lease_seconds  # from when this process serves
        self._tasks.append(asyncio.create_task(self._lease_loop()))
        self._tasks.append(asyncio.create_task(self._renewal_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.broker.stop()
        self.shard_wakeup.stop()
        with contextlib.suppress(Exception):  # the last renewals of this process (logged if they fail)
            await run_in_threadpool(self.polling.flush)
        self.db.dispose()

    async def _lease_loop(self) -> None:
        """Sweep expired leases every lease/4 (at most every 10 s).

        Workers are judged only after they had one full lease to reach this process: after its start
        (the last-seen times of an outage are no evidence against them), after the database came back
        from being unreachable (their reports failed too), and after this process stalled.
        """
        lease = self.settings.lease_seconds
        interval = max(0.2, min(10.0, lease / 4))
        last = time.monotonic()
        db_down = False
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - last > max(lease / 2, 2 * interval + 1):
                self.judge_after = max(self.judge_after, now + lease)
            last = now
            if db_down:
                try:
                    await run_in_threadpool(self._probe_db)
                except Exception:
                    continue
                db_down = False
                self.judge_after = max(self.judge_after, time.monotonic() + lease)
                log.warning("database reachable again; lease sweeps resume in %.0f s", lease)
            if now < self.judge_after:
                continue
            try:
                offline, reopened = await run_in_threadpool(self._expire_leases)
            except Exception:
                log.exception("lease sweep failed; workers get a full lease once the database answers again")
                db_down = True
                continue
            finally:
                last = time.monotonic()
            if offline:
                self.polling.forget(offline)  # their next poll reads the row and revives them at once
                self.metrics.leases_expired.inc(len(offline))
                log.warning("workers stopped reporting, marked OFFLINE: %s", ", ".join(offline))
            if reopened:
                self.metrics.runs_reopened.inc(len(reopened))
                log.warning("scheduled runs reopened after their worker was lost: %s", ", ".join(reopened))

    def _probe_db(self) -> None:
        with self.db.read() as conn:
            store.ping(conn)

    def _expire_leases(self) -> tuple[list[str], list[str]]:
        self.polling.flush()  # never judge a worker by a renewal still in memory
        with self.write() as tx:
            offline, reopened = store.expire_leases(
                tx.conn, int(self.settings.lease_seconds * 1000), self.settings.max_attempts
            )
            tx.schedule_changed = bool(reopened) or bool(offline)
            _, stale = store.sweep_shards(tx.conn, int(self.settings.lease_seconds * 1000), self.settings.max_attempts)
        delete_results(self.artifacts.root, stale)  # results of shards whose scheduled run ended
        return offline, reopened

    async def polling_worker_labels(self, user_id: str, worker_id: str) -> frozenset[str]:
        """A worker polls for work (its queue, or the shard work poll): it is alive and idle, so renew its
        lease (reviving it when an outage marked it OFFLINE) and answer its labels. No database work once
        this process knows the worker: the renewal is written by the next flush (``longpoll.polling_workers``)."""
        polled_at = now_ms()
        labels = self.known_polling_labels(user_id, worker_id, polled_at)
        if labels is None:
            labels = await run_in_threadpool(self._load_polling_worker, user_id, worker_id)
            self.polling.renew(worker_id, polled_at)
        return labels

    def known_polling_labels(self, user_id: str, worker_id: str, polled_at: int) -> frozenset[str] | None:
        """The steady state of ``polling_worker_labels``: a worker this process knows polls (its lease is
        renewed by the next flush). None: the worker must be read first (``polling_worker_labels``)."""
        labels = self.polling.labels(user_id, worker_id)
        if labels is not None:
            self.polling.renew(worker_id, polled_at)
        return labels

    def _load_polling_worker(self, user_id: str, worker_id: str) -> frozenset[str]:
        with self.db.read() as conn:
            w = store.get_worker(conn, user_id, worker_id)  # 404 for an unknown (or deleted) worker
        if w.state == WorkerState.OFFLINE:
            with self.db.write() as conn:
                store.revive_polling_worker(conn, worker_id)
        return self.polling.remember(user_id, worker_id, json.loads(w.labels))

    async def _renewal_loop(self) -> None:
        while True:
            await asyncio.sleep(self.polling.interval_s)
            if self.polling.pending:
                with contextlib.suppress(Exception):  # logged by flush; the renewals are kept
                    await run_in_threadpool(self.polling.flush)
