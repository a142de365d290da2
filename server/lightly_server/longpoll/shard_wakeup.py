"""Wake-ups of the work long poll (extension, ``GET /v1/ext/workers/{id}/work``) when shards open.

A waiting work poll holds a *ticket*: its own asyncio future, kept per user in a dict (added and
dropped in O(1)). A shard change that can hand a waiter something (a publish, a reopen, a hand-back, a
result that frees a slot of a capped run) completes every ticket of that user: each poll tries the
atomic claim once (a read first; the write lock only when a claimable shard exists) and waits again
with a new ticket when it got nothing. No lost wake-up: the ticket is taken before the claim is tried.

Known to be empty: a claim attempt that found nothing is remembered per (user, labels) with the user's
*generation* (it moves with every shard change seen for the user) taken before the attempt; while the
generation stands, and for at most the re-check interval, the next polls skip the read. A notification
that may have been missed forgets every such answer.

Across replicas: PostgreSQL ``NOTIFY lightly_shards, '<user id>'`` (``store.shards.notify``, delivered on
commit) reaches a LISTEN connection of every replica (one more connection per replica). SQLite (one
file, maybe several processes) and, as a safety net, PostgreSQL: a poll every ``sqlite_poll_s`` /
``safety_poll_s`` while someone waits reads one aggregate per waiting user (OPEN and LEASED counts, the
latest change) and wakes the users whose numbers moved and who have OPEN shards.

Cost: an idle poll costs no query while nothing changed; a wake-up costs each of the user's waiting
work polls on each replica one read query (a claim attempt): O(waiters of one user), not O(all
waiters), and the hand-out itself is the database's conditional update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from lightly_protocol.enums import ShardState
from sqlalchemy import case, func, select

from ..db import Database, listen_forever
from ..schema import shards

log = logging.getLogger(__name__)

CHANNEL = "lightly_shards"  # the same as store.shards.CHANNEL


class Ticket:
    """A waiting work poll's ticket (``ShardWakeup.waiting``)."""

    def __init__(self, wake: ShardWakeup, user_id: str) -> None:
        self.wake, self.user_id = wake, user_id
        self.future: asyncio.Future[None] | None = None

    def take(self) -> asyncio.Future[None]:
        """Take before trying a claim; done as soon as a shard change for the user was seen after that."""
        self.future = self.wake._take(self.user_id, self.future)
        return self.future


class ShardWakeup:
    def __init__(self, db: Database, sqlite_poll_s: float = 1.0, safety_poll_s: float = 5.0) -> None:
        self.db = db
        self._tickets: dict[str, dict[asyncio.Future[None], None]] = {}  # user -> its polls' tickets
        self._waiting: dict[str, int] = {}
        self._seen: dict[str, tuple[Any, ...]] = {}  # user -> the last poll's numbers
        self._poll_s = sqlite_poll_s if db.sqlite else safety_poll_s
        # (user, labels) -> (generation, monotonic time) of a claim attempt that found nothing claimable
        self._generation: dict[str, int] = {}
        self._empty: dict[tuple[str, frozenset[str]], tuple[int, float]] = {}
        self.empty_ttl_s = self._poll_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self.wakeups = 0  # counters for tests

    def start(self) -> None:
        """Start on the running event loop (idempotent)."""
        if self.loop is not None:
            return
        self.loop = asyncio.get_running_loop()
        self._task = self.loop.create_task(self._poll_loop())
        if not self.db.sqlite:
            threading.Thread(target=self._listen_pg, name="pg-listen-shards", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    # ---------------------------------------------------------- waiting

    def _take(self, user_id: str, previous: asyncio.Future[None] | None) -> asyncio.Future[None]:
        self._drop(user_id, previous)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tickets.setdefault(user_id, {})[fut] = None
        return fut

    def _drop(self, user_id: str, ticket: asyncio.Future[None] | None) -> None:
        mine = self._tickets.get(user_id)
        if mine is not None and ticket is not None:
            mine.pop(ticket, None)
            if not mine:
                del self._tickets[user_id]

    # ---------------------------------------------------------- known to be empty

    def generation(self, user_id: str) -> int:
        """Moves with every shard change seen for ``user_id``; take it before trying a claim."""
        return self._generation.get(user_id, 0)

    def known_empty(self, user_id: str, labels: frozenset[str]) -> bool:
        """True when a claim attempt for these labels found nothing, no shard change for the user was seen
        since, and that is younger than the safety poll: an idle fleet's polls skip the database then."""
        seen = self._empty.get((user_id, labels))
        if seen is None:
            return False
        gen, at = seen
        return gen == self.generation(user_id) and time.monotonic() - at < self.empty_ttl_s

    def mark_empty(self, user_id: str, labels: frozenset[str], generation: int) -> None:
        if generation == self.generation(user_id):
            if len(self._empty) > 10_000:
                self._empty.clear()
            self._empty[(user_id, labels)] = (generation, time.monotonic())

    @contextlib.contextmanager
    def waiting(self, user_id: str) -> Iterator[Ticket]:
        """One work poll of ``user_id`` waits: counted (the poll loop looks only at users with waiters),
        with its ticket, dropped when the poll ends."""
        self._waiting[user_id] = self._waiting.get(user_id, 0) + 1
        ticket = Ticket(self, user_id)
        try:
            yield ticket
        finally:
            self._drop(user_id, ticket.future)
            left = self._waiting[user_id] - 1
            if left:
                self._waiting[user_id] = left
            else:
                del self._waiting[user_id]
                self._seen.pop(user_id, None)

    # ---------------------------------------------------------- pokes

    def poke(self, user_id: str) -> None:
        """Thread-safe: shards of ``user_id`` changed in a way that may let a waiter claim one."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake, user_id)

    def _wake_all_soon(self) -> None:
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        self._empty.clear()  # a notification may have been missed: nothing is known to be empty
        for uid in list(self._tickets):
            self._wake(uid)

    def _wake(self, user_id: str) -> None:
        self._generation[user_id] = self._generation.get(user_id, 0) + 1
        woken = self._tickets.pop(user_id, None)
        if woken:
            self.wakeups += 1
            for fut in woken:
                if not fut.done():
                    fut.set_result(None)

    async def _poll_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self._poll_s)
            users = list(self._waiting)
            if not users:
                continue
            try:
                numbers = await asyncio.to_thread(self._numbers, users)
            except Exception:  # the database hiccuped: the next poll retries
                log.exception("shard wake-up poll failed")
                continue
            for uid in users:
                now = numbers.get(uid, (0, 0, 0))
                if now != self._seen.get(uid):
                    self._seen[uid] = now
                    if now[0]:  # OPEN shards, and something moved since the last look
                        self._wake(uid)

    def _numbers(self, users: list[str]) -> dict[str, tuple[int, int, int]]:
        opened = func.sum(case((shards.c.state == ShardState.OPEN, 1), else_=0))
        leased = func.sum(case((shards.c.state == ShardState.LEASED, 1), else_=0))
        with self.db.read() as conn:
            rows = conn.execute(
                select(shards.c.user_id, opened, leased, func.max(shards.c.updated_at))
                .where(shards.c.user_id.in_(users), shards.c.state.in_([ShardState.OPEN, ShardState.LEASED]))
                .group_by(shards.c.user_id)
            ).all()
        return {r[0]: (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows}

    def _listen_pg(self) -> None:
        # after a (re)connect a notification may have been missed: wake every waiter soon
        listen_forever(self.db, CHANNEL, self._stop, self._wake_all_soon, self.poke)
