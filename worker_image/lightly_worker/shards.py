"""Split runs over the server (an extension: docs/worker.md, "Parallel runs"; docs/server.md, Shards):
the coordinator's stages and one shard's run on any worker.

**Coordinator** (the worker that locked a run whose config has ``docker.parallelism`` != 1): the
usual stages list the input; then, instead of the check and embed stages, it publishes the listing
(CHECKING_CORRUPTNESS: the server splits it into shards of ``docker.shard_size`` files), takes its
own run's OPEN shards until none is left, waits for the other workers' (taking shards that reopen
when a worker dies), downloads every result in index order, verifies each against its shard and
assembles them (EMBEDDING), and the unchanged rest of the pipeline selects and reports. A run that
cannot be split (training), or a server without the extension, runs on this worker alone, as before.
A retried run (the coordinator died) republishes the same listing and keeps the finished shards.

**Shard worker** (any idle worker, the coordinator included): fetches the shard's files, checks and
embeds them with the run's config (``shard_work.process_shard``), heartbeats the shard every
``worker.heartbeat_seconds`` with the files done, and uploads the binary result
(``shardfile``). A 409 means it no longer holds the shard (its lease ran out and another worker
took it, or the run ended): it drops the work. On shutdown it hands the shard back.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.shards import (
    DEFAULT_SHARD_SIZE,
    Parallelism,
    ShardAssignment,
    ShardData,
    ShardPlanData,
    shard_ranges,
)

from . import stages
from .api import ApiError, WorkerApi
from .failpoints import failpoint
from .job import Cancelled, Job, JobError, JobOptions, JobPaths
from .pipeline import Stage, job_stages
from .shard_work import assemble, distributable, process_shard
from .shardfile import ShardFileError, ShardResult, decode, encode

log = logging.getLogger("lightly_worker")
run_log = logging.getLogger("lightly_worker.run")


def plan_poll_seconds(n_shards: int) -> float:
    """How often a waiting coordinator reads its plan: the last shard's end is noticed within this (a
    small run's tail), and a big plan (~300 bytes per shard) is not read more than every 2 s."""
    return min(2.0, max(0.25, n_shards / 400))


PROGRESS_EVERY_SECONDS = 5.0


def parallelism_of(config: WorkerConfigV4) -> Parallelism:
    """The run's ``docker.parallelism`` (1 when unset: not split)."""
    value = config.docker.parallelism if config.docker else None
    return 1 if value is None else value


class ShardDropped(Exception):
    """This worker no longer holds the shard (the server answered 409); its work is discarded."""


class _ShardReporter:
    """The ``Reporter`` of a shard's job: no run states; stops when the shard is dropped or the worker stops."""

    def __init__(self, cancel: threading.Event, dropped: threading.Event) -> None:
        self.cancel, self.dropped = cancel, dropped

    def stage(self, state: str, message: str) -> None:
        log.info("%s: %s", state, message)

    def check_cancel(self) -> None:
        if self.dropped.is_set():
            raise ShardDropped("the shard was taken away")
        if self.cancel.is_set():
            raise Cancelled("the worker is shutting down")


def shard_job(config: WorkerConfigV4, paths: JobPaths, options: JobOptions) -> Job:
    """The job state a shard runs in (the run's config with this worker's defaults, its mounts)."""
    job = Job(config, paths, _ShardReporter(threading.Event(), threading.Event()), options, {})
    job.device = stages._device(options.device)
    return job


