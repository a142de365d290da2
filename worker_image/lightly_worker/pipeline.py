"""One selection job: list → check → (train) → embed → load inputs → select → save → report.

Used by the waiting mode (a scheduled run) and the local mode (a folder, no server). Progress goes
to a ``Reporter`` (run states and messages); log lines go to the ``lightly_worker.run`` logger.
Problems the user can fix raise ``JobError`` with a message that says what to do.

``run_job`` is one loop over ``job_stages()``: it skips a stage that does not apply, stops between stages
when the worker shuts down (``Reporter.check_cancel``) and times each run state; the stages
themselves (``stages.py``) work on one ``Job`` state (``job.py``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.validation import local_path_problem

from . import worker_version
from .job import Cancelled, Job, JobError, JobOptions, JobPaths, JobResult, NullReporter, Reporter
from .paths import PathOutsideRoot, inside
from .report import write_report
from .sources import InputSource, RemoteAccess

__all__ = [
    "Cancelled",
    "JobError",
    "JobOptions",
    "JobPaths",
    "JobResult",
    "NullReporter",
    "Reporter",
    "RunInfo",
    "Stage",
    "job_stages",
    "resolve_paths",
    "run_job",
]


def resolve_paths(
    input_mount: Path,
    lightly_mount: Path,
    input_ds: dict[str, Any] | None,
    lightly_ds: dict[str, Any] | None,
    output_dir: Path,
    remote: RemoteAccess | None = None,
) -> JobPaths:
    """Paths of a run from its datasources: LOCAL ones are folders under the worker's mounts; a bucket
    datasource (S3, GCS, AZURE, OBS, ...) is read through the API with ``remote`` (without it: refused)."""
    if input_ds is None:
        raise JobError("the dataset has no INPUT datasource; set one with client.set_local_config(purpose='INPUT')")
    for ds in (input_ds, lightly_ds):
        if ds is not None and ds.get("type") != "LOCAL" and remote is None:
            raise JobError(
                f"datasource type {ds.get('type')} is not supported by this worker; use a LOCAL datasource "
                "(client.set_local_config) with the files mounted at /input_mount"
            )
    for ds in (input_ds, lightly_ds):
        problem = local_path_problem(ds.get("fullPath", "")) if ds is not None and _local(ds) else None
        if problem:
            raise JobError(problem)
    try:
        input_root: Path | InputSource = (
            inside(input_mount, input_ds.get("fullPath", ""), "the INPUT datasource's fullPath", "the input mount")
            if _local(input_ds) or remote is None
            else remote.input_source(input_ds)
        )
        mirror = None
        if lightly_ds is None:
            lightly_root = None
        elif _local(lightly_ds) or remote is None:
            lightly_root = inside(
                lightly_mount, lightly_ds.get("fullPath", ""), "the LIGHTLY datasource's fullPath", "the lightly mount"
            )
        else:
            mirror = remote.lightly_mirror(lightly_ds)
            lightly_root = mirror.root
    except PathOutsideRoot as exc:
        raise JobError(str(exc)) from None
    return JobPaths(input_root, lightly_root, output_dir, mirror)


def _local(ds: dict[str, Any]) -> bool:
    return ds.get("type") == "LOCAL"


@dataclass(frozen=True)
class Stage:
    """One step of the job: ``state`` is its run state (None: no state of its own, untimed, no
    cancellation point); ``applies`` says whether this job needs it."""

    state: str | None
    run: Callable[[Job], None]
    applies: Callable[[Job], bool] = lambda job: True


@functools.cache
def job_stages() -> tuple[Stage, ...]:
    """The stages in order (built on first use: torch and the embedding models load with the first
    job, not with the CLI)."""
    from . import stages as s

    return (
        Stage("INITIALIZING", s.initialize),
        Stage("LOADING_DATASET", s.load_dataset),
        Stage("CHECKING_CORRUPTNESS", s.check_corruptness),
        Stage("TRAINING", s.train, s.wants_training),
        Stage("EMBEDDING", s.embed),
        Stage("LOADING_METADATA", s.load_metadata, s.wants_metadata),
        Stage(None, s.load_queries),
        Stage("SAMPLING", s.sample),
        Stage("SAVING_RESULTS", s.save_results),
        Stage("GENERATING_REPORT", s.generate_report),
    )


class _Timer:
    """Seconds per run state into ``report["stage_seconds"]``."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.seconds: dict[str, float] = report["stage_seconds"]
        self.name: str | None = None
        self.t = time.perf_counter()

    def enter(self, name: str) -> None:
        now = time.perf_counter()
        if self.name:
            self.seconds[self.name] = self.seconds.get(self.name, 0.0) + (now - self.t)
        self.name, self.t = name, now


@dataclass(frozen=True)
class RunInfo:
    """Which scheduled run a job is, for its report (all None in local mode); ``config_dump`` is the
    config as the report shows it (default: ``config.wire()``)."""

    run_id: str | None = None
    dataset_id: str | None = None
    config_dump: dict[str, Any] | None = None


def _new_report(config: WorkerConfigV4, run: RunInfo) -> dict[str, Any]:
    return {
        "worker_version": worker_version(),
        "run_id": run.run_id,
        "dataset_id": run.dataset_id,
        "stage_seconds": {},
        "summary": {},
        "config": run.config_dump or config.wire(),
    }


def run_job(
    config: WorkerConfigV4,
    paths: JobPaths,
    reporter: Reporter,
    options: JobOptions | None = None,
    *,
    run: RunInfo | None = None,
    stages: tuple[Stage, ...] | None = None,
) -> JobResult:
    """Run the job through ``stages`` (default ``job_stages()``; a split run replaces its check and
    embed stages, see ``shards.Coordinator.stages``)."""
    report = _new_report(config, run or RunInfo())
    job = Job(config, paths, reporter, options or JobOptions(), report)
    timer = _Timer(report)
    job.out.mkdir(parents=True, exist_ok=True)
    for i, stage in enumerate(stages or job_stages()):
        if not stage.applies(job):
            continue
        if stage.state is not None:
            timer.enter(stage.state)
            if i > 0:
                reporter.check_cancel()
            job.state = stage.state
        stage.run(job)
    timer.enter("DONE")
    report["summary"]["duration_seconds"] = round(time.perf_counter() - job.started, 3)
    write_report(job.out, report, job.plots)
    files = sorted(p for p in job.out.rglob("*") if p.is_file())
    return JobResult(job.out, job.selected, report, files)
