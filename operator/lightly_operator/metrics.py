"""Prometheus metrics of the operator. Labels never carry names, ids or tokens."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .lightly_api import ApiProblem, ApiUnreachable, TokenRejected

PHASES = ("Pending", "Running", "Updating", "Degraded", "ScaledToZero", "Error")
WORKER_STATES = ("IDLE", "BUSY", "OFFLINE", "CRASHED", "UNKNOWN")


class FleetSnapshot(Collector):
    """The latest reconcile result of every fleet, exported as gauges at scrape time."""

    def __init__(self) -> None:
        self.phase: dict[tuple[str, str], str] = {}
        self.workers: dict[tuple[str, str], Counter[str]] = {}
        self.pending: dict[tuple[str, str], Counter[str]] = {}

    def forget(self, key: tuple[str, str]) -> None:
        for d in (self.phase, self.workers, self.pending):
            d.pop(key, None)

    def collect(self) -> Iterator[Metric]:
        fleets = GaugeMetricFamily("lightly_operator_fleets", "LightlyWorker resources by phase", labels=["phase"])
        phases = Counter(self.phase.values())
        for phase in sorted(set(PHASES) | set(phases)):
            fleets.add_metric([phase], phases.get(phase, 0))
        workers = GaugeMetricFamily("lightly_operator_workers", "Workers of all fleets by API state", labels=["state"])
        states: Counter[str] = sum(self.workers.values(), Counter())
        for state in sorted(set(WORKER_STATES) | set(states)):
            workers.add_metric([state], states.get(state, 0))
        pending = GaugeMetricFamily(
            "lightly_operator_pods_pending", "Worker pods not running, by reason", labels=["reason"]
        )
        reasons: Counter[str] = sum(self.pending.values(), Counter())
        for reason, n in sorted(reasons.items()):
            pending.add_metric([reason], n)
        yield fleets
        yield workers
        yield pending


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.snapshot = FleetSnapshot()
        self.registry.register(self.snapshot)
        self.reconcile_duration = Histogram(
            "lightly_operator_reconcile_duration_seconds",
            "Duration of one fleet reconcile",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.registrations = PromCounter(
            "lightly_operator_registrations_total",
            "Worker registrations and deregistrations with the Lightly API, by outcome",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.api_errors = PromCounter(
            "lightly_operator_api_errors_total",
            "Failed calls to the Lightly API or for its token, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.pod_actions = PromCounter(
            "lightly_operator_pod_actions_total", "Pods created and deleted", ["action"], registry=self.registry
        )
        # every labelled series exists from the start (at 0): panels and alerts over errors that have not
        # happened yet show 0, not "no data"
        reasons = [cls.reason for cls in (ApiProblem, ApiUnreachable, TokenRejected)]
        for reason in reasons:
            self.api_errors.labels(reason)
        for action in ("register", "deregister"):
            for outcome in ("ok", *reasons):
                self.registrations.labels(action, outcome)
        for action in ("create", "delete"):
            self.pod_actions.labels(action)