@dataclass
class ShardRunner:
    """Runs one assigned shard on this worker: files, check + embedding, heartbeats, upload."""

    api: WorkerApi
    worker_id: str
    heartbeat: float
    cancel: threading.Event
    _processed: int = field(default=0, init=False)

    def _files(self, shard: ShardData) -> list[str]:
        """The shard's file names (checked against its range); the SHARD failpoint waits here."""
        names = self.api.shard_files(shard.id)
        if len(names) != shard.stop - shard.start:
            raise JobError(f"shard {shard.index} lists {len(names)} files for [{shard.start}, {shard.stop})")
        failpoint("SHARD", self.cancel)
        run_log.info(
            "shard %d: files %d-%d of scheduled run %s (attempt %d)",
            shard.index,
            shard.start,
            shard.stop,
            shard.scheduled_id,
            shard.attempts,
        )
        return names

    def _upload(self, shard: ShardData, data: bytes) -> None:
        """Upload the shard's result; 409 (the lease was lost or the run ended) drops it."""
        try:
            self.api.upload_shard_result(shard.id, self.worker_id, data)
        except ApiError as exc:
            if exc.status == 409:
                raise ShardDropped(f"shard {shard.index}: {exc}") from None
            raise

    def run(self, assignment: ShardAssignment, job: Job, on_progress: Any = None) -> bool:
        """True when the result was uploaded (the shard is DONE); False when it was dropped (409).
        Raises ``Cancelled`` after handing the shard back when the worker stops; other errors hand it
        back too and propagate."""
        shard = assignment.shard
        self._processed = 0
        dropped = threading.Event()
        stop_beat = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(shard, dropped, stop_beat), name="shard-heartbeat", daemon=True
        )
        beat.start()
        t0, cpu0 = time.perf_counter(), time.process_time()
        settled = False  # uploaded, or dropped: nothing to hand back
        try:
            names = self._files(shard)

            def progress(done: int, total: int) -> None:
                self._processed = done
                if dropped.is_set():
                    raise ShardDropped(f"shard {shard.index} was taken away (lease lost or run ended)")
                if self.cancel.is_set():
                    raise Cancelled("the worker is shutting down")
                if on_progress is not None:
                    on_progress()

            result = process_shard(job, names, shard.index, shard.start, progress)
            data = encode(result)
            stop_beat.set()
            beat.join(10)
            if dropped.is_set():
                raise ShardDropped(f"shard {shard.index} was taken away (lease lost or run ended)")
            self._upload(shard, data)
            settled = True
            run_log.info(
                "shard %d done: %d files (%d corrupt) in %.1f s (%.1f s CPU), %d bytes",
                shard.index,
                len(names),
                len(result.corrupt),
                time.perf_counter() - t0,
                time.process_time() - cpu0,
                len(data),
            )
            return True
        except ShardDropped as exc:
            run_log.warning("dropping shard %d: %s", shard.index, exc)
            settled = True
            return False
        finally:
            stop_beat.set()
            if not settled:
                self.hand_back(shard)

    def _beat(self, shard: ShardData, dropped: threading.Event, stop: threading.Event) -> None:
        while not stop.wait(max(0.5, self.heartbeat)):
            try:
                self.api.shard_update(shard.id, self.worker_id, "LEASED", self._processed, retry=False)
            except ApiError as exc:
                if exc.status in (404, 409):
                    log.warning("shard %d: %s", shard.index, exc)
                    dropped.set()
                    return
                log.warning("shard %d heartbeat failed: %s", shard.index, exc)

    def hand_back(self, shard: ShardData) -> None:
        """Give the shard back to the server (OPEN) at once; best effort (else its lease runs out)."""
        try:
            self.api.shard_update(shard.id, self.worker_id, "OPEN", retry=False)
            run_log.info("shard %d handed back", shard.index)
        except ApiError as exc:  # its lease runs out then
            log.warning("could not hand shard %d back: %s", shard.index, exc)


def missing_endpoint(exc: ApiError) -> bool:
    """A 404/405 because the server has no such route (a server without the /v1/ext/ extension)."""
    text = str(exc)
    return exc.status in (404, 405) and ("no such endpoint" in text or '"detail":"Not Found"' in text)


