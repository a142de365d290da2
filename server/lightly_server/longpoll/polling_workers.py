"""The workers that long-poll this process: their labels in memory, their lease renewals in batches.

An idle fleet is thousands of long polls that each end after ``waitSeconds`` and come straight back.
Before, every poll read the worker's row and wrote its lease (one write lock per poll on SQLite); at
10,000 workers that was the server's main load and the reason a burst of new runs was slow.

Now a poll costs no database work in the steady state:

* **Labels** are fixed at a worker's first registration (``store.register_worker``), so they are read
  once per worker and process and kept with the worker's user (another user's token never sees
  them). A worker deleted on this process is forgotten at once; one deleted on another replica is
  forgotten at the next flush, which finds its row gone (its next poll then reads the row: 404).
* **Lease renewals** are collected (worker id -> time of its latest poll) and written every
  ``interval`` seconds (at most 1 s, a small fraction of the lease) in one transaction: two
  ``executemany`` updates, whatever the number of polls. The lease sweep of this process writes the
  pending renewals first, so it never judges a worker by a renewal still in memory. A worker marked
  OFFLINE (a lease sweep during an outage) is revived to IDLE by its next poll's renewal, unless it
  reported OFFLINE itself *after* that poll (a worker that said goodbye stays gone). A failed flush
  (database unreachable) keeps its renewals for the next one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from .. import store
from ..db import Database

log = logging.getLogger(__name__)

MAX_REMEMBERED = 200_000  # workers whose labels are kept; past it the memory starts over


class PollingWorkers:
    def __init__(self, db: Database, interval_s: float) -> None:
        self.db = db
        self.interval_s = interval_s
        self._labels: dict[str, tuple[str, frozenset[str]]] = {}  # worker id -> (its user, its labels)
        self._pending: dict[str, int] = {}  # worker id -> when it last polled (ms)
        self._lock = threading.Lock()  # the flush runs in a thread; everything else on the event loop
        self._flush_lock = threading.Lock()  # one flush at a time (the loop's and the lease sweep's)
        self._failing = False
        self.flushes = 0  # counters for tests and metrics
        self.renewals_written = 0

    # ---------------------------------------------------------- labels

    def labels(self, user_id: str, worker_id: str) -> frozenset[str] | None:
        known = self._labels.get(worker_id)
        return known[1] if known is not None and known[0] == user_id else None

    def remember(self, user_id: str, worker_id: str, labels: Iterable[str]) -> frozenset[str]:
        fixed = frozenset(labels)
        with self._lock:
            if len(self._labels) >= MAX_REMEMBERED:
                self._labels.clear()
            self._labels[worker_id] = (user_id, fixed)
        return fixed

    def forget(self, worker_ids: Iterable[str]) -> None:
        gone = set(worker_ids)
        if not gone:
            return
        with self._lock:
            for wid in gone:
                self._labels.pop(wid, None)
                self._pending.pop(wid, None)

    # ---------------------------------------------------------- lease renewals

    def renew(self, worker_id: str, at_ms: int) -> None:
        """The worker polled at ``at_ms``: its lease is renewed by the next flush."""
        with self._lock:
            if at_ms > self._pending.get(worker_id, 0):
                self._pending[worker_id] = at_ms

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write the pending renewals (blocking: call it in a thread). Returns how many were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                with self.db.write() as conn:
                    gone = store.renew_polled_leases(conn, batch)
            except Exception:
                with self._lock:  # keep them: a newer poll of the same worker wins
                    for wid, at in batch.items():
                        if at > self._pending.get(wid, 0):
                            self._pending[wid] = at
                if not self._failing:
                    log.warning("could not write %d lease renewals; retrying", len(batch), exc_info=True)
                self._failing = True
                raise
            if self._failing:
                log.warning("lease renewals written again")
            self._failing = False
            self.flushes += 1
            self.renewals_written += len(batch) - len(gone)
        self.forget(gone)  # deregistered (maybe on another replica): their next poll reads the row
        return len(batch) - len(gone)
