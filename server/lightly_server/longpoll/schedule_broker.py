"""Wake-ups for long-polling workers.

Every change of a scheduled run's state pokes the ``ScheduleBroker``. The broker keeps this
replica's waiting requests in an index: one FIFO queue per *waiter class* (user, label set,
includeUnlockableRuns), ordered by arrival. A wake-up runs ONE database query (the user's OPEN runs
and locked datasets), then walks the open runs in dispatch order and, for each run, looks only at
the head of every class queue whose label set fits it: the oldest fitting waiter gets the run. The
matching work of a wake-up is O(open runs x waiter classes), independent of the number of waiting
workers (a fleet has a handful of label sets, not thousands); handing a run, cancelling a waiter and
a waiter's arrival are O(1). Each run (and each dataset) is handed to one waiter only: no thundering
herd.

No lost wake-up: a poke that finds no waiter marks the broker stale, so the next arriving waiter
refreshes; a waiter whose request ends after it was handed a run (client gone) hands the run back at
once; a worker whose claim fails calls ``release`` so the run goes to the next waiter; a handed run
never claimed is offered again after ``rehand_after_s`` by the periodic re-check.

Across replicas: PostgreSQL LISTEN/NOTIFY carries the pokes (one refresh per NOTIFY burst per
replica, O(open runs x classes), not O(waiters)); with SQLite (one file, possibly several processes)
a waiting replica also re-checks once per ``sqlite_poll_s``. On PostgreSQL every replica would hand
a new run to its own oldest waiter, so the replicas agree on one *offer* per run: before handing runs
a replica takes a session advisory lock per run (one round trip for all runs of a refresh); a run
whose lock another replica holds is skipped like a handed one. Offers are unlocked when the run is
no longer OPEN or its hand-out expires (``rehand_after_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from ..db import Database, listen_forever
from ..schema import DbRow
from ..store import dispatchable, open_candidates

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "lightly_schedule"

#: (user id, labels (None: any), includeUnlockableRuns): waiters of one class want the same runs
ClassKey = tuple[str, frozenset[str] | None, bool]

_seq = itertools.count()


@dataclass(eq=False)
class Waiter:
    key: ClassKey
    seq: int = field(default_factory=lambda: next(_seq))  # arrival order across classes
    future: asyncio.Future[list[DbRow]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ScheduleBroker:
    def __init__(self, db: Database, sqlite_poll_s: float = 1.0, safety_poll_s: float = 5.0) -> None:
        self.db = db
        # the index: class -> its waiters in arrival order (OrderedDict: O(1) head, append, removal)
        self.classes: dict[ClassKey, OrderedDict[Waiter, None]] = {}
        self.n_waiting = 0
        self._handed: dict[str, float] = {}  # scheduled run id -> when it was handed to a waiter
        self.rehand_after_s = 2.0
        self.wait_jitter = 0.15  # a long poll waits (1 - U(0, jitter)) x waitSeconds
        self.loop: asyncio.AbstractEventLoop | None = None
        self._dirty = False
        self._stale = True  # something may have changed since the last refresh: the next waiter refreshes
        self._refreshing = False
        self._poll_s = sqlite_poll_s if db.sqlite else safety_poll_s
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._offers: set[str] = set()  # PostgreSQL: runs whose offer lock this replica holds
        self._foreign: dict[str, float] = {}  # PostgreSQL: runs another replica offered -> when we saw it
        self._offer_conn: psycopg.Connection[Any] | None = None
        self.max_offers = 1000  # beyond this many held offer locks, hand runs without one
        self.refreshes = 0  # counters for tests and the benchmark
        self.woken = 0

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
        for queue in self.classes.values():
            for w in queue:
                if not w.future.done():
                    w.future.set_result([])
        self.classes.clear()
        self.n_waiting = 0

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
        self._stale = True
        if self.n_waiting:
            self._schedule_refresh()

    def release(self, scheduled_id: str) -> None:
        """Thread-safe: the waiter handed this run did not claim it; hand it to the next one now."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return

        def on_loop() -> None:
            self._handed.pop(scheduled_id, None)
            self._on_poke()

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(on_loop)

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
                if not self.n_waiting:
                    if self._offers:
                        await asyncio.to_thread(self._sync_offers, [], self._drop_offers(set()))
                    return
                self._stale = False
                user_ids = {k[0] for k, q in self.classes.items() if q}
                try:
                    rows, locked = await asyncio.to_thread(self._query, user_ids)
                except Exception:  # the database hiccuped: waiters keep waiting, the poll retries
                    log.exception("schedule refresh failed")
                    self._stale = True
                    return
                self.refreshes += 1
                wanted = self._hand_out(rows, locked)
                if wanted or self._offers:
                    # PostgreSQL: agree with the other replicas on one offer per run, then hand those
                    open_ids = {r.id for r in rows}
                    try:
                        got = await asyncio.to_thread(self._sync_offers, wanted, self._drop_offers(open_ids))
                    except Exception:
                        log.exception("offer locks failed; handing runs without them")
                        got = list(wanted)
                    now = time.monotonic()
                    self._offers.update(got)
                    for rid in set(wanted) - set(got):
                        self._foreign[rid] = now
                    if self._hand_out(rows, locked):
                        self._dirty = True  # waiters freed by foreign runs may fit other runs
                if not self._dirty:
                    return
        finally:
            self._refreshing = False

    def _drop_offers(self, open_ids: set[str]) -> list[str]:
        """Offer locks to release: the run left OPEN, or its hand-out expired without a claim."""
        drop = [rid for rid in self._offers if rid not in open_ids or rid not in self._handed]
        self._offers.difference_update(drop)
        return drop

    def _sync_offers(self, wanted: list[str], drop: list[str]) -> list[str]:
        """One round trip: release ``drop``, try-lock ``wanted``; the ids whose offer this replica now holds."""
        import psycopg

        conn = self._offer_conn
        if conn is None or conn.closed:
            url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            conn = self._offer_conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self._offers.clear()  # a new session holds no locks
        try:
            rows = conn.execute(
                "SELECT w FROM (SELECT count(pg_advisory_unlock(4242002, hashtext(d))) FROM unnest(%s::text[]) d) u,"
                " unnest(%s::text[]) w WHERE pg_try_advisory_lock(4242002, hashtext(w))",
                (drop, wanted),
            ).fetchall()
        except Exception:
            with contextlib.suppress(Exception):
                conn.close()
            self._offer_conn = None
            raise
        return [r[0] for r in rows]

    def _hand_out(self, rows: Sequence[DbRow], locked: set[str]) -> list[str]:
        """For each open run in dispatch order, the oldest waiter whose class fits it gets it.

        Work: O(open runs x waiter classes of its user); never a scan of the waiters. On PostgreSQL a
        run is handed only under this replica's offer lock; the runs that would be handed without one
        are returned (to be locked, then handed by a second call).
        """
        now = time.monotonic()
        open_ids = {r.id for r in rows}
        self._handed = {k: t for k, t in self._handed.items() if k in open_ids and now - t < self.rehand_after_s}
        self._foreign = {k: t for k, t in self._foreign.items() if k in open_ids and now - t < self.rehand_after_s}
        need_offer = not self.db.sqlite
        wanted: list[str] = []
        reserved: dict[ClassKey, int] = {}  # per class: heads set aside for runs in ``wanted``
        handed_datasets = {r.dataset_id for r in rows if r.id in self._handed or r.id in self._foreign}
        by_user: dict[str, list[tuple[ClassKey, OrderedDict[Waiter, None]]]] = {}
        for key, queue in self.classes.items():
            if queue:
                by_user.setdefault(key[0], []).append((key, queue))
        left_over = False
        for r in rows:
            if r.id in self._handed or r.id in self._foreign or r.dataset_id in handed_datasets:
                left_over = True  # handed and not claimed yet: may come back
                continue
            best: Waiter | None = None
            for key, queue in by_user.get(r.user_id, ()):
                skip = reserved.get(key, 0)
                if len(queue) > skip and dispatchable(r, key[1], locked, key[2]):
                    head = next(itertools.islice(queue, skip, None))  # O(runs reserved), not O(waiters)
                    if best is None or head.seq < best.seq:
                        best = head
            if best is None:
                left_over = True
                continue
            if need_offer and r.id not in self._offers and len(self._offers) < self.max_offers:
                wanted.append(r.id)  # lock first; the waiter stays queued (reserved) for the second call
                reserved[best.key] = reserved.get(best.key, 0) + 1
                handed_datasets.add(r.dataset_id)
                left_over = True
                continue
            self._remove(best)
            self._handed[r.id] = now
            handed_datasets.add(r.dataset_id)
            self.woken += 1
            best.future.set_result([r])
            if not self.n_waiting:
                left_over = left_over or r is not rows[-1]
                break
        # runs nobody took may suit the next waiter to arrive; without them it needs no query
        self._stale = self._stale or left_over
        return wanted

    def _query(self, user_ids: set[str]) -> tuple[Sequence[DbRow], set[str]]:
        with self.db.read() as conn:
            return open_candidates(conn, user_ids)

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self.db.sqlite:
                self._stale = True  # another process may share the file: it pokes nobody here
            if self.n_waiting or self._offers:
                self._schedule_refresh()

    def _listen_pg(self) -> None:
        def lost() -> None:
            self._stale = True

        # pokes coalesce: a burst of NOTIFYs costs a refresh or two; after a (re)connect we may have missed one
        listen_forever(self.db, CHANNEL, self._stop, self.poke, lambda _payload: self.poke(), lost)

    # -------------------------------------------------------------- waiting

    def _add(self, w: Waiter) -> None:
        self.classes.setdefault(w.key, OrderedDict())[w] = None
        self.n_waiting += 1

    def _remove(self, w: Waiter) -> None:
        queue = self.classes.get(w.key)
        if queue is not None and queue.pop(w, 0) is None:
            self.n_waiting -= 1
            if not queue:
                del self.classes[w.key]

    async def wait(
        self,
        user_id: str,
        labels: set[str] | frozenset[str] | None,
        include_unlockable: bool,
        timeout: float,
        interrupt: asyncio.Future[None] | None = None,
    ) -> list[DbRow]:
        """One run fitting ``labels`` (as a list) as soon as there is one for this waiter; [] after ``timeout`` s
        or as soon as ``interrupt`` is done (the work poll's shard ticket), whichever comes first.

        One future and one timer per waiter: at 10,000 waiters ``asyncio.wait_for``/``shield``/``wait``
        cost the idle fleet a fifth of the server's CPU.
        """
        waiter = Waiter((user_id, None if labels is None else frozenset(labels), include_unlockable))
        self._add(waiter)
        if self._stale:
            self._schedule_refresh()
        # jitter: workers that started together (a fleet roll-out, a server restart) must not re-poll
        # in one wave every ``timeout`` s; the wave would queue every wake-up behind it
        timeout *= 1.0 - self.wait_jitter * random.random()

        def give_up(_: object = None) -> None:  # on the loop, so never between a hand-out's two steps
            if not waiter.future.done():
                self._remove(waiter)
                waiter.future.set_result([])

        timer = asyncio.get_running_loop().call_later(timeout, give_up)
        if interrupt is not None:
            interrupt.add_done_callback(give_up)
        try:
            # handed a run just as the wait ran out: the hand-out came first and is answered
            return await waiter.future
        except asyncio.CancelledError:
            # the request ended (client gone) right after we handed it a run: pass the run on
            fut = waiter.future
            if fut.done() and not fut.cancelled() and fut.result():
                self.release(fut.result()[0].id)
            raise
        finally:
            timer.cancel()
            if interrupt is not None:
                interrupt.remove_done_callback(give_up)
            self._remove(waiter)
