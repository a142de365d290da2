"""The operator's calls to the Lightly API, each with a timeout, errors classified for humans."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from lightly_protocol import paths
from lightly_protocol.client import NO_ANSWER, ApiCallError, ClientCore, bare, decode, error_detail, is_server_error
from lightly_protocol.enums import Creator
from lightly_protocol.models import CreateEntityResponse, ScheduledRunData, WorkerCreateRequest, WorkerData
from lightly_protocol.shards import ShardSummary
from lightly_protocol.tls import tls_problem


class ApiProblem(ApiCallError):
    """A failed API call; ``reason`` is a condition reason, the message says what to do, ``status``
    is the HTTP status (``NO_ANSWER``: none came)."""

    reason = "ApiError"

    def __init__(self, *args: Any, status: int = NO_ANSWER) -> None:
        Exception.__init__(self, *args)
        self.status = status


class ApiUnreachable(ApiProblem):
    reason = "ApiUnreachable"


class TokenRejected(ApiProblem):
    reason = "TokenRejected"


class LightlyApi(ClientCore):
    def __init__(self, url: str, token: str, timeout: float, client: httpx.AsyncClient) -> None:
        super().__init__(url, token)
        self.timeout = timeout
        self.http = client

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        try:
            r = await self.http.request(
                method, self.url_of(path), params=self.query(params), json=json, timeout=self.timeout
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            tls = tls_problem(exc)
            if tls:
                raise ApiUnreachable(f"cannot reach the Lightly API at {self.url}: {tls}") from None
            raise ApiUnreachable(
                f"cannot reach the Lightly API at {self.url} ({type(exc).__name__}); check spec.api.url / "
                "LIGHTLY_SERVER_LOCATION and that the server is up"
            ) from None
        if r.status_code == 401:
            raise TokenRejected(
                f"the Lightly API at {self.url} rejected the token; put a valid token in the Secret named by "
                "spec.api.tokenSecretRef",
                status=401,
            )
        if r.status_code >= 400:
            problem = ApiUnreachable if is_server_error(r.status_code) else ApiProblem
            detail = error_detail(r.text, limit=200)
            raise problem(f"{method} {bare(path)} answered {r.status_code}: {detail}", status=r.status_code)
        return decode(r.content)

    async def register(self, name: str, labels: list[str], version: str) -> str:
        body = WorkerCreateRequest(name=name, labels=labels, creator=Creator.USER_PIP, docker_version=version).wire()
        return CreateEntityResponse.model_validate(await self._call("POST", paths.WORKERS, json=body)).id

    async def workers(self) -> list[WorkerData]:
        return [WorkerData.model_validate(w) for w in await self._call("GET", paths.WORKERS)]

    async def delete_worker(self, worker_id: str) -> None:
        try:
            await self._call("DELETE", paths.worker(worker_id))
        except ApiProblem as exc:
            if exc.status != 404:
                raise

    async def scheduled(self, state: str, labels: list[str]) -> list[ScheduledRunData]:
        rows = await self._call("GET", paths.SCHEDULE, params={"state": state, "labels": labels})
        return [ScheduledRunData.model_validate(r) for r in rows]

    async def shard_summary(self) -> list[ShardSummary]:
        """Shard counts of the token's unfinished split runs (extension); a server without shards: none."""
        try:
            rows = await self._call("GET", paths.SHARDS_SUMMARY)
        except ApiProblem as exc:
            if exc.status == 404:  # an older server: no /v1/ext/ endpoints, so no shards
                return []
            raise
        return [ShardSummary.model_validate(r) for r in rows]


class ApiStateCache:
    """Shares the API's fleet-wide answers between reconciles: at most one poll per key per ``ttl``.

    Many LightlyWorker resources usually share one token: their reconciles then cost one
    worker listing per interval in total, not one per resource.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def get(self, key: tuple[Any, ...], fetch: Any) -> Any:
        hit = self._entries.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            hit = self._entries.get(key)
            if hit and hit[0] > time.monotonic():
                return hit[1]
            value = await fetch()
            self._entries[key] = (time.monotonic() + self.ttl, value)
            if len(self._entries) > 10000:
                self._entries.clear()
            return value

    def invalidate(self, key_prefix: tuple[Any, ...]) -> None:
        for key in [k for k in self._entries if k[: len(key_prefix)] == key_prefix]:
            self._entries.pop(key, None)
