"""The state of one selection job, shared by the stages of ``stages.py`` and the loop of ``pipeline.py``.

``Job`` starts with what the caller passes (config, paths, reporter, options) and gathers what each
stage produces for the ones after it: the listed names, the datapool, the checked files, the
embeddings, the selection. Nothing here does work; the stages do.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from lightly_protocol.models import WorkerConfigV4

from .sources import InputSource, LightlyMirror, as_source

if TYPE_CHECKING:  # torch and the embedding code load with the first job, not with the CLI
    from lightly_protocol.models import DockerConfigV4
    from torch import nn

    from .config import WorkerArgs
    from .embed import CheckResult
    from .selection import SelectionResult


class JobError(Exception):
    """The job cannot succeed as configured; the message is shown to the user as the run's message."""


class Cancelled(Exception):
    """The worker is shutting down; the job stops between steps."""


T = TypeVar("T")


def produced(value: T | None, what: str) -> T:
    """``value``, which an earlier stage leaves in the job; where it is missing the stages ran out of
    order (a bug, not a user error): a clear internal error."""
    if value is None:
        raise RuntimeError(f"internal error: {what} is not set (the stage that produces it has not run)")
    return value


class Reporter(Protocol):
    def stage(self, state: str, message: str) -> None: ...

    def check_cancel(self) -> None: ...


class NullReporter:
    def __init__(self, echo: Callable[[str], None] | None = None) -> None:
        self.echo = echo

    def stage(self, state: str, message: str) -> None:
        if self.echo:
            self.echo(f"[{state}] {message}")

    def check_cancel(self) -> None:
        return None


@dataclass
class JobPaths:
    input_root: Path | InputSource  # where the INPUT datasource's files are: a folder, or a bucket's source
    lightly_root: Path | None  # where the LIGHTLY datasource's .lightly/ is (None: no LIGHTLY datasource;
    # for a bucket: the job's local mirror of the .lightly/ files it needs, see sources/mirror.py)
    output_dir: Path
    #: a bucket LIGHTLY datasource: its .lightly/ files copied to ``lightly_root`` before the run, written back after
    lightly_mirror: LightlyMirror | None = None
    #: ``docker.embeddings`` named an embedding uploaded to the dataset (``client.upload_embeddings``): its
    #: CSV, downloaded before the run; used when ``.lightly/embeddings/`` has no file of that name
    uploaded_embeddings: Path | None = None
    #: ``docker.checkpoint_run_id``: that run's CHECKPOINT artifact, downloaded before the run
    run_checkpoint: Path | None = None
    #: SIMILARITY to another dataset's tag (``input.dataset_id``): tag name -> (the tag's filenames, that
    #: dataset's newest run embeddings CSV), fetched through the API before the run
    dataset_queries: dict[str, tuple[list[str], Path]] = field(default_factory=dict)
    #: a datapool run (not ``process_all``): only files modified in this window of unix seconds, after the
    #: INPUT datasource's ``processedUntilTimestamp`` up to the run's start (None: no such record, local mode)
    processed_window: tuple[int, int] | None = None

    @property
    def input(self) -> InputSource:
        """The INPUT datasource's files (a folder becomes a ``LocalSource``)."""
        return as_source(self.input_root)


@dataclass
class JobResult:
    output_dir: Path
    selected: list[str]
    report: dict[str, Any]
    files: list[Path] = field(default_factory=list)


@dataclass
class JobOptions:
    """The worker's own settings for a job (not part of the run's config)."""

    device: str = "auto"
    embedding_model: str = "efficientnet-lite0"
    embedding_input_size: int | None = None

    @classmethod
    def of(cls, args: WorkerArgs) -> JobOptions:
        """The job options the command line and the environment set."""
        return cls(args["device"], args["embedding.model"], args["embedding.input_size"])


@dataclass
class Job:
    config: WorkerConfigV4
    paths: JobPaths
    reporter: Reporter
    options: JobOptions
    report: dict[str, Any]
    started: float = field(default_factory=time.perf_counter)
    state: str = ""  # the stage running now (the run state the reporter shows)
    # filled in by the stages, in order
    device: str = "cpu"
    names: list[str] = field(default_factory=list)  # listed inputs, datapool files left out
    #: videos the listing could not open (no frames to list): reported as corrupt, like Lightly does
    unreadable_videos: dict[str, str] = field(default_factory=dict)
    datapool_names: list[str] = field(default_factory=list)
    datapool_emb: np.ndarray | None = None
    datapool_path: Path | None = None
    checked: CheckResult | None = None  # ok, corrupt, duplicates
    candidates: list[str] = field(default_factory=list)
    model: nn.Module | None = None  # the SimCLR model when training ran
    emb: np.ndarray | None = None  # candidates x D
    model_name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # METADATA / PREDICTIONS inputs
    query: dict[str, np.ndarray] = field(default_factory=dict)  # SIMILARITY tag -> embeddings
    result: SelectionResult | None = None
    selected: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    plots: dict[str, Path] = field(default_factory=dict)  # report plot name -> PNG (generate_report)
    files: list[Path] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.paths.output_dir

    @property
    def docker(self) -> DockerConfigV4 | None:
        return self.config.docker

    @property
    def use_datapool(self) -> bool:
        return bool(self.docker and self.docker.use_datapool)

    @property
    def process_all(self) -> bool:
        docker = self.docker
        return bool(docker and docker.datasource and docker.datasource.process_all)

    @property
    def lightly_dump(self) -> dict[str, Any]:
        return self.config.lightly.wire() if self.config.lightly else {}

    def say(self, message: str) -> None:
        """Report the running stage with ``message``."""
        self.reporter.stage(self.state, message)
