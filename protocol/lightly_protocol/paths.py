"""The paths of Lightly's REST protocol that the worker, the operator, the bench and the tests call.

One place for them: a client builds a path here and never writes ``/v1/...`` itself. (The server's
routes still spell their paths literally; ``tests/test_client_compat.py`` keeps both in step.)
"""

from __future__ import annotations

__all__ = [
    "CONFIGS",
    "DATASETS",
    "DEFAULT_WORKER",
    "EXT",
    "RUNS",
    "SCHEDULE",
    "SHARDS_SUMMARY",
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
    "scheduled_shards",
    "scheduled_shards_claim",
    "shard",
    "shard_files",
    "shard_result",
    "worker",
    "worker_schedule",
    "worker_work",
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


# ---- extensions (not in Lightly's protocol) under one prefix: shards of split runs (issue 11, docs/server.md)

#: the prefix of this server's extension endpoints
EXT = "/v1/ext"
#: shard counts of the user's unfinished scheduled runs (GET, the operator's queue depth)
SHARDS_SUMMARY = f"{EXT}/shards/summary"


def scheduled_shards(scheduled_id: str) -> str:
    """A scheduled run's shard plan: PUT publishes the listing (coordinator), GET reads the plan."""
    return f"{EXT}/scheduled/{scheduled_id}/shards"


def scheduled_shards_claim(scheduled_id: str) -> str:
    """POST: the coordinator takes the next OPEN shard of its own run (204 when none is OPEN)."""
    return f"{EXT}/scheduled/{scheduled_id}/shards/claim"


def worker_work(worker_id: str) -> str:
    """The extended long poll of an idle worker: a shard first, else the scheduled runs (``waitSeconds``)."""
    return f"{EXT}/workers/{worker_id}/work"


def shard(shard_id: str) -> str:
    """One shard: PUT heartbeats it (LEASED) or hands it back (OPEN)."""
    return f"{EXT}/shards/{shard_id}"


def shard_files(shard_id: str) -> str:
    """GET: the shard's filenames, in order."""
    return f"{EXT}/shards/{shard_id}/files"


def shard_result(shard_id: str) -> str:
    """PUT (the holder, ``workerId``) uploads the binary result; GET downloads it once DONE."""
    return f"{EXT}/shards/{shard_id}/result"
