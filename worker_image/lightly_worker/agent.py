"""Waiting mode: the job loop of a worker, as the original worker runs it.

Reports IDLE with its version; long-polls its queue (the server's ``waitSeconds`` extension, or
plain polling where a server answers at once); locks a run (409 → the next one); creates the run;
reports every stage as run states with log lines; renews its lease while working; uploads the
outputs as artifacts; ends COMPLETED, or FAILED with a message that says why, and goes on
serving. SIGTERM: idle → exit at once; busy → finish within the grace period, else report the run
back (ABORTED) so another worker takes it. The API being down never crashes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lightly_protocol.enums import ArtifactType, LogLevel, RunState, WorkerState
from lightly_protocol.models import LogCreateEntry, ScheduledRunData, WorkerConfigV4
from lightly_protocol.shards import ShardAssignment, WorkData

from . import startup_signals, worker_version
from .api import ApiError, WorkerApi
from .config import WorkerArgs
from .failpoints import failpoint
from .job import JobOptions, JobPaths
from .metrics import WorkerMetrics
from .pipeline import Cancelled, JobError, RunInfo, resolve_paths, run_job
from .run_options import prepare_run
from .shards import Coordinator, ShardRunner, missing_endpoint, parallelism_of, shard_job
from .sources import RemoteAccess, StorePolicy

log = logging.getLogger("lightly_worker")
run_log = logging.getLogger("lightly_worker.run")

_LEVELS = {
    logging.DEBUG: LogLevel.DEBUG,
    logging.INFO: LogLevel.INFO,
    logging.WARNING: LogLevel.WARNING,
    logging.ERROR: LogLevel.ERROR,
    logging.CRITICAL: LogLevel.CRITICAL,
}


class Shutdown(Exception):
    """Raised in the main thread by SIGTERM/SIGINT while idle: stop at once."""


class RunReporter:
    """Run states, log lines (batched) and lease renewal for one run."""

    def __init__(
        self,
        api: WorkerApi,
        run_id: str,
        worker_id: str,
        cancel: threading.Event,
        metrics: WorkerMetrics,
        heartbeat: float,
    ) -> None:
        self.api, self.run_id, self.worker_id = api, run_id, worker_id
        self.cancel = cancel
        self.metrics = metrics
        self.state = RunState.STARTED
        self._stage_started = time.perf_counter()
        self._buffer: list[LogCreateEntry] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), name="heartbeat", daemon=True)
        self._thread.start()

    def stage(self, state: str, message: str) -> None:
        now = time.perf_counter()
        self.metrics.stage_seconds.labels(self.state).observe(now - self._stage_started)
        self._stage_started = now
        self.state = RunState(state)  # the stages name their run states by value
        self.metrics.state.state(state)
        run_log.info("%s: %s", state, message)
        self.flush()
        self.api.run_state(self.run_id, self.state, message)
        failpoint(state, self.cancel)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("the worker is shutting down")

    def add(self, record: logging.LogRecord, text: str) -> None:
        entry = LogCreateEntry(
            ts=int(record.created * 1000),
            level=_LEVELS.get(record.levelno, LogLevel.INFO),
            group=record.name,
            msg=text[:4000],
            state=self.state,
        )
        with self._lock:
            self._buffer.append(entry)

    def flush(self, retry: bool = True) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            try:
                self.api.logs(self.run_id, batch, retry=retry)
            except ApiError as exc:
                if not retry and exc.status >= 500:
                    with self._lock:  # the API is not answering: keep them for the next beat (bounded)
                        self._buffer[:0] = batch
                        del self._buffer[: max(0, len(self._buffer) - 20000)]
                    return
                log.warning("could not send %d log lines: %s", len(batch), exc)

    def _beat(self, every: float) -> None:
        """Renew the lease (then ship logs) while the pipeline works.

        Neither call waits in a retry loop: while the API is down every beat tries once, so the
        lease is renewed within one beat of the API answering again (the server gives workers a
        full lease after it restarts, see docs/server.md).
        """
        while not self._stop.wait(max(1.0, every)):
            try:
                self.api.set_state(self.worker_id, WorkerState.BUSY, worker_version(), retry=False)
            except ApiError as exc:
                log.warning("lease renewal failed: %s", exc)
            self.flush(retry=False)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush()


class ApiLogHandler(logging.Handler):
    def __init__(self, reporter: RunReporter) -> None:
        super().__init__(logging.INFO)
        self.reporter = reporter
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.reporter.add(record, self.format(record))


class WorkerAgent:
    def __init__(self, args: WorkerArgs, api: WorkerApi, metrics: WorkerMetrics) -> None:
        self.args = args
        self.api = api
        self.metrics = metrics
        self.stop = api.stop  # set on SIGTERM: no new work; also breaks API retry loops
        self.cancel = threading.Event()  # set when the grace period is over: the job stops
        self.busy = False
        self.worker_id = ""
        self.shutdown_after_job = bool(args["shutdown_when_job_finished"])
        self._work_endpoint: bool | None = None  # the server's /v1/ext/ long poll: unknown until the first poll

    # ------------------------------------------------------------ signals

    def install_signals(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if not self.stop.is_set():
                log.info("%s received: %s", name, "finishing the current run" if self.busy else "stopping")
            self.stop.set()
            if not self.busy:
                raise Shutdown(name)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    # ------------------------------------------------------------ identity

    def resolve_worker(self) -> str:
        wid = self.args["worker.worker_id"]
        if wid:
            w = self.api.worker(str(wid))
            log.info("acting as worker %s (%s, labels %s)", w.id, w.name, w.labels)
            return w.id
        if self.args["worker.name"]:
            wanted = sorted(set(self.args["worker.labels"]))
            wid = self.api.register(str(self.args["worker.name"]), wanted, worker_version())
            labels = self.api.worker(wid).labels
            log.info("registered as worker %s (%s, labels %s)", wid, self.args["worker.name"], labels)
            if sorted(labels) != wanted:
                log.warning(
                    "worker %s was registered earlier with labels %s (labels are fixed at registration), not %s: "
                    "runs scheduled with runs_on=%s will not reach it; use a new worker.name",
                    self.args["worker.name"],
                    labels,
                    wanted,
                    wanted,
                )
            return wid
        w = self.api.default_worker()
        log.info("acting as the default worker %s", w.id)
        return w.id

    # ------------------------------------------------------------ the loop

    def serve(self) -> int:
        self.install_signals()
        early = startup_signals.received()
        if early:
            log.info("%s received while starting: stopping", early)
            self.stop.set()
        try:
            self.worker_id = self.resolve_worker()
            # the first report of this process (a new session): the server releases what the id still holds
            self.api.set_state(self.worker_id, WorkerState.IDLE, worker_version())
            self.release_held_runs()
            self.metrics.state.state("IDLE")
            log.info("Lightly worker %s waiting for scheduled runs", worker_version())
            while not self.stop.is_set():
                self._poll_once()
        except Shutdown:
            pass
        except ApiError as exc:
            if not self.stop.is_set():
                log.error("%s", exc)
                return 1
        finally:
            if self.worker_id:
                with contextlib.suppress(Exception):  # best effort: the lease covers a missed report
                    self.api.set_state(self.worker_id, WorkerState.OFFLINE, worker_version(), retry=False)
        log.info("worker stopped")
        return 0

    def release_held_runs(self) -> None:
        """Startup check: a new process holds no run, so nothing may stay LOCKED under this worker id.

        Our server releases such runs at this process's first report (the ownership rule); a server
        without that extension still shows them as LOCKED with ``owner`` = this id: hand them back.
        """
        try:
            held = self.api.held_runs(self.worker_id)
        except ApiError as exc:
            log.warning("could not check for runs held by an earlier process: %s", exc)
            return
        for row in held:
            try:
                self.api.hand_back(row.dataset_id, self.worker_id, row.id)
                log.warning("scheduled run %s was held by an earlier process of this worker: handed back", row.id)
            except ApiError as exc:
                log.warning("could not hand back scheduled run %s held by an earlier process: %s", row.id, exc)

    def _poll_once(self) -> None:
        wait = float(self.args["worker.poll_wait_seconds"])
        t0 = time.monotonic()
        try:
            work = self._poll_work(wait)
            if work is not None and work.shard is not None:
                self.busy = True
                try:
                    self.run_shard(work.shard)
                finally:
                    self.busy = False
                return
            rows = work.scheduled if work is not None else self.api.queue(self.worker_id, wait)
        except ApiError as exc:
            if exc.status == 404:
                raise  # our worker id was deregistered: nothing sensible to do but stop
            log.warning("polling failed: %s", exc)
            self.stop.wait(float(self.args["worker.poll_interval_seconds"]))
            return
        for row in rows:
            if self.stop.is_set():
                return
            self.busy = True  # from here a SIGTERM must not interrupt: a claimed run is always reported
            try:
                if not self.api.lock(row.dataset_id, self.worker_id, row.id):
                    continue
                self.run_scheduled(row)
            finally:
                self.busy = False
            if self.shutdown_after_job:
                log.info("shutdown_when_job_finished: stopping after this run")
                self.stop.set()
            return
        if not rows and time.monotonic() - t0 < min(wait, 1.0):
            # the server answered at once (no long-poll support): poll politely
            self.stop.wait(float(self.args["worker.poll_interval_seconds"]))

    def _poll_work(self, wait: float) -> WorkData | None:
        """The extended long poll (shards first, then runs); None where the server has no such endpoint
        (then this worker uses the plain long poll from now on)."""
        if self._work_endpoint is False:
            return None
        try:
            work = self.api.work(self.worker_id, wait)
        except ApiError as exc:
            if self._work_endpoint is None and missing_endpoint(exc):
                log.info("the server has no shard extension (%s): polling the plain queue", exc)
                self._work_endpoint = False
                return None
            raise
        self._work_endpoint = True
        return work

    # ------------------------------------------------------------ one shard of a split run

    def run_shard(self, assignment: ShardAssignment) -> None:
        """Check and embed one shard of another worker's run; hand it back on shutdown or failure."""
        shard = assignment.shard
        self.metrics.state.state("BUSY")
        args = self.args
        runner = ShardRunner(self.api, self.worker_id, float(args["worker.heartbeat_seconds"]), self.stop)
        started = False  # from runner.run on, the runner hands the shard back itself
        try:
            config = prepare_run(merge_cli_defaults(assignment.config, args))
            with tempfile.TemporaryDirectory(prefix="lightly-shard-") as tmp:
                paths = resolve_paths(
                    args.path("input_mount"),
                    args.path("lightly_mount"),
                    self.api.datasource(assignment.dataset_id, "INPUT"),
                    None,  # a shard reads only the input (the coordinator reads .lightly/ files)
                    Path(tmp),
                    self.remote_access(assignment.dataset_id, None),
                )
                options = JobOptions.of(args)
                job = shard_job(config, paths, options)
                started = True
                runner.run(assignment, job)
        except Cancelled:
            log.info("shard %d handed back: the worker is stopping", shard.index)
        except Exception as exc:
            if isinstance(exc, JobError | ApiError):
                log.error("shard %d of scheduled run %s failed here: %s", shard.index, shard.scheduled_id, exc)
            else:
                log.exception("shard %d of scheduled run %s crashed here", shard.index, shard.scheduled_id)
            if not started:
                runner.hand_back(shard)
            self._tell_run(shard.run_id, f"worker {self.worker_id} could not do shard {shard.index}: {exc}")
            self.stop.wait(float(args["worker.poll_interval_seconds"]))
        finally:
            self.metrics.state.state("IDLE")

    def remote_access(self, dataset_id: str, scratch: Path | None) -> RemoteAccess:
        """How a run of ``dataset_id`` reaches its bucket datasources (the storage.* settings)."""
        args = self.args
        policy = StorePolicy(
            timeout=float(args["storage.request_timeout_seconds"]),
            attempts=int(args["storage.attempts"]),
            backoff=float(args["storage.backoff_seconds"]),
            max_backoff=float(args["storage.max_backoff_seconds"]),
            max_object_bytes=int(args["storage.max_object_bytes"]),
        )
        return RemoteAccess(
            self.api.datasource_api(dataset_id, policy),
            prefetch=int(args["storage.prefetch"]),
            mirror_max_bytes=int(args["storage.mirror_max_bytes"]),
            spill_max_bytes=int(args["storage.spill_max_bytes"]),
            scratch=scratch,
        )

    def _tell_run(self, run_id: str | None, message: str) -> None:
        """A warning in the run's log (the coordinator's run), best effort."""
        if not run_id:
            return
        entry = LogCreateEntry(
            ts=int(time.time() * 1000), level=LogLevel.WARNING, group="lightly_worker.shard", msg=message[:4000]
        )
        try:
            self.api.logs(run_id, [entry], retry=False)
        except ApiError as exc:
            log.warning("could not add to the log of run %s: %s", run_id, exc)

    # ------------------------------------------------------------ one run

    def run_scheduled(self, row: ScheduledRunData) -> None:
        run_id = self.api.create_run(worker_version(), row)
        try:
            self.api.set_state(self.worker_id, WorkerState.BUSY, worker_version())
        except ApiError as exc:  # e.g. 409: a newer process took over this worker id
            log.warning("%s", exc)
        self.metrics.state.state("BUSY")
        reporter = RunReporter(
            self.api, run_id, self.worker_id, self.cancel, self.metrics, float(self.args["worker.heartbeat_seconds"])
        )
        out_dir = self._output_dir(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(out_dir / "log.txt")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        api_handler = ApiLogHandler(reporter)
        for h in (file_handler, api_handler):
            run_log.addHandler(h)
        outcome: dict[str, Any] = {}
        job = threading.Thread(target=self._job, args=(row, run_id, reporter, out_dir, outcome), name="job")
        job.start()
        deadline: float | None = None
        while job.is_alive():
            job.join(0.5)
            if self.stop.is_set() and deadline is None:
                deadline = time.monotonic() + float(self.args["worker.shutdown_grace_seconds"])
                run_log.warning(
                    "shutdown requested: finishing within %.0f s, else handing the run back",
                    float(self.args["worker.shutdown_grace_seconds"]),
                )
            if deadline is not None and time.monotonic() > deadline and not self.cancel.is_set():
                self.cancel.set()
        for h in (file_handler, api_handler):
            run_log.removeHandler(h)
        file_handler.close()
        reporter.close()
        self._finish(row, run_id, outcome)

    def _output_dir(self, run_id: str) -> Path:
        now = dt.datetime.now()
        return self.args.path("output_dir") / now.strftime("%Y-%m-%d") / f"{now.strftime('%H-%M-%S')}-{run_id}"

    def _job(
        self, row: ScheduledRunData, run_id: str, reporter: RunReporter, out_dir: Path, outcome: dict[str, Any]
    ) -> None:
        with contextlib.ExitStack() as stack:
            self._run_job(row, run_id, reporter, out_dir, outcome, stack)

    def _fetch_run_inputs(self, dataset_id: str, config: WorkerConfigV4, paths: JobPaths, scratch: Path) -> None:
        """What the run reads through the API before it starts: uploaded embeddings, an earlier run's
        checkpoint, other datasets' SIMILARITY query tags."""
        paths.uploaded_embeddings = self._uploaded_embeddings(dataset_id, config, scratch)
        paths.run_checkpoint = self._run_checkpoint(config, scratch)
        paths.dataset_queries = self._dataset_queries(config, scratch)
        docker = config.docker
        if docker and docker.use_datapool and not (docker.datasource and docker.datasource.process_all):
            paths.processed_window = (self.api.processed_until(dataset_id), int(time.time()))

    def _mark_processed(self, dataset_id: str, config: WorkerConfigV4, paths: JobPaths) -> None:
        """After a datapool run: the INPUT datasource is processed up to the run's start (unless
        ``enable_datapool_update`` is False), so the next run takes only files modified since."""
        ds = config.docker.datasource if config.docker else None
        if paths.processed_window is not None and not (ds and ds.enable_datapool_update is False):
            self.api.set_processed_until(dataset_id, paths.processed_window[1])

    def _uploaded_embeddings(self, dataset_id: str, config: WorkerConfigV4, scratch: Path) -> Path | None:
        """The CSV of the embedding uploaded to the dataset under ``docker.embeddings``'s name (or that name
        without ``.csv``), newest first, downloaded into ``scratch``; None when there is none."""
        name = config.docker.embeddings if config.docker else None
        if not name:
            return None
        wanted = {name, name.removesuffix(".csv")}
        try:
            listed = self.api.embeddings(dataset_id)
        except ApiError as exc:
            if exc.status == 404:  # an API without the embeddings endpoints: .lightly/embeddings/ only
                return None
            raise JobError(f"custom embeddings {name!r}: the dataset's embeddings cannot be listed: {exc}") from None
        found = next((e for e in listed if e.name in wanted), None)
        if found is None:
            return None
        dest = scratch / "uploaded-embeddings.csv"
        try:
            cap = int(self.args["storage.mirror_max_bytes"])
            size = self.api.download_embedding_csv(dataset_id, found.id, dest, cap)
        except ApiError as exc:
            raise JobError(f"custom embeddings {name!r}: the embedding uploaded to the dataset: {exc}") from None
        log.info("custom embeddings %r: the dataset's uploaded embedding %s (%d bytes)", name, found.id, size)
        return dest

    def _dataset_queries(self, config: WorkerConfigV4, scratch: Path) -> dict[str, tuple[list[str], Path]]:
        """SIMILARITY queries of other datasets (``input.dataset_id`` + ``tag_name``, as in Lightly's docs):
        each tag's filenames and its dataset's newest run embeddings (``default_*``, what the runs that
        selected those samples stored)."""
        found: dict[str, tuple[list[str], Path]] = {}
        for i, entry in enumerate(config.selection.strategies if config.selection else []):
            ds, tag = entry.input.dataset_id, entry.input.tag_name
            if not ds or not tag or entry.strategy.type != "SIMILARITY" or tag in found:
                continue
            where = f"SIMILARITY to tag {tag!r} of dataset {ds}"
            try:
                names = self.api.tag_filenames_by_name(ds, tag)
                runs = [e for e in self.api.embeddings(ds) if e.name.startswith("default")]
                if not runs:
                    raise JobError(f"{where}: that dataset has no run embeddings yet (a completed run stores them)")
                dest = scratch / f"query-{i}.csv"
                self.api.download_embedding_csv(ds, runs[0].id, dest, int(self.args["storage.mirror_max_bytes"]))
            except ApiError as exc:
                raise JobError(f"{where}: {exc}") from None
            log.info("%s: %d files, embeddings %s", where, len(names), runs[0].name)
            found[tag] = (names, dest)
        return found

    def _run_checkpoint(self, config: WorkerConfigV4, scratch: Path) -> Path | None:
        """``checkpoint_run_id``: that run's CHECKPOINT artifact, downloaded into ``scratch``."""
        run_id = config.docker.checkpoint_run_id if config.docker else None
        if not run_id:
            return None
        dest = scratch / "run-checkpoint.ckpt"
        try:
            size = self.api.run_checkpoint(run_id, dest, int(self.args["storage.mirror_max_bytes"]))
        except ApiError as exc:
            raise JobError(f"checkpoint_run_id {run_id!r}: {exc}") from None
        log.info("checkpoint_run_id %s: its checkpoint (%d bytes)", run_id, size)
        return dest

    def _run_job(
        self,
        row: ScheduledRunData,
        run_id: str,
        reporter: RunReporter,
        out_dir: Path,
        outcome: dict[str, Any],
        stack: contextlib.ExitStack,
    ) -> None:
        try:
            cfg_data = self.api.config(row.config_id)
            config = prepare_run(merge_cli_defaults(cfg_data.config, self.args))
            if config.docker and config.docker.shutdown_when_job_finished:
                self.shutdown_after_job = True
            scratch = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="lightly-run-", dir=self.args["storage.scratch_dir"])
            )
            paths = resolve_paths(
                self.args.path("input_mount"),
                self.args.path("lightly_mount"),
                self.api.datasource(row.dataset_id, "INPUT"),
                self.api.datasource(row.dataset_id, "LIGHTLY"),
                out_dir,
                self.remote_access(row.dataset_id, Path(scratch)),
            )
            self._fetch_run_inputs(row.dataset_id, config, paths, Path(scratch))
            split = None
            if parallelism_of(config) != 1:
                heartbeat = float(self.args["worker.heartbeat_seconds"])
                split = Coordinator(self.api, self.worker_id, row.id, run_id, heartbeat, self.cancel).stages()
            options = JobOptions.of(self.args)
            run = RunInfo(run_id, row.dataset_id, config.wire())
            result = run_job(config, paths, reporter, options, run=run, stages=split)
            reporter.stage("UPLOADING_ARTIFACTS", f"uploading {len(result.files)} output files")
            upload_outputs(self.api, run_id, result.output_dir, result.files, reporter)
            self.api.selection(run_id, result.selected)
            self._mark_processed(row.dataset_id, config, paths)
            reporter.stage("UPLOADED_ARTIFACTS", "artifacts uploaded")
            outcome.update(
                state=RunState.COMPLETED,
                message=(
                    f"selected {len(result.selected)} of {result.report['summary']['n_candidates']} samples; "
                    f"outputs in {result.output_dir}"
                ),
                n=len(result.selected),
                processed=result.report["summary"]["n_candidates"],
            )
        except Cancelled:
            outcome.update(state=RunState.ABORTED, message="the worker was stopped before the run finished")
        except JobError as exc:
            run_log.error("run failed: %s", exc)
            outcome.update(state=RunState.FAILED, message=str(exc))
        except ApiError as exc:
            run_log.error("run failed talking to the API: %s", exc)
            outcome.update(state=RunState.FAILED, message=f"API error: {exc}")
        except Exception as exc:  # a bug or an unexpected environment: report it, keep serving
            run_log.exception("run crashed")
            outcome.update(
                state=RunState.FAILED, message=f"internal error ({type(exc).__name__}: {exc}); see the run log"
            )

    def _finish(self, row: ScheduledRunData, run_id: str, outcome: dict[str, Any]) -> None:
        state = outcome.get("state", RunState.FAILED)
        self.metrics.runs.labels(state).inc()
        if outcome.get("n"):
            self.metrics.samples_selected.inc(outcome["n"])
        if outcome.get("processed"):
            self.metrics.samples_processed.inc(outcome["processed"])
        try:
            if state == "ABORTED":
                # hand it back: the server marks this run ABORTED and reopens the scheduled run
                self.api.hand_back(row.dataset_id, self.worker_id, row.id)
                log.info("handed scheduled run %s back", row.id)
            else:
                self.api.run_state(run_id, state, outcome.get("message"))
        except ApiError as exc:
            log.error("could not report the end of run %s: %s", run_id, exc)
        log.info("run %s ended %s: %s", run_id, state, outcome.get("message", ""))
        if not self.stop.is_set():
            try:
                self.api.set_state(self.worker_id, WorkerState.IDLE, worker_version())
            except ApiError as exc:
                log.warning("%s", exc)
        self.metrics.state.state("IDLE")


