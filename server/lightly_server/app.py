"""The FastAPI application: Lightly's REST protocol over the store, plus the long-poll extension."""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from lightly_protocol import PROTOCOL_CLIENT_VERSION
from lightly_protocol.enums import ApiErrorCode, ScheduledState, WorkerState
from lightly_protocol.models import (
    FILENAME_PATTERN,
    MAX_INT64,
    MAX_LOG_ENTRIES,
    OID_PATTERN,
    ArtifactCreatedData,
    ArtifactCreateRequest,
    CreateEntityResponse,
    DatasetCreateRequest,
    DatasetData,
    DatasourceConfig,
    LogCreateEntry,
    LogData,
    RunCreateRequest,
    RunData,
    RunSelectionRequest,
    RunUpdateRequest,
    ScheduledRunCreateRequest,
    ScheduledRunData,
    ScheduledRunUpdateRequest,
    TagData,
    WorkerConfigCreateRequest,
    WorkerConfigData,
    WorkerCreateRequest,
    WorkerData,
    WorkerUpdateRequest,
)
from lightly_protocol.models import safe_artifact_name as _safe_artifact_name
from lightly_protocol.validation import local_path_problem
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Connection, func, select, update
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, crypto, store
from . import openapi as openapi_doc
from .artifacts import ArtifactStore
from .auth import TokenCache
from .db import Database, artifacts, datasets, runs, workers
from .errors import ApiError, bad_request, not_found
from .ids import new_id, now_ms
from .limits import RequestLimits
from .metrics import ServerMetrics
from .notify import ScheduleBroker
from .settings import ServerSettings

log = logging.getLogger("lightly_server")

OidPath = Annotated[str, Path(pattern=OID_PATTERN, description="24 lowercase hex characters")]
PageSize = Annotated[int | None, Query(alias="pageSize", ge=1)]
WORKER_SESSION_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
PageOffset = Annotated[int | None, Query(alias="pageOffset", ge=0, le=MAX_INT64, description="element offset")]


@dataclass
class Tx:
    conn: Connection
    schedule_changed: bool = False


class Server:
    """Shared state of one server process."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.db.migrate()
        self.tokens = TokenCache(self.db)
        self.broker = ScheduleBroker(self.db)
        self.metrics = ServerMetrics(self.db)
        # the secret key lives outside the database: credentials at rest, artifact URL signatures
        self.keyring = crypto.Keyring(crypto.load_keys(settings.secret_key_file))
        crypto.seal_stored_datasources(self.db, self.keyring)
        artifacts_dir = settings.resolved_artifacts_dir()
        self.store = ArtifactStore(artifacts_dir, crypto.url_signing_key(self.db, self.keyring, artifacts_dir))
        self._tasks: list[asyncio.Task[None]] = []
        # the sweep judges workers only after they had one full lease to reach this process: after its
        # start, and again after a sweep failed (the database was unreachable, so were the workers' reports)
        self.judge_after = time.monotonic() + settings.lease_seconds

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction; waiting workers are woken after it commits if it changed the queue."""
        with self.db.write() as conn:
            tx = Tx(conn)
            yield tx
            if tx.schedule_changed and not self.db.sqlite:
                self.broker.publish(conn)  # NOTIFY travels with the commit to every replica
        if tx.schedule_changed and self.db.sqlite:
            self.broker.poke()

    async def start(self) -> None:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = 64
        await self.broker.start()
        self.judge_after = time.monotonic() + self.settings.lease_seconds  # from when this process serves
        self._tasks.append(asyncio.create_task(self._lease_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.broker.stop()
        self.db.dispose()

    async def _lease_loop(self) -> None:
        """Sweep expired leases every lease/4 (at most every 10 s).

        Workers are judged only after they had one full lease to reach this process: after its start
        (the last-seen times of an outage are no evidence against them), after the database came back
        from being unreachable (their reports failed too), and after this process stalled.
        """
        lease = self.settings.lease_seconds
        interval = max(0.2, min(10.0, lease / 4))
        last = time.monotonic()
        db_down = False
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - last > max(lease / 2, 2 * interval + 1):
                self.judge_after = max(self.judge_after, now + lease)
            last = now
            if db_down:
                try:
                    await run_in_threadpool(self._probe_db)
                except Exception:
                    continue
                db_down = False
                self.judge_after = max(self.judge_after, time.monotonic() + lease)
                log.warning("database reachable again; lease sweeps resume in %.0f s", lease)
            if now < self.judge_after:
                continue
            try:
                offline, reopened = await run_in_threadpool(self._expire_leases)
            except Exception:
                log.exception("lease sweep failed; workers get a full lease once the database answers again")
                db_down = True
                continue
            finally:
                last = time.monotonic()
            if offline:
                self.metrics.leases_expired.inc(len(offline))
                log.warning("workers stopped reporting, marked OFFLINE: %s", ", ".join(offline))
            if reopened:
                self.metrics.runs_reopened.inc(len(reopened))
                log.warning("scheduled runs reopened after their worker was lost: %s", ", ".join(reopened))

    def _probe_db(self) -> None:
        with self.db.read() as conn:
            conn.execute(select(1))

    def _expire_leases(self) -> tuple[list[str], list[str]]:
        with self.write() as tx:
            offline, reopened = store.expire_leases(
                tx.conn, int(self.settings.lease_seconds * 1000), self.settings.max_attempts
            )
            tx.schedule_changed = bool(reopened) or bool(offline)
        return offline, reopened

    def touch_if_stale(self, worker_id: str, seen: int | None = None) -> None:
        """Renew a polling worker's lease, writing only when it is a few seconds old.

        ``seen``: the worker's ``last_seen_at`` when the caller already read its row.
        """
        threshold = now_ms() - int(min(5.0, self.settings.lease_seconds / 8) * 1000)
        if seen is None:
            with self.db.read() as conn:
                seen = conn.execute(select(workers.c.last_seen_at).where(workers.c.id == worker_id)).scalar()
        if seen is not None and seen < threshold:
            with self.db.write() as conn:
                store.touch_worker(conn, worker_id)


class RequestMetrics:
    """Pure ASGI middleware: request latency by route template (never the raw path or query)."""

    def __init__(self, app: Any, histogram: Any) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status[0])).observe(time.perf_counter() - start)


