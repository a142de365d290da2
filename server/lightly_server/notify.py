"""Wake-ups for long-polling workers.

Every change of a scheduled run's state pokes the ``ScheduleBroker``. The broker answers all
waiting requests of this replica with ONE database query per wake-up (not one per waiter), then
filters the rows per waiter in memory, so 500 waiting workers cost one query when a run is
scheduled. Across replicas: PostgreSQL LISTEN/NOTIFY carries the pokes; with SQLite (one file,
possibly several processes) a waiting replica also re-checks once per ``sqlite_poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Row

from .db import Database
from .store import open_candidates

log = logging.getLogger(__name__)

CHANNEL = "lightly_schedule"

Matcher = Callable[[list[Row], set[str]], list[Row]]


@dataclass(eq=False)
class Waiter:
    user_id: str
    match: Matcher  # (OPEN rows of this user in dispatch order, locked datasets) -> answer rows
    future: asyncio.Future[list[Row]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ScheduleBroker:
    def __init__(self, db: Database, sqlite_poll_s: float = 1.0, safety_poll_s: float = 5.0) -> None:
        self.db = db
        self.waiters: dict[Waiter, None] = {}  # an ordered set: first come, first served
        self._handed: dict[str, float] = {}
        self.rehand_after_s = 2.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dirty = False
        self._refreshing = False
        self._poll_s = sqlite_poll_s if db.sqlite else safety_poll_s
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._tasks.append(asyncio.create_task(self._poll_loop()))
        if not self.db.sqlite:
            self._listener = threading.Thread(target=self._listen_pg, name="pg-listen", daemon=True)
            self._listener.start()

    async def stop(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for w in list(self.waiters):
            if not w.future.done():
                w.future.set_result([])
        self.waiters.clear()

    # -------------------------------------------------------------- pokes

    def publish(self, conn: Connection | None = None) -> None:
        """Call inside the writing transaction (PostgreSQL: NOTIFY is delivered on commit) or after it."""
        if conn is not None and not self.db.sqlite:
            conn.exec_driver_sql(f"NOTIFY {CHANNEL}")
        else:
            self.poke()

    def poke(self) -> None:
        """Thread-safe: something about OPEN/LOCKED scheduled runs changed."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._on_poke)

    def _on_poke(self) -> None:
        if self.waiters:
            self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        if self._refreshing:
            self._dirty = True
            return
        self._refreshing = True
        asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        """Answer waiters with ONE query; each run (and dataset) goes to one waiter only.

        Handing the same run to every waiter would make all but one of them lose the claim (409)
        and poll again: a thundering herd. A run handed out recently is not handed again for
        ``rehand_after_s``, so a burst of polls spreads over the open runs; if its worker never
        claims it, a later refresh (the periodic re-check) offers it to someone else.
        """
        try:
            while True:
                self._dirty = False
                waiters = [w for w in self.waiters if not w.future.done()]
                if not waiters:
                    return
                user_ids = {w.user_id for w in waiters}
                try:
                    rows, locked = await asyncio.to_thread(self._query, user_ids)
                except Exception:  # the database hiccuped: waiters keep waiting, the poll retries
                    log.exception("schedule refresh failed")
                    return
                now = time.monotonic()
                open_ids = {r.id for r in rows}
                self._handed = {
                    k: t for k, t in self._handed.items() if k in open_ids and now - t < self.rehand_after_s
                }
                handed_datasets = {r.dataset_id for r in rows if r.id in self._handed}
                by_user: dict[str, list[Row]] = {}
                for r in rows:
                    by_user.setdefault(r.user_id, []).append(r)
                for w in waiters:  # first come, first served
                    if w.future.done():
                        continue
                    pick = next(
                        (
                            r
                            for r in w.match(by_user.get(w.user_id, []), locked)
                            if r.id not in self._handed and r.dataset_id not in handed_datasets
                        ),
                        None,
                    )
                    if pick is not None:
                        self._handed[pick.id] = now
                        handed_datasets.add(pick.dataset_id)
                        w.future.set_result([pick])
                        self.waiters.pop(w, None)
                if not self._dirty:
                    return
        finally:
            self._refreshing = False

    def _query(self, user_ids: set[str]) -> tuple[list[Row], set[str]]:
        with self.db.read() as conn:
            return open_candidates(conn, user_ids)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self.waiters:
                self._schedule_refresh()

    def _listen_pg(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.poke()  # we may have missed something while (re)connecting
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self.poke()
            except Exception as exc:
                log.warning("LISTEN connection to PostgreSQL lost (%s); reconnecting in 1 s", exc)
                time.sleep(1.0)

    # -------------------------------------------------------------- waiting

    async def wait(self, user_id: str, match: Matcher, timeout: float) -> list[Row]:
        """One matching run (as a list) as soon as there is one for this waiter; [] after ``timeout`` s."""
        waiter = Waiter(user_id, match)
        self.waiters[waiter] = None
        self._schedule_refresh()
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except TimeoutError:
            return []
        finally:
            self.waiters.pop(waiter, None)