def merge_cli_defaults(config: WorkerConfigV4, args: WorkerArgs) -> WorkerConfigV4:
    """CLI ``lightly.*``/docker keys are defaults; the scheduled run's config wins."""
    wire = config.model_dump(mode="json", exclude_none=True)  # snake_case
    merged = dict(wire)
    merged["lightly"] = _deep_merge(args.lightly_overrides(), wire.get("lightly") or {})
    merged["docker"] = _deep_merge(args.docker_overrides(), wire.get("docker") or {})
    return WorkerConfigV4.model_validate(merged)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: dicts recursively, everything else (lists too) replaced.

    Not the operator's ``podmerge.merge_pod_spec``, on purpose: that one is Kubernetes' strategic merge
    (lists keyed by ``name``/``mountPath`` merge item by item), right for pod specs; in a worker config a
    list is one value, and a run's list must replace the command line's whole. Two meanings, so two
    functions, each beside its one caller."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


ARTIFACT_TYPES = {
    "log.txt": ArtifactType.LOG,
    "report.json": ArtifactType.REPORT_JSON,
    "report.pdf": ArtifactType.REPORT_PDF,
    "report_v2.json": ArtifactType.REPORT_V2_JSON,
    "data/corruptness_check_information.json": ArtifactType.CORRUPTNESS_CHECK_INFORMATION,
    "data/sequence_information.json": ArtifactType.SEQUENCE_INFORMATION,
}
MAX_UPLOAD_BYTES = 512 * 1024**2


def upload_outputs(api: WorkerApi, run_id: str, root: Path, files: list[Path], reporter: RunReporter) -> None:
    """Every output file becomes an artifact; the typed ones first, so the client's
    ``download_compute_worker_run_log``/``..._report_json`` find them; other files go as LOG."""
    rel = {p: p.relative_to(root).as_posix() for p in files}
    ordered = sorted(files, key=lambda p: (rel[p] not in ARTIFACT_TYPES, rel[p] != "log.txt", rel[p]))
    for path in ordered:
        reporter.check_cancel()
        name = rel[path]
        if path.stat().st_size > MAX_UPLOAD_BYTES:
            run_log.warning(
                "%s is %.0f MB: kept in the output directory, not uploaded", name, path.stat().st_size / 1e6
            )
            continue
        artifact_type = ARTIFACT_TYPES.get(
            name, ArtifactType.CHECKPOINT if name.endswith(".ckpt") else ArtifactType.LOG
        )
        api.upload_artifact(run_id, path, name, artifact_type)