def _json(model_or_list: Any, status: int = 200) -> JSONResponse:
    content = [m.wire() for m in model_or_list] if isinstance(model_or_list, list) else model_or_list.wire()
    return JSONResponse(content, status_code=status)


def _created(ident: str) -> JSONResponse:
    return _json(CreateEntityResponse(id=ident), 201)


def _no_content() -> Response:
    return Response(status_code=204)


def _shown(value: Any) -> str:
    """A short repr of an offending input (never the whole of a huge one)."""
    if isinstance(value, str):
        return repr(value[:100]) + (f"... ({len(value)} characters)" if len(value) > 100 else "")
    import reprlib

    return reprlib.repr(value)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{loc}: unknown key; remove it (only the protocol's documented keys are accepted)")
        elif err.get("type") == "missing":
            parts.append(f"{loc}: required")
        elif err.get("type") == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == FILENAME_PATTERN:
            parts.append(
                f"{loc}: filenames must not contain control characters or line breaks (newline, tab, NUL, "
                f"U+2028, ...); got {_shown(err.get('input'))}"[:400]
            )
        elif err.get("type") == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern")
            parts.append(f"{loc}: must match the protocol's pattern {pattern} (got {_shown(err.get('input'))})"[:400])
        elif err.get("type") in ("string_too_long", "too_long"):
            parts.append(f"{loc}: {err.get('msg')} (see docs/server.md, 'Limits')"[:300])
        else:
            parts.append(f"{loc}: {err.get('msg')} (got {_shown(err.get('input'))})"[:300])
    return "; ".join(parts) or "invalid request"


def create_app(settings: ServerSettings) -> FastAPI:
    server = Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(
        title="Lightly-compatible API server",
        version=__version__,
        description="Self-hosted server speaking the REST protocol of lightly==1.5.26's ApiWorkflowClient.",
        lifespan=lifespan,
    )
    app.state.server = server

    # ------------------------------------------------------------ errors

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        code = (
            ApiErrorCode.MALFORMED_REQUEST
            if any(e.get("type") == "json_invalid" for e in exc.errors())
            else ApiErrorCode.BAD_REQUEST
        )
        return JSONResponse({"code": code, "error": _validation_message(exc)}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: ApiErrorCode.NOT_FOUND,
            405: ApiErrorCode.BAD_REQUEST,
            413: ApiErrorCode.PAYLOAD_TOO_LARGE,
        }.get(exc.status_code, "BAD_REQUEST")
        msg = (
            f"no such endpoint: {request.method} {request.url.path}"
            if exc.status_code in (404, 405)
            else str(exc.detail)
        )
        return JSONResponse({"code": code, "error": msg}, status_code=exc.status_code)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # a last line of defence: the wire models bound every field to its column, so this means a gap
        log.warning("refused a value the database cannot store: %s", str(exc.orig).splitlines()[0])
        return JSONResponse(
            {"code": ApiErrorCode.BAD_REQUEST, "error": "a value is too long or malformed for this server to store"},
            status_code=400,
        )

    # ------------------------------------------------------------ request metrics (no query strings), limits

    app.add_middleware(
        RequestLimits, max_body_bytes=settings.max_body_bytes, max_selection_bytes=settings.max_selection_bytes
    )
    app.add_middleware(RequestMetrics, histogram=server.metrics.http_latency)
    openapi_doc.install(app)

    # ------------------------------------------------------------ auth

    def user(token: Annotated[str | None, Query(description="API token")] = None) -> str:
        if not token:
            raise ApiError(401, ApiErrorCode.UNAUTHORIZED, "missing token: pass ?token=<your API token>")
        user_id = server.tokens.user_for(token)
        if user_id is None:
            raise ApiError(
                401,
                ApiErrorCode.UNAUTHORIZED,
                "invalid token: create one with 'lightly-server create-token --user NAME'",
            )
        return user_id

    User = Annotated[str, Depends(user)]

    # ------------------------------------------------------------ versions, health, metrics

    @app.get("/v1/versions/pip/minimum", tags=["versioning"])
    def pip_minimum() -> str:
        return "1.0.0"

    @app.get("/v1/versions/pip/latest", tags=["versioning"])
    def pip_latest(current_version: Annotated[str | None, Query(alias="currentVersion")] = None) -> str:
        return PROTOCOL_CLIENT_VERSION

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        with server.db.read() as conn:
            conn.execute(select(1))
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------ workers

    @app.post("/v1/docker/worker", status_code=201, response_model=CreateEntityResponse, tags=["docker"])
    def register_worker(body: WorkerCreateRequest, user_id: User) -> JSONResponse:
        with server.write() as tx:
            return _created(store.register_worker(tx.conn, user_id, body))

    @app.get("/v1/docker/worker", response_model=list[WorkerData], tags=["docker"])
    def list_workers(user_id: User) -> JSONResponse:
        with server.db.read() as conn:
            rows = conn.execute(
                select(workers).where(workers.c.user_id == user_id).order_by(workers.c.created_at, workers.c.id)
            ).all()
            return _json([store.worker_data(r) for r in rows])

    @app.get("/v1/docker/worker/default", response_model=WorkerData, tags=["docker"])
    def default_worker(user_id: User) -> JSONResponse:
        with server.write() as tx:
            return _json(store.worker_data(store.default_worker(tx.conn, user_id)))

    @app.get("/v1/docker/worker/schedule", response_model=list[ScheduledRunData], tags=["docker"])
    async def schedule_by_labels(
        user_id: User,
        state: Annotated[ScheduledState | None, Query()] = None,
        labels: Annotated[list[str] | None, Query()] = None,
        version: Annotated[str | None, Query(description="accepted; runs are not filtered by version")] = None,
        include_unlockable: Annotated[bool, Query(alias="includeUnlockableRuns")] = False,
        wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, description="long-poll extension")] = 0,
    ) -> JSONResponse:
        label_set = set(labels or [])
        states = [state] if state else []

        def query() -> list[Any]:
            with server.db.read() as conn:
                return store.schedule_query(conn, user_id, states, label_set, include_unlockable)

        return await _long_poll(user_id, states, label_set, include_unlockable, wait_seconds, query)

    async def _long_poll(
        user_id: str, states: list[Any], labels: set[str], include_unlockable: bool, wait: float, query: Any
    ) -> JSONResponse:
        """Without ``waitSeconds``: the protocol's plain listing. With it (our extension): one run for
        this worker as soon as there is one, handed out so that concurrent pollers get different runs."""
        if wait > 0 and states in ([], [ScheduledState.OPEN]):
            cap = min(server.settings.max_wait_seconds, server.settings.lease_seconds / 2)
            rows = await server.broker.wait(user_id, labels, include_unlockable, min(wait, cap))
        else:
            rows = await run_in_threadpool(query)
        return _json([store.scheduled_data(r) for r in rows])

    @app.get("/v1/docker/worker/{workerId}", response_model=WorkerData, tags=["docker"])
    def get_worker(worker_id: Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)], user_id: User):
        with server.db.read() as conn:
            return _json(store.worker_data(store.get_worker(conn, user_id, worker_id)))

    @app.put("/v1/docker/worker/{workerId}", status_code=204, tags=["docker"])
    def update_worker(
        worker_id: Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)],
        body: WorkerUpdateRequest,
        user_id: User,
        session: Annotated[
            str | None,
            Header(
                alias="X-Lightly-Worker-Session",
                pattern=WORKER_SESSION_PATTERN,
                description="extension: the reporting worker process's session id (ownership rule)",
            ),
        ] = None,
    ) -> Response:
        with server.write() as tx:
            reopened = store.update_worker_state(
                tx.conn, user_id, worker_id, body.state, body.docker_version, session, settings.max_attempts
            )
            tx.schedule_changed = bool(reopened)
        if reopened:
            server.metrics.runs_reopened.inc(len(reopened))
            log.warning("worker %s restarted; scheduled runs it held reopened: %s", worker_id, ", ".join(reopened))
        return _no_content()

    @app.delete("/v1/docker/worker/{workerId}", status_code=204, tags=["docker"])
    def delete_worker(worker_id: Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)], user_id: User):
        with server.write() as tx:
            reopened = store.delete_worker(tx.conn, user_id, worker_id)
            tx.schedule_changed = bool(reopened)
        return _no_content()

    @app.get("/v1/docker/worker/{workerId}/schedule", response_model=list[ScheduledRunData], tags=["docker"])
    async def schedule_for_worker(
        worker_id: Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)],
        user_id: User,
        state: Annotated[ScheduledState | None, Query()] = None,
        wait_seconds: Annotated[float, Query(alias="waitSeconds", ge=0, description="long-poll extension")] = 0,
    ) -> JSONResponse:
        states = [state] if state else []

        def worker_labels() -> set[str]:
            with server.db.read() as conn:
                w = store.get_worker(conn, user_id, worker_id)
            if w.state == WorkerState.OFFLINE:
                # a worker polling its queue is alive and idle (e.g. marked OFFLINE during an outage)
                with server.write() as tx:
                    store.revive_polling_worker(tx.conn, worker_id)
            else:
                server.touch_if_stale(worker_id, seen=w.last_seen_at)
            return set(json.loads(w.labels))

        labels = await run_in_threadpool(worker_labels)

        def query() -> list[Any]:
            with server.db.read() as conn:
                return store.schedule_query(conn, user_id, states, labels, include_unlockable=False)

        # the lease was renewed above, before the wait (which is capped at half a lease): an idle
        # worker costs one row read and at most one write per poll, the poll after this one renews
        return await _long_poll(user_id, states, labels, False, wait_seconds, query)

    @app.put(
        "/v1/datasets/{datasetId}/docker/worker/{workerId}/schedule/{scheduledId}",
        status_code=204,
        tags=["docker"],
    )
    def update_scheduled_by_worker(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        worker_id: Annotated[str, Path(alias="workerId", pattern=OID_PATTERN)],
        scheduled_id: Annotated[str, Path(alias="scheduledId", pattern=OID_PATTERN)],
        body: ScheduledRunUpdateRequest,
        user_id: User,
    ) -> Response:
        try:
            if body.state == ScheduledState.LOCKED and body.priority is None and body.runs_on is None:
                with server.db.read() as conn:
                    if not store.claim_precheck(conn, user_id, worker_id, scheduled_id):
                        return _no_content()
            with server.write() as tx:
                store.update_scheduled_by_worker(tx.conn, user_id, dataset_id, worker_id, scheduled_id, body)
                tx.schedule_changed = body.state != ScheduledState.LOCKED
        except ApiError as exc:
            if body.state == ScheduledState.LOCKED:
                server.metrics.claims.labels("conflict" if exc.status == 409 else "error").inc()
                server.broker.release(scheduled_id)  # still OPEN (e.g. its dataset was locked)? next waiter
            raise
        if body.state == ScheduledState.LOCKED:
            server.metrics.claims.labels("locked").inc()
        return _no_content()

    # ------------------------------------------------------------ worker configs

    @app.post("/v1/docker/worker/config/vX", status_code=201, response_model=CreateEntityResponse, tags=["docker"])
    def create_config(body: WorkerConfigCreateRequest, user_id: User) -> JSONResponse:
        with server.write() as tx:
            return _created(store.create_config(tx.conn, user_id, body.config, body.wire()))

    @app.get("/v1/docker/worker/config/vX/{configId}", response_model=WorkerConfigData, tags=["docker"])
    def get_config(config_id: Annotated[str, Path(alias="configId", pattern=OID_PATTERN)], user_id: User):
        with server.db.read() as conn:
            return _json(store.get_config(conn, user_id, config_id))

    # ------------------------------------------------------------ datasets

    @app.post("/v1/datasets", status_code=201, response_model=CreateEntityResponse, tags=["datasets"])
    def create_dataset(body: DatasetCreateRequest, user_id: User) -> JSONResponse:
        with server.write() as tx:
            return _created(store.create_dataset(tx.conn, user_id, body))

    @app.get("/v1/datasets", response_model=list[DatasetData], tags=["datasets"])
    def list_datasets(
        user_id: User,
        page_size: PageSize = None,
        page_offset: PageOffset = None,
        shared: bool = False,
        get_assets_of_team: Annotated[bool, Query(alias="getAssetsOfTeam")] = False,
    ) -> JSONResponse:
        size, off = store.page(page_size, page_offset)
        with server.db.read() as conn:
            if shared:
                return _json([])  # single-tenant: nothing is shared with this user
            rows = conn.execute(
                select(datasets)
                .where(datasets.c.user_id == user_id)
                .order_by(datasets.c.created_at, datasets.c.id)
                .limit(size)
                .offset(off)
            ).all()
            return _json(store.datasets_data(conn, rows))

    @app.get("/v1/datasets/query/name/{datasetName}", response_model=list[DatasetData], tags=["datasets"])
    def datasets_by_name(
        dataset_name: Annotated[str, Path(alias="datasetName")],
        user_id: User,
        exact: bool = False,
        shared: bool = False,
        page_size: PageSize = None,
        page_offset: PageOffset = None,
    ) -> JSONResponse:
        size, off = store.page(page_size, page_offset)
        cond = datasets.c.name == dataset_name if exact else datasets.c.name.startswith(dataset_name, autoescape=True)
        with server.db.read() as conn:
            if shared:
                return _json([])
            rows = conn.execute(
                select(datasets)
                .where(datasets.c.user_id == user_id, cond)
                .order_by(datasets.c.created_at, datasets.c.id)
                .limit(size)
                .offset(off)
            ).all()
            return _json(store.datasets_data(conn, rows))

    @app.get("/v1/datasets/{datasetId}", response_model=DatasetData, tags=["datasets"])
    def get_dataset(dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)], user_id: User):
        with server.db.read() as conn:
            return _json(store.dataset_data(conn, store.get_dataset(conn, user_id, dataset_id)))

    @app.get("/v1/datasets/{datasetId}/mappings", response_model=list[str], tags=["mappings"])
    def sample_mappings(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        user_id: User,
        field: Annotated[str, Query()] = "fileName",
        page_size: PageSize = None,
        page_offset: PageOffset = None,
    ) -> JSONResponse:
        if field != "fileName":
            raise bad_request(f"mappings field {field!r} is not supported; use field=fileName")
        size, off = store.page(page_size, page_offset)
        with server.db.read() as conn:
            store.get_dataset(conn, user_id, dataset_id)
            names = store.dataset_filenames(conn, dataset_id)
        return JSONResponse(names[off : off + size])

    # ------------------------------------------------------------ datasources

    @app.put("/v1/datasets/{datasetId}/datasource", status_code=204, tags=["datasources"])
    def put_datasource(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        body: Annotated[DatasourceConfig, Body()],
        user_id: User,
    ) -> Response:
        if body.type == "LOCAL":
            problem = local_path_problem(body.full_path)
            if problem:
                raise ApiError(400, ApiErrorCode.DATASET_DATASOURCE_INVALID, problem)
        with server.write() as tx:
            store.get_dataset(tx.conn, user_id, dataset_id)
            previous = store.get_datasources(tx.conn, dataset_id).get(body.purpose)
            sealed = crypto.seal_datasource(server.keyring, body.wire(), previous)
            store.put_datasource(tx.conn, user_id, dataset_id, sealed)
        return _no_content()

    @app.get("/v1/datasets/{datasetId}/datasource", response_model=DatasourceConfig, tags=["datasources"])
    def get_datasource(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        user_id: User,
        purpose: Annotated[str | None, Query(pattern="^(INPUT|LIGHTLY|INPUT_OUTPUT)$")] = None,
    ) -> JSONResponse:
        with server.db.read() as conn:
            store.get_dataset(conn, user_id, dataset_id)
            config = store.resolve_datasource(store.get_datasources(conn, dataset_id), purpose)
        if config is None:
            raise ApiError(
                404,
                ApiErrorCode.DATASET_DATASOURCE_UNKNOWN,
                f"dataset {dataset_id} has no {purpose or ''} datasource yet; set one with PUT .../datasource",
            )
        return JSONResponse(crypto.redact_datasource(config))

    @app.get("/v1/datasets/{datasetId}/datasource/all", response_model=list[DatasourceConfig], tags=["datasources"])
    def all_datasources(dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)], user_id: User):
        with server.db.read() as conn:
            store.get_dataset(conn, user_id, dataset_id)
            return JSONResponse([crypto.redact_datasource(c) for c in store.get_datasources(conn, dataset_id).values()])

    # ------------------------------------------------------------ scheduled runs

    @app.post(
        "/v1/datasets/{datasetId}/docker/worker/schedule",
        status_code=201,
        response_model=CreateEntityResponse,
        tags=["docker"],
    )
    def schedule_run(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        body: ScheduledRunCreateRequest,
        user_id: User,
        disable_validation: Annotated[bool, Query(alias="disableConfigValidation")] = False,
    ) -> JSONResponse:
        with server.write() as tx:
            sid = store.create_scheduled(tx.conn, user_id, dataset_id, body, validate=not disable_validation)
            tx.schedule_changed = True
        return _created(sid)

    @app.get(
        "/v1/datasets/{datasetId}/docker/worker/schedule",
        response_model=list[ScheduledRunData],
        tags=["docker"],
    )
    def scheduled_for_dataset(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        user_id: User,
        state: Annotated[ScheduledState | None, Query()] = None,
        states: Annotated[list[ScheduledState] | None, Query()] = None,
    ) -> JSONResponse:
        wanted = ([state] if state else []) + list(states or [])
        with server.db.read() as conn:
            rows = store.list_scheduled_for_dataset(conn, user_id, dataset_id, wanted)
        return _json([store.scheduled_data(r) for r in rows])

    @app.put("/v1/datasets/{datasetId}/docker/worker/schedule/{scheduledId}", status_code=204, tags=["docker"])
    def cancel_scheduled(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        scheduled_id: Annotated[str, Path(alias="scheduledId", pattern=OID_PATTERN)],
        user_id: User,
    ) -> Response:
        with server.write() as tx:
            store.cancel_scheduled(tx.conn, user_id, dataset_id, scheduled_id)
            tx.schedule_changed = True
        return _no_content()

    # ------------------------------------------------------------ runs

    @app.post("/v1/docker/runs", status_code=201, response_model=CreateEntityResponse, tags=["docker"])
    def create_run(body: RunCreateRequest, user_id: User) -> JSONResponse:
        with server.write() as tx:
            return _created(store.create_run(tx.conn, user_id, body))

    @app.get("/v1/docker/runs", response_model=list[RunData], tags=["docker"])
    def list_runs(
        user_id: User,
        page_size: PageSize = None,
        page_offset: PageOffset = None,
        show_archived: Annotated[bool, Query(alias="showArchived")] = True,
    ) -> JSONResponse:
        size, off = store.page(page_size, page_offset)
        with server.db.read() as conn:
            q = select(runs).where(runs.c.user_id == user_id)
            if not show_archived:
                q = q.where(runs.c.archived.is_(False))
            rows = conn.execute(q.order_by(runs.c.created_at, runs.c.id).limit(size).offset(off)).all()
            return _json(store.runs_data(conn, rows))

    @app.get("/v1/docker/runs/count", tags=["docker"])
    def count_runs(user_id: User) -> str:
        with server.db.read() as conn:
            return str(conn.execute(select(func.count()).select_from(runs).where(runs.c.user_id == user_id)).scalar())

    @app.get("/v1/docker/runs/query/datasetId/{datasetId}", response_model=list[RunData], tags=["docker"])
    def runs_of_dataset(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        user_id: User,
        page_size: PageSize = None,
        page_offset: PageOffset = None,
    ) -> JSONResponse:
        size, off = store.page(page_size, page_offset)
        with server.db.read() as conn:
            store.get_dataset(conn, user_id, dataset_id)
            rows = conn.execute(
                select(runs)
                .where(runs.c.user_id == user_id, runs.c.dataset_id == dataset_id)
                .order_by(runs.c.created_at, runs.c.id)
                .limit(size)
                .offset(off)
            ).all()
            return _json(store.runs_data(conn, rows))

    @app.get("/v1/docker/runs/schedule/{scheduledId}", response_model=RunData, tags=["docker"])
    def run_of_scheduled(
        scheduled_id: Annotated[str, Path(alias="scheduledId", pattern=OID_PATTERN)], user_id: User
    ) -> JSONResponse:
        with server.db.read() as conn:
            return _json(store.run_data(conn, store.run_for_scheduled(conn, user_id, scheduled_id)))

    @app.get("/v1/docker/runs/{runId}", response_model=RunData, tags=["docker"])
    def get_run(run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)], user_id: User):
        with server.db.read() as conn:
            return _json(store.run_data(conn, store.get_run(conn, user_id, run_id)))

    @app.put("/v1/docker/runs/{runId}", status_code=204, tags=["docker"])
    def update_run(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        body: RunUpdateRequest,
        user_id: User,
    ) -> Response:
        with server.write() as tx:
            before, terminal = store.update_run(tx.conn, user_id, run_id, body)
            tx.schedule_changed = terminal and before.scheduled_id is not None
        if terminal:
            server.metrics.run_duration.labels(body.state).observe(max(0.0, (now_ms() - before.created_at) / 1000))
        return _no_content()

    @app.put("/v1/docker/runs/{runId}/logs", status_code=204, tags=["docker"])
    def put_logs(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        body: Annotated[list[LogCreateEntry], Body(max_length=MAX_LOG_ENTRIES)],
        user_id: User,
    ) -> Response:
        with server.write() as tx:
            store.append_logs(tx.conn, user_id, run_id, body)
        return _no_content()

    @app.get("/v1/docker/runs/{runId}/logs", response_model=LogData, tags=["docker"])
    def get_logs(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        user_id: User,
        cursor: Annotated[int | None, Query(ge=0, le=MAX_INT64)] = None,
    ) -> JSONResponse:
        with server.db.read() as conn:
            return _json(store.read_logs(conn, user_id, run_id, cursor))

    @app.put("/v1/docker/runs/{runId}/selection", status_code=204, tags=["extensions"])
    def put_selection(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        body: RunSelectionRequest,
        user_id: User,
    ) -> Response:
        """Extension: the run's selected filenames; they become a dataset tag when the run COMPLETES."""
        with server.write() as tx:
            store.set_selection(tx.conn, user_id, run_id, body.filenames, body.tag_name)
        return _no_content()

    @app.get("/v1/docker/runs/{runId}/tags", response_model=list[TagData], tags=["docker"])
    def run_tags(run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)], user_id: User):
        from .db import tags

        with server.db.read() as conn:
            store.get_run(conn, user_id, run_id)
            rows = conn.execute(select(tags).where(tags.c.run_id == run_id).order_by(tags.c.created_at)).all()
            return _json([store.tag_data(r) for r in rows])

    # ------------------------------------------------------------ artifacts

    def _base_url(request: Request) -> str:
        return (settings.public_url or str(request.base_url)).rstrip("/")

    @app.post(
        "/v1/docker/runs/{runId}/artifacts",
        status_code=201,
        response_model=ArtifactCreatedData,
        tags=["docker"],
    )
    def create_artifact(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        body: ArtifactCreateRequest,
        user_id: User,
        request: Request,
    ) -> JSONResponse:
        aid = new_id()
        with server.write() as tx:
            r = store.get_run(tx.conn, user_id, run_id)
            tx.conn.execute(
                artifacts.insert().values(
                    id=aid,
                    run_id=run_id,
                    type=body.type,
                    file_name=body.file_name,
                    storage_location=body.storage_location or "LIGHTLY",
                    uploaded=False,
                    confirmed=False,
                    created_at=now_ms(),
                )
            )
            store.touch_worker(tx.conn, r.worker_id)
        url = f"{_base_url(request)}/v1/artifacts/{aid}/upload?{server.store.signed_query('write', aid)}"
        return _json(ArtifactCreatedData(signed_write_url=url, artifact_id=aid), 201)

    def _artifact(conn: Connection, user_id: str, run_id: str, artifact_id: str) -> Any:
        store.get_run(conn, user_id, run_id)
        a = conn.execute(select(artifacts).where(artifacts.c.id == artifact_id, artifacts.c.run_id == run_id)).first()
        if a is None:
            raise not_found(ApiErrorCode.DOCKER_RUN_ARTIFACT_UNKNOWN, "artifact", artifact_id)
        return a

    @app.put("/v1/docker/runs/{runId}/artifacts/{artifactId}/confirmUpload", status_code=204, tags=["docker"])
    def confirm_artifact(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        artifact_id: Annotated[str, Path(alias="artifactId", pattern=OID_PATTERN)],
        user_id: User,
    ) -> Response:
        with server.write() as tx:
            a = _artifact(tx.conn, user_id, run_id, artifact_id)
            if not a.uploaded:
                raise ApiError(
                    409,
                    ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
                    f"artifact {artifact_id} has no uploaded content yet: PUT the file to its signedWriteUrl first",
                )
            tx.conn.execute(update(artifacts).where(artifacts.c.id == artifact_id).values(confirmed=True))
        return _no_content()

    @app.get("/v1/docker/runs/{runId}/artifacts/{artifactId}/readurl", tags=["docker"])
    def artifact_read_url(
        run_id: Annotated[str, Path(alias="runId", pattern=OID_PATTERN)],
        artifact_id: Annotated[str, Path(alias="artifactId", pattern=OID_PATTERN)],
        user_id: User,
        request: Request,
    ) -> str:
        with server.db.read() as conn:
            a = _artifact(conn, user_id, run_id, artifact_id)
        if not a.uploaded:
            raise ApiError(
                404,
                ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
                f"artifact {artifact_id} was never uploaded",
            )
        return (
            f"{_base_url(request)}/v1/artifacts/{artifact_id}/download?{server.store.signed_query('read', artifact_id)}"
        )

    def _check_signature(action: str, artifact_id: str, expires: int, signature: str) -> None:
        if not signature.isascii() or not server.store.verify(action, artifact_id, expires, signature):
            raise ApiError(403, ApiErrorCode.FORBIDDEN, "the signed URL is invalid or expired; request a new one")

    @app.put("/v1/artifacts/{artifactId}/upload", status_code=200, tags=["artifacts"])
    async def upload_artifact(
        artifact_id: Annotated[str, Path(alias="artifactId", pattern=OID_PATTERN)],
        expires: int,
        signature: str,
        request: Request,
    ) -> Response:
        _check_signature("write", artifact_id, expires, signature)

        def confirmed(conn: Connection) -> bool:
            row = conn.execute(
                select(artifacts.c.confirmed).where(artifacts.c.id == artifact_id).with_for_update()
            ).first()
            return bool(row and row.confirmed)

        def refuse_confirmed() -> ApiError:
            return ApiError(
                409,
                ApiErrorCode.DOCKER_RUN_ARTIFACT_UNAVAILABLE,
                f"artifact {artifact_id} is confirmed; its content cannot change any more (create a new artifact)",
            )

        def check() -> bool:
            with server.db.read() as conn:
                return confirmed(conn)

        if await run_in_threadpool(check):
            raise refuse_confirmed()
        tmp, final = server.store.open_for_write(artifact_id)
        size = 0
        try:
            with open(tmp, "wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > settings.max_upload_bytes:
                        raise ApiError(
                            413,
                            ApiErrorCode.PAYLOAD_TOO_LARGE,
                            f"artifact larger than {settings.max_upload_bytes} bytes",
                        )
                    fh.write(chunk)

            def commit() -> None:
                # the content changes only while the artifact is unconfirmed (checked under the row lock)
                with server.write() as tx:
                    if confirmed(tx.conn):
                        raise refuse_confirmed()
                    os.replace(tmp, final)
                    tx.conn.execute(
                        update(artifacts).where(artifacts.c.id == artifact_id).values(uploaded=True, size=size)
                    )

            await run_in_threadpool(commit)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return Response(status_code=200)

    @app.get("/v1/artifacts/{artifactId}/download", tags=["artifacts"])
    def download_artifact(
        artifact_id: Annotated[str, Path(alias="artifactId", pattern=OID_PATTERN)],
        expires: int,
        signature: str,
    ) -> FileResponse:
        _check_signature("read", artifact_id, expires, signature)
        with server.db.read() as conn:
            a = conn.execute(select(artifacts).where(artifacts.c.id == artifact_id)).first()
        path = server.store.path(artifact_id)
        if a is None or not path.exists():
            raise not_found(ApiErrorCode.DOCKER_RUN_ARTIFACT_UNKNOWN, "artifact", artifact_id)
        name = os.path.basename(_safe_artifact_name(a.file_name, artifact_id))
        return FileResponse(path, filename=name, media_type="application/octet-stream")

    # ------------------------------------------------------------ tags

    @app.get("/v1/datasets/{datasetId}/tags", response_model=list[TagData], tags=["tags"])
    def list_tags(dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)], user_id: User):
        from .db import tags

        with server.db.read() as conn:
            store.get_dataset(conn, user_id, dataset_id)
            rows = conn.execute(
                select(tags).where(tags.c.dataset_id == dataset_id).order_by(tags.c.created_at, tags.c.id)
            ).all()
            return _json([store.tag_data(r) for r in rows])

    @app.get("/v1/datasets/{datasetId}/tags/{tagId}", response_model=TagData, tags=["tags"])
    def get_tag(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        tag_id: Annotated[str, Path(alias="tagId", pattern=OID_PATTERN)],
        user_id: User,
    ) -> JSONResponse:
        with server.db.read() as conn:
            return _json(store.tag_data(store.get_tag(conn, user_id, dataset_id, tag_id)))

    @app.get("/v1/datasets/{datasetId}/tags/{tagId}/filenames", response_model=list[str], tags=["tags"])
    def tag_filenames(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        tag_id: Annotated[str, Path(alias="tagId", pattern=OID_PATTERN)],
        user_id: User,
    ) -> JSONResponse:
        with server.db.read() as conn:
            return JSONResponse(store.tag_filenames(conn, store.get_tag(conn, user_id, dataset_id, tag_id)))

    @app.get("/v1/datasets/{datasetId}/tags/{tagId}/export/basic/filenames", tags=["tags"])
    def export_tag_filenames(
        dataset_id: Annotated[str, Path(alias="datasetId", pattern=OID_PATTERN)],
        tag_id: Annotated[str, Path(alias="tagId", pattern=OID_PATTERN)],
        user_id: User,
        page_size: PageSize = None,
        page_offset: PageOffset = None,
    ) -> JSONResponse:
        size, off = store.page(page_size, page_offset)
        with server.db.read() as conn:
            names = store.tag_filenames(conn, store.get_tag(conn, user_id, dataset_id, tag_id))
        # a JSON string, not bare text: the client json-decodes every body first, so a page that
        # happens to be a JSON literal ("null", "12e45") would otherwise be mangled
        page = names[off : off + size]
        lines = [n for n in page if len(n.splitlines()) == 1 and "\n" not in n]
        if len(lines) != len(page):
            log.warning("tag %s: %d filenames with line breaks left out of the export", tag_id, len(page) - len(lines))
        return JSONResponse("\n".join(lines))

    return app
