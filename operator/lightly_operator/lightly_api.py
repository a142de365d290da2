"""The operator's calls to the Lightly API, each with a timeout, errors classified for humans."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from lightly_protocol.models import ScheduledRunData, WorkerCreateRequest, WorkerData


class ApiProblem(Exception):
    """A failed API call; ``reason`` is a condition reason, the message says what to do."""

    reason = "ApiError"


class ApiUnreachable(ApiProblem):
    reason = "ApiUnreachable"


class TokenRejected(ApiProblem):
    reason = "TokenRejected"


class LightlyApi:
    def __init__(self, url: str, token: str, timeout: float, client: httpx.AsyncClient) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.http = client

    def __repr__(self) -> str:  # never show the token
        return f"LightlyApi({self.url})"

    async def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None) -> Any:
        query = {**(params or {}), "token": self._token}
        try:
            r = await self.http.request(method, f"{self.url}{path}", params=query, json=json, timeout=self.timeout)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise ApiUnreachable(
                f"cannot reach the Lightly API at {self.url} ({type(exc).__name__}); check spec.api.url / "
                "LIGHTLY_SERVER_LOCATION and that the server is up"
            ) from None
        if r.status_code == 401:
            raise TokenRejected(
                f"the Lightly API at {self.url} rejected the token; put a valid token in the Secret named by "
                "spec.api.tokenSecretRef"
            )
        if r.status_code >= 400:
            try:
                detail = r.json().get("error", r.text)
            except ValueError:
                detail = r.text[:200]
            problem = ApiUnreachable if r.status_code >= 500 else ApiProblem
            raise problem(f"{method} {path.split('?')[0]} answered {r.status_code}: {detail}")
        return r.json() if r.content else None

    async def register(self, name: str, labels: list[str], version: str) -> str:
        body = WorkerCreateRequest(name=name, labels=labels, creator="USER_PIP", docker_version=version).wire()
        return (await self._call("POST", "/v1/docker/worker", json=body))["id"]

    async def workers(self) -> list[WorkerData]:
        return [WorkerData.model_validate(w) for w in await self._call("GET", "/v1/docker/worker")]

    async def delete_worker(self, worker_id: str) -> None:
        try:
            await self._call("DELETE", f"/v1/docker/worker/{worker_id}")
        except ApiProblem as exc:
            if " answered 404" not in str(exc):
                raise

    async def scheduled(self, state: str, labels: list[str]) -> list[ScheduledRunData]:
        rows = await self._call("GET", "/v1/docker/worker/schedule", params={"state": state, "labels": labels})
        return [ScheduledRunData.model_validate(r) for r in rows]


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
