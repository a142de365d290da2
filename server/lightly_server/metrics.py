"""Prometheus metrics of the server. Labels never carry filenames, tokens, names or ids."""

from __future__ import annotations

import os
from collections.abc import Iterator

from lightly_protocol.enums import TERMINAL_RUN_STATES, Priority, ScheduledState, WorkerState
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from .db import Database
from .gc_pacing import GC_PAUSES
from .schema import scheduled_runs, workers


class StateCollector(Collector):
    """Counts read from the database at scrape time, so every replica reports the shared truth."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        sched = GaugeMetricFamily(
            "lightly_server_scheduled_runs",
            "Scheduled runs by state and priority",
            labels=["state", "priority"],
        )
        work = GaugeMetricFamily("lightly_server_workers", "Registered workers by state", labels=["state"])
        counts = {(s.value, p.value): 0 for s in ScheduledState for p in Priority}
        wcounts = {s.value: 0 for s in WorkerState}
        with self.db.read() as conn:
            for state, prio, n in conn.execute(
                select(scheduled_runs.c.state, scheduled_runs.c.priority, func.count()).group_by(
                    scheduled_runs.c.state, scheduled_runs.c.priority
                )
            ):
                counts[(state, prio)] = n
            for state, n in conn.execute(select(workers.c.state, func.count()).group_by(workers.c.state)):
                wcounts[state] = n
        for (state, prio), n in counts.items():
            sched.add_metric([state, prio], n)
        for state, n in wcounts.items():
            work.add_metric([state], n)
        yield sched
        yield work


class ServerMetrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.state = StateCollector(db)
        self.registry.register(self.state)
        self.http_latency = Histogram(
            "lightly_server_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.run_duration = Histogram(
            "lightly_server_run_duration_seconds",
            "Duration of runs from creation to their final state",
            ["state"],
            registry=self.registry,
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
        )
        # every labelled series exists from the start (at 0): a dashboard panel or an alert over a state
        # that has not happened yet shows 0, not "no data"
        for state in sorted(TERMINAL_RUN_STATES):
            self.run_duration.labels(state)
        self.leases_expired = Counter(
            "lightly_server_worker_leases_expired_total",
            "Workers marked OFFLINE because they stopped reporting",
            registry=self.registry,
        )
        self.runs_reopened = Counter(
            "lightly_server_scheduled_runs_reopened_total",
            "Scheduled runs handed back to the queue after their worker was lost",
            registry=self.registry,
        )
        self.claims = Counter(
            "lightly_server_claims_total",
            "Attempts to lock a scheduled run, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("locked", "conflict", "error"):
            self.claims.labels(outcome)
        self.fast_polls = Counter(
            "lightly_server_fast_polls_total",
            "Long polls answered in their steady-state shape without FastAPI's request machinery, by poll",
            ["poll"],
            registry=self.registry,
        )
        for poll in ("work", "queue"):
            self.fast_polls.labels(poll)
        self.registry.register(GC_PAUSES)  # process-wide, like the collector it measures (gc_pacing.py)

    def exposition(self) -> CollectorRegistry:
        """What ``/metrics`` shows: this process's metrics, or with ``--processes N``
        (``PROMETHEUS_MULTIPROC_DIR`` set) those of every process of the server, summed."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client's multiprocess module is unannotated
        registry.register(self.state)
        return registry
