"""Garbage collection paced by the clock instead of by allocations, for a server full of long polls.

Every waiting long poll keeps ~65 tracked objects alive for its whole wait (coroutines, closures,
bound methods, futures, its request's scope), so 10,000 waiting workers hold ~650,000 objects that
die by reference counting, not by the collector. CPython starts a young collection when allocations
*minus deallocations* of tracked objects pass the threshold; while old polls end as new ones start
that count stays near zero, the young generation grows for seconds and its collection then walks it
all at once: young collections of 90-260 ms every 5-7 s at 10,000 waiters, the p99 of dispatch
(docs/benchmarks.md, "Fourth round").

So a serving process collects on a clock (``GcPacer``):

* generations 0 and 1 every ``young_every_s`` (0.5 s): each walks only what was allocated since the
  last tick and is still alive, ~10 ms at 10,000 waiters, well under a millisecond for a small fleet;
* everything every ``full_every_s`` (1 h): the only thing a full collection still finds is cyclic
  garbage that outlived two young collections (a few objects a second at 10,000 waiters), but it
  walks every live object of the process (~1 s at 10,000 waiters), so it is rare and bounded;
* the automatic collector stays on for bursts of allocation (generation 0 at 50,000, generation 1
  every 20 of those) but never starts a full collection itself (its third threshold is out of reach:
  the pacer's young ticks would otherwise reach it every minute or two).

The start-up objects (modules, routes, models) are frozen out of the collector's sight first
(``gc.freeze``). ``lightly_server_gc_pause_seconds{generation}`` shows every collection's pause.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)

#: (generation 0 allocations, collections of 0 per 1, of 1 per 2); CPython's defaults are (700, 10, 10)
THRESHOLDS = (50_000, 20, 1_000_000_000)
YOUNG_EVERY_S = 0.5
FULL_EVERY_S = 3600.0

#: process-wide (the collector is): every ``ServerMetrics`` registry shows the same series
GC_PAUSES = Histogram(
    "lightly_server_gc_pause_seconds",
    "Pauses of the garbage collector by generation (the process stops while it runs)",
    ["generation"],
    registry=None,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
for _generation in ("0", "1", "2"):
    GC_PAUSES.labels(_generation)


class PauseRecorder:
    """A ``gc.callbacks`` entry that observes every collection's duration into ``GC_PAUSES``."""

    def __init__(self) -> None:
        self._started = 0.0
        self._series = [GC_PAUSES.labels(str(g)) for g in range(3)]

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            self._series[min(int(info.get("generation", 2)), 2)].observe(time.perf_counter() - self._started)
            self._started = 0.0


class GcPacer:
    """Collects the young generations every ``young_every_s`` and everything every ``full_every_s``, in a
    daemon thread (a collection holds the interpreter wherever it runs, so on the event loop or beside it
    costs the same pause)."""

    def __init__(self, young_every_s: float = YOUNG_EVERY_S, full_every_s: float = FULL_EVERY_S) -> None:
        if young_every_s <= 0 or full_every_s < young_every_s:
            raise ValueError("need 0 < young_every_s <= full_every_s")
        self.young_every_s = young_every_s
        self.full_every_s = full_every_s
        self.young_collections = 0
        self.full_collections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="gc-pacer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        next_full = time.monotonic() + self.full_every_s
        while not self._stop.wait(self.young_every_s):
            try:
                if time.monotonic() >= next_full:
                    gc.collect(2)
                    self.full_collections += 1
                    next_full = time.monotonic() + self.full_every_s
                else:
                    gc.collect(1)
                    self.young_collections += 1
            except Exception:  # a finalizer raised: the collection itself is done; keep pacing
                log.exception("garbage collection raised")


_recorder: PauseRecorder | None = None
_pacer: GcPacer | None = None


def tune_process(young_every_s: float = YOUNG_EVERY_S, full_every_s: float = FULL_EVERY_S) -> GcPacer:
    """Set up this process's collector for serving (once; later calls return the running pacer)."""
    global _recorder, _pacer
    if _pacer is not None:
        return _pacer
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    _recorder = PauseRecorder()
    gc.callbacks.append(_recorder)
    _pacer = GcPacer(young_every_s, full_every_s)
    _pacer.start()
    return _pacer
