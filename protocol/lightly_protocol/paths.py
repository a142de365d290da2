"""The paths of Lightly's REST protocol that the worker, the operator, the bench and the tests call.

One place for them: a client builds a path here and never writes ``/v1/...`` itself. (The server's
routes still spell their paths literally; ``tests/test_client_compat.py`` keeps both in step.)
"""

from __future__ import annotations

__all__ = [
    "CONFIGS",
    "DATASETS",
    "DEFAULT_WORKER",
    "RUNS",
    "SCHEDULE",
    "WORKERS",
    "artifact_confirm",
    "config",
    "dataset_schedule",
    "datasource",
    "run",
    "run_artifacts",
    "run_logs",
    "run_selection",
    "runs_of_dataset",
    "scheduled_run",
    "worker",
    "worker_schedule",
]

#: the user's workers: POST registers one, GET lists them
WORKERS = "/v1/docker/worker"
#: the worker the token's user gets when they name none
DEFAULT_WORKER = f"{WORKERS}/default"
#: the user's scheduled runs, filtered by ``state`` and ``labels``
SCHEDULE = f"{WORKERS}/schedule"
#: worker configs: POST creates one
CONFIGS = f"{WORKERS}/config/vX"
#: the user's datasets: POST creates one
DATASETS = "/v1/datasets"
#: runs: POST creates one
RUNS = "/v1/docker/runs"


def worker(worker_id: str) -> str:
    """One worker: GET, PUT (state), DELETE."""
    return f"{WORKERS}/{worker_id}"


def worker_schedule(worker_id: str) -> str:
    """The scheduled runs one worker may take (``state=OPEN``, optional ``waitSeconds`` long poll)."""
    return f"{WORKERS}/{worker_id}/schedule"


def scheduled_run(dataset_id: str, worker_id: str, scheduled_id: str) -> str:
    """One scheduled run as seen by one worker: PUT ``{"state": "LOCKED" | "OPEN"}``."""
    return f"{DATASETS}/{dataset_id}/docker/worker/{worker_id}/schedule/{scheduled_id}"


def config(config_id: str) -> str:
    return f"{CONFIGS}/{config_id}"


def dataset_schedule(dataset_id: str) -> str:
    """A dataset's scheduled runs: POST schedules one, GET lists them (``states``)."""
    return f"{DATASETS}/{dataset_id}/docker/worker/schedule"


def datasource(dataset_id: str) -> str:
    """A dataset's datasource (``purpose`` query parameter)."""
    return f"{DATASETS}/{dataset_id}/datasource"


def run(run_id: str) -> str:
    return f"{RUNS}/{run_id}"


def run_logs(run_id: str) -> str:
    return f"{RUNS}/{run_id}/logs"


def run_selection(run_id: str) -> str:
    return f"{RUNS}/{run_id}/selection"


def run_artifacts(run_id: str) -> str:
    return f"{RUNS}/{run_id}/artifacts"


def artifact_confirm(run_id: str, artifact_id: str) -> str:
    return f"{RUNS}/{run_id}/artifacts/{artifact_id}/confirmUpload"


def runs_of_dataset(dataset_id: str) -> str:
    return f"{RUNS}/query/datasetId/{dataset_id}"
