"""The worker's side of the Lightly protocol, over HTTP with timeouts and retries.

Connection problems and 5xx answers are retried with exponential backoff (the API being down
never crashes the worker); 4xx answers raise ``ApiError`` at once with the server's message.
The token travels as the ``token`` query parameter, as in the protocol, and is never logged
(httpx's own request logging is silenced for that reason).
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from lightly_protocol import paths
from lightly_protocol.client import ApiCallError, ClientCore, bare, decode, error_detail, is_server_error
from lightly_protocol.enums import ArtifactType, Creator, RunState, WorkerState
from lightly_protocol.models import (
    MAX_LOG_ENTRIES,
    MAX_MESSAGE_LENGTH,
    ArtifactCreatedData,
    ArtifactCreateRequest,
    CreateEntityResponse,
    DatasetEmbeddingData,
    DatasourceProcessedUntilTimestampRequest,
    LogCreateEntry,
    RunCreateRequest,
    RunData,
    RunSelectionRequest,
    RunUpdateRequest,
    ScheduledRunData,
    WorkerConfigData,
    WorkerCreateRequest,
    WorkerData,
    WorkerUpdateRequest,
)
from lightly_protocol.shards import (
    Parallelism,
    ShardAssignment,
    ShardPlanData,
    ShardUpdateRequest,
    WorkData,
    encode_listing,
)
from lightly_protocol.tls import tls_problem

from .sources import DatasourceApi, StorePolicy

T = TypeVar("T")

# 1000 lines of at most 4000 characters stay well under the server's 8 MiB body limit
LOG_BATCH_LINES = min(1000, MAX_LOG_ENTRIES)

logging.getLogger("httpx").setLevel(logging.WARNING)  # it would log URLs, i.e. ?token=...
logging.getLogger("httpcore").setLevel(logging.WARNING)
log = logging.getLogger("lightly_worker.api")

#: extension header: the worker process's session id (see docs/server.md, "Ownership")
SESSION_HEADER = "X-Lightly-Worker-Session"


#: the protocol's one error type; ``status`` is the HTTP status (503 when the API did not answer)
ApiError = ApiCallError


class WorkerApi(ClientCore):
    def __init__(
        self,
        url: str,
        token: str,
        timeout: float = 60.0,
        stop: threading.Event | None = None,
        max_backoff: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        super().__init__(url, token)
        self.http = httpx.Client(timeout=timeout, verify=verify)  # verify: config.api_verify (LIGHTLY_CA_CERTS)
        self.verify = verify
        self.timeout = timeout
        self.stop = stop or threading.Event()
        self.max_backoff = max_backoff
        # extension: this process's session id, sent with every worker-state report, so the server
        # can tell a restarted process (same worker id, new session) from the one that held a run
        self.session = secrets.token_hex(16)

    def close(self) -> None:
        self.http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        timeout: float | None = None,
        retry: bool = True,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        raw: bool = False,
    ) -> Any:
        """The answer's JSON (None for an empty body), or its bytes with ``raw``; ``content`` is sent as
        ``application/octet-stream``."""
        if content is not None:
            headers = {**(headers or {}), "Content-Type": "application/octet-stream"}

        def send() -> tuple[httpx.Response | None, str]:
            r = self.http.request(
                method,
                self.url_of(path),
                params=self.query(params),
                json=json,
                content=content,
                headers=headers,
                timeout=timeout if timeout is not None else self.http.timeout,
            )
            return (None, f"{r.status_code} {r.text[:200]}") if is_server_error(r.status_code) else (r, "")

        r = self._retrying(f"{method} {path}", send, retry=retry)
        if r.status_code >= 400:
            raise ApiError(r.status_code, f"{method} {bare(path)} -> {r.status_code}: {error_detail(r.text)}")
        return r.content if raw else decode(r.content)

    def _retrying(self, where: str, send: Callable[[], tuple[T | None, str]], *, retry: bool = True) -> T:
        """``send()``'s result, sent again while the API is not answering: ``send`` returns ``(result, "")``,
        or ``(None, problem)`` on a 5xx; connection problems are retried too (backoff doubling up to
        ``max_backoff``) until the worker stops. A certificate problem is said at once (waiting does not
        make a certificate trusted); ``retry`` False: one try."""
        delay = 1.0
        while True:
            try:
                result, problem = send()
                if result is not None:
                    return result
            except httpx.TransportError as exc:
                tls = tls_problem(exc)
                if tls:  # a certificate does not become trusted by waiting: say what to set
                    raise ApiError(503, f"{bare(where)}: the API at {self.url}: {tls}") from None
                problem = f"{type(exc).__name__}"
            if not retry or self.stop.is_set():
                raise ApiError(503, f"{where}: the API at {self.url} is not answering ({problem})")
            log.warning("API at %s not answering (%s); retrying in %.0f s", self.url, problem, delay)
            if self.stop.wait(delay):
                raise ApiError(503, f"{where}: stopped while the API was not answering")
            delay = min(self.max_backoff, delay * 2)

    # ------------------------------------------------------------ workers

    def register(self, name: str, labels: list[str], version: str) -> str:
        body = WorkerCreateRequest(name=name, labels=labels, creator=Creator.USER_WORKER, docker_version=version)
        return CreateEntityResponse.model_validate(self._call("POST", paths.WORKERS, json=body.wire())).id

    def default_worker(self) -> WorkerData:
        return WorkerData.model_validate(self._call("GET", paths.DEFAULT_WORKER))

    def worker(self, worker_id: str) -> WorkerData:
        return WorkerData.model_validate(self._call("GET", paths.worker(worker_id)))

    def set_state(self, worker_id: str, state: WorkerState, version: str, retry: bool = True) -> None:
        body = WorkerUpdateRequest(state=state, docker_version=version)
        self._call(
            "PUT",
            paths.worker(worker_id),
            json=body.wire(),
            retry=retry,
            headers={SESSION_HEADER: self.session},
        )

    def held_runs(self, worker_id: str) -> list[ScheduledRunData]:
        """LOCKED scheduled runs whose ``owner`` is this worker id."""
        rows = self._call("GET", paths.SCHEDULE, params={"state": "LOCKED"})
        return [r for r in (ScheduledRunData.model_validate(x) for x in rows) if r.owner == worker_id]

    def queue(self, worker_id: str, wait: float) -> list[ScheduledRunData]:
        params: dict[str, Any] = {"state": "OPEN"}
        if wait > 0:
            params["waitSeconds"] = wait
        rows = self._call("GET", paths.worker_schedule(worker_id), params=params, timeout=wait + 30)
        return [ScheduledRunData.model_validate(r) for r in rows]

    def lock(self, dataset_id: str, worker_id: str, scheduled_id: str) -> bool:
        """True if we got it; False on 409 (someone else was faster, or the dataset is busy)."""
        try:
            self._call(
                "PUT",
                paths.scheduled_run(dataset_id, worker_id, scheduled_id),
                json={"state": "LOCKED"},
            )
            return True
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise

    def hand_back(self, dataset_id: str, worker_id: str, scheduled_id: str) -> None:
        self._call(
            "PUT",
            paths.scheduled_run(dataset_id, worker_id, scheduled_id),
            json={"state": "OPEN"},
            retry=False,
        )

    def config(self, config_id: str) -> WorkerConfigData:
        return WorkerConfigData.model_validate(self._call("GET", paths.config(config_id)))

    def embeddings(self, dataset_id: str) -> list[DatasetEmbeddingData]:
        """The dataset's embeddings (``upload_embeddings``), newest first."""
        rows = self._call("GET", paths.dataset_embeddings(dataset_id)) or []
        return [DatasetEmbeddingData.model_validate(r) for r in rows]

    def download_embedding_csv(self, dataset_id: str, embedding_id: str, dest: Path, max_bytes: int) -> int:
        """The uploaded CSV of an embedding into ``dest`` (at most ``max_bytes``); its size."""
        url = self._call("GET", paths.embedding_read_url(dataset_id, embedding_id))
        return self._follow_signed(str(url), paths.embedding_csv(embedding_id), dest, max_bytes)

    def processed_until(self, dataset_id: str) -> int:
        """The INPUT datasource's ``processedUntilTimestamp`` (unix seconds; 0: nothing processed yet)."""
        body = self._call("GET", paths.datasource_processed_until(dataset_id)) or {}
        return int(body.get("processedUntilTimestamp") or 0)

    def set_processed_until(self, dataset_id: str, timestamp: int) -> None:
        body = DatasourceProcessedUntilTimestampRequest(processed_until_timestamp=timestamp)
        self._call("PUT", paths.datasource_processed_until(dataset_id), json=body.wire())

    def tag_filenames_by_name(self, dataset_id: str, tag_name: str) -> list[str]:
        """The filenames of the dataset's tag of that name (404 naming both when there is none)."""
        tags = self._call("GET", paths.dataset_tags(dataset_id)) or []
        found = next((t for t in tags if isinstance(t, dict) and t.get("name") == tag_name), None)
        if found is None:
            raise ApiError(404, f"dataset {dataset_id} has no tag {tag_name!r}")
        return [str(x) for x in self._call("GET", paths.tag_filenames(dataset_id, str(found["id"]))) or []]

    def run_checkpoint(self, run_id: str, dest: Path, max_bytes: int) -> int:
        """The CHECKPOINT artifact of an earlier run (``checkpoint_run_id``) into ``dest``; its size. A run
        without one is a 404 that says so."""
        run = RunData.model_validate(self._call("GET", paths.run(run_id)))
        found = [a for a in run.artifacts or [] if a.type == ArtifactType.CHECKPOINT]
        if not found:
            raise ApiError(404, f"run {run_id} has no CHECKPOINT artifact (only runs with enable_training leave one)")
        url = self._call("GET", paths.artifact_read_url(run_id, found[-1].id))
        return self._follow_signed(str(url), paths.artifact_download(found[-1].id), dest, max_bytes)

    def _follow_signed(self, url: str, path: str, dest: Path, max_bytes: int) -> int:
        """Stream this server's signed URL ``url`` (its ``expires`` and ``signature``) from ``path`` on the
        API location the worker knows (the URL's host is the server's public base, which a pod inside
        the cluster may not reach) into ``dest``, at most ``max_bytes``; its size. Retried like every call."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        params: dict[str, str] = {k: query[k] for k in ("expires", "signature") if k in query}
        where = f"GET {path}"

        def send() -> tuple[int | None, str]:
            with self.http.stream("GET", self.url_of(path), params=params, timeout=self.timeout) as r:
                if is_server_error(r.status_code):
                    return None, str(r.status_code)
                if r.status_code >= 400:
                    r.read()
                    raise ApiError(r.status_code, f"{where} -> {r.status_code}: {error_detail(r.text)}")
                size = 0
                with dest.open("wb") as fh:
                    for chunk in r.iter_bytes(1 << 20):
                        size += len(chunk)
                        if size > max_bytes:
                            raise ApiError(413, f"{where}: over {max_bytes} bytes (the worker's cap)")
                        fh.write(chunk)
                return size, ""

        return self._retrying(where, send)

    def datasource(self, dataset_id: str, purpose: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] | None = self._call("GET", paths.datasource(dataset_id), params={"purpose": purpose})
            return found
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def datasource_api(self, dataset_id: str, policy: StorePolicy) -> DatasourceApi:
        """The dataset's datasource calls (listing, read and write URLs) with this client's URL, token and CA."""
        return DatasourceApi(
            self.url, self._token, dataset_id, verify=self.verify, timeout=self.timeout, policy=policy, stop=self.stop
        )

    # ------------------------------------------------------------ runs

    def create_run(self, version: str, scheduled: ScheduledRunData) -> str:
        body = RunCreateRequest(
            docker_version=version,
            dataset_id=scheduled.dataset_id,
            scheduled_id=scheduled.id,
            config_id=scheduled.config_id,
            message="picked up",
            creator=Creator.USER_WORKER,
        )
        return CreateEntityResponse.model_validate(self._call("POST", paths.RUNS, json=body.wire())).id

    def run_state(self, run_id: str, state: RunState, message: str | None = None) -> None:
        if message is not None and len(message) > MAX_MESSAGE_LENGTH:  # the server's limit: never lose the state
            message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
        self._call("PUT", paths.run(run_id), json=RunUpdateRequest(state=state, message=message).wire())

    def logs(self, run_id: str, entries: list[LogCreateEntry], retry: bool = True) -> None:
        # in batches well inside the server's limits (lines per PUT, request body size)
        for start in range(0, len(entries), LOG_BATCH_LINES):
            batch = entries[start : start + LOG_BATCH_LINES]
            self._call("PUT", paths.run_logs(run_id), json=[e.wire() for e in batch], retry=retry)

    def selection(self, run_id: str, filenames: list[str], tag_name: str | None = None) -> None:
        body = RunSelectionRequest(filenames=filenames, tag_name=tag_name)
        self._call("PUT", paths.run_selection(run_id), json=body.wire())

    def upload_artifact(self, run_id: str, path: Path, file_name: str, artifact_type: ArtifactType) -> None:
        body = ArtifactCreateRequest(file_name=file_name, type=artifact_type)
        created = ArtifactCreatedData.model_validate(self._call("POST", paths.run_artifacts(run_id), json=body.wire()))
        with open(path, "rb") as fh:
            r = self.http.put(created.signed_write_url, content=fh, timeout=max(60.0, path.stat().st_size / 5e6))
        if r.status_code >= 300:
            raise ApiError(r.status_code, f"upload of {file_name} failed: {r.status_code} {r.text[:200]}")
        self._call("PUT", paths.artifact_confirm(run_id, created.artifact_id))

    # ------------------------------------------------------------ shards of split runs (extension, /v1/ext/)

    def work(self, worker_id: str, wait: float) -> WorkData:
        """The extended long poll: a shard to embed first, else the scheduled runs this worker may take."""
        params: dict[str, Any] = {"waitSeconds": wait} if wait > 0 else {}
        return WorkData.model_validate(
            self._call("GET", paths.worker_work(worker_id), params=params, timeout=wait + 30)
        )

    def publish_shards(
        self,
        scheduled_id: str,
        worker_id: str,
        run_id: str,
        names: list[str],
        shard_size: int,
        parallelism: Parallelism,
    ) -> ShardPlanData:
        """Publish the run's listing (the coordinator, holding the LOCKED run); same listing and size:
        the existing plan and its finished shards are kept."""
        params: dict[str, Any] = {"workerId": worker_id, "runId": run_id, "shardSize": shard_size}
        if parallelism != "auto":
            params["parallelism"] = parallelism
        body = encode_listing(names)
        timeout = max(60.0, len(body) / 1e6)
        answer = self._call("PUT", paths.scheduled_shards(scheduled_id), params=params, content=body, timeout=timeout)
        return ShardPlanData.model_validate(answer)

    def shard_plan(self, scheduled_id: str, retry: bool = True) -> ShardPlanData:
        return ShardPlanData.model_validate(self._call("GET", paths.scheduled_shards(scheduled_id), retry=retry))

    def claim_shard(self, scheduled_id: str, worker_id: str) -> ShardAssignment | None:
        """The next OPEN shard of the coordinator's own run, or None (204: none is OPEN)."""
        answer = self._call("POST", paths.scheduled_shards_claim(scheduled_id), params={"workerId": worker_id})
        return None if answer is None else ShardAssignment.model_validate(answer)

    def shard_files(self, shard_id: str) -> list[str]:
        names = self._call("GET", paths.shard_files(shard_id))
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError(502, f"GET {paths.shard_files(shard_id)}: expected a JSON list of filenames")
        return names

    def shard_update(
        self,
        shard_id: str,
        worker_id: str,
        state: Literal["LEASED", "OPEN"],
        processed: int | None = None,
        retry: bool = True,
    ) -> None:
        """LEASED: heartbeat (with the files done); OPEN: hand it back. 409: this worker no longer holds it."""
        body = ShardUpdateRequest(worker_id=worker_id, state=state, processed=processed)
        self._call("PUT", paths.shard(shard_id), json=body.wire(), retry=retry, headers={SESSION_HEADER: self.session})

    def upload_shard_result(self, shard_id: str, worker_id: str, data: bytes) -> None:
        """The holder's binary result; the shard becomes DONE. 409: another worker finished it first."""
        timeout = max(60.0, len(data) / 5e6)
        self._call("PUT", paths.shard_result(shard_id), params={"workerId": worker_id}, content=data, timeout=timeout)

    def shard_result(self, shard_id: str) -> bytes:
        data: bytes = self._call("GET", paths.shard_result(shard_id), raw=True, timeout=120.0)
        return data
