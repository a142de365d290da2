"""Prometheus metrics of the worker. No filenames, names, ids or tokens in labels; nothing is sent anywhere."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Enum, Histogram, start_http_server

STATES = [
    "IDLE",
    "BUSY",
    "STARTED",
    "INITIALIZING",
    "LOADING_DATASET",
    "CHECKING_CORRUPTNESS",
    "TRAINING",
    "EMBEDDING",
    "LOADING_METADATA",
    "SAMPLING",
    "SAVING_RESULTS",
    "GENERATING_REPORT",
    "UPLOADING_ARTIFACTS",
    "UPLOADED_ARTIFACTS",
]


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter("lightly_worker_runs_total", "Runs by final state", ["state"], registry=self.registry)
        self.samples_selected = Counter(
            "lightly_worker_samples_selected_total", "Samples selected over all runs", registry=self.registry
        )
        self.samples_processed = Counter(
            "lightly_worker_samples_processed_total", "Input samples embedded over all runs", registry=self.registry
        )
        self.stage_seconds = Histogram(
            "lightly_worker_stage_duration_seconds",
            "Time spent per pipeline stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
        )
        self.state = Enum("lightly_worker_state", "What the worker is doing", states=STATES, registry=self.registry)
        self.state.state("IDLE")

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, registry=self.registry)