class Coordinator:
    """The stages of a split run on the worker that locked it."""

    def __init__(
        self, api: WorkerApi, worker_id: str, scheduled_id: str, run_id: str, heartbeat: float, cancel: threading.Event
    ) -> None:
        self.api, self.worker_id, self.scheduled_id, self.run_id = api, worker_id, scheduled_id, run_id
        self.runner = ShardRunner(api, worker_id, heartbeat, cancel)
        self.cancel = cancel
        self.plan: ShardPlanData | None = None
        self.split = False
        self._last_progress = 0.0
        self._moved = 0

    def stages(self) -> tuple[Stage, ...]:
        swap = {"CHECKING_CORRUPTNESS": self.publish, "EMBEDDING": self.embed}
        return tuple(Stage(s.state, swap[s.state], s.applies) if s.state in swap else s for s in job_stages())

    # ------------------------------------------------------------ CHECKING_CORRUPTNESS

    def publish(self, job: Job) -> None:
        why_not = distributable(job)
        if why_not:
            run_log.warning("parallelism %s is ignored: %s", parallelism_of(job.config), why_not)
            stages.check_corruptness(job)
            return
        docker = job.docker
        size = (docker.shard_size if docker else None) or DEFAULT_SHARD_SIZE
        parallelism = parallelism_of(job.config)
        job.say(f"publishing {len(job.names)} files in shards of {size} for {parallelism} workers")
        try:
            plan = self.api.publish_shards(self.scheduled_id, self.worker_id, self.run_id, job.names, size, parallelism)
        except ApiError as exc:
            if missing_endpoint(exc):
                run_log.warning("the server has no shard endpoints (%s): this worker runs the whole run", exc)
                stages.check_corruptness(job)
                return
            raise
        if plan.total != len(job.names) or [(s.start, s.stop) for s in plan.shards] != shard_ranges(
            len(job.names), plan.shard_size
        ):
            raise JobError(
                f"the server split {plan.total} files into {len(plan.shards)} shards, not the "
                f"{len(job.names)} files published"
            )
        done = sum(1 for s in plan.shards if s.state == "DONE")
        kept = f"; {done} finished shards kept from an earlier attempt" if not plan.created and done else ""
        run_log.info(
            "split run: %d files in %d shards of %d, parallelism %s%s",
            plan.total,
            len(plan.shards),
            plan.shard_size,
            plan.parallelism,
            kept,
        )
        self.plan, self.split = plan, True

    # ------------------------------------------------------------ EMBEDDING

    def embed(self, job: Job) -> None:
        if not self.split:
            stages.embed(job)
            return
        plan = self.plan
        assert plan is not None
        job.say(self._progress_message(plan))
        results: dict[int, ShardResult] = {}  # downloaded while the other shards are still worked on
        self._moved = 0
        while True:
            job.reporter.check_cancel()
            assignment = self.api.claim_shard(self.scheduled_id, self.worker_id)
            if assignment is not None:
                self.runner.run(assignment, job, on_progress=lambda: self._maybe_report(job))
                continue
            plan = self.api.shard_plan(self.scheduled_id)
            bad = [s for s in plan.shards if s.state in ("FAILED", "CANCELED")]
            if bad:
                s = bad[0]
                raise JobError(
                    f"shard {s.index} (files {s.start}-{s.stop}) {s.state}: {s.message or 'no reason given'}"
                )
            self._download(plan, results, job)
            if len(results) == len(plan.shards):
                break
            self._maybe_report(job, plan)
            if self.cancel.wait(plan_poll_seconds(len(plan.shards))):
                raise Cancelled("the worker is shutting down")
        job.say(self._progress_message(plan))
        run_log.info(
            "downloaded %d shard results: %d bytes (%.0f bytes per file)",
            len(results),
            self._moved,
            self._moved / max(1, plan.total),
        )
        ordered = sorted(plan.shards, key=lambda s: s.index)
        assemble(job, job.names, [results[s.index] for s in ordered], [(s.start, s.stop) for s in ordered])

    def _download(self, plan: ShardPlanData, results: dict[int, ShardResult], job: Job) -> None:
        """Fetch the results of the DONE shards not fetched yet."""
        for s in plan.shards:
            if s.state != "DONE" or s.index in results:
                continue
            job.reporter.check_cancel()
            data = self.api.shard_result(s.id)
            self._moved += len(data)
            try:
                results[s.index] = decode(data)
            except ShardFileError as exc:
                raise JobError(f"shard {s.index} has an unreadable result: {exc}") from None

    def _maybe_report(self, job: Job, plan: ShardPlanData | None = None) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_EVERY_SECONDS:
            return
        self._last_progress = now
        if plan is None:
            try:
                plan = self.api.shard_plan(self.scheduled_id, retry=False)
            except ApiError:
                return
        message = self._progress_message(plan)
        job.say(message)
        run_log.info("%s", message)

    @staticmethod
    def _progress_message(plan: ShardPlanData) -> str:
        done = [s for s in plan.shards if s.state == "DONE"]
        leased = [s for s in plan.shards if s.state == "LEASED"]
        files = sum(s.stop - s.start for s in done) + sum(min(s.processed, s.stop - s.start) for s in leased)
        workers = len({s.worker_id for s in leased})
        return (
            f"embedded {files}/{plan.total} files: {len(done)}/{len(plan.shards)} shards done, "
            f"{len(leased)} in progress on {workers} workers"
        )
