"""How fleets reach the Lightly API: the token from their Secret, one HTTP pool, and the API's cached view.

The answers that many fleets share (the worker listing, the scheduled runs of their labels, the shard
summary) are polled at most once per resync interval per API and token (``ApiStateCache``), not once per
fleet.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import httpx
from lightly_protocol.models import WorkerData
from lightly_protocol.shards import ShardSummary

from .builders import token_fingerprint
from .kube import Kube
from .lightly_api import ApiStateCache, LightlyApi
from .settings import OperatorSettings
from .spec import LightlyWorkerSpec


@dataclass
class ApiView:
    """What the API says about the workers of one fleet's token and labels."""

    states: dict[str, WorkerData]  # worker id -> its state
    holding: dict[str, str]  # worker id -> scheduled run id it holds
    open_runs: int
    #: OPEN shards of split runs this fleet's labels fit, that workers could take now (within each run's cap)
    open_shards: int = 0
    #: worker id -> LEASED shards it holds (any of the token's split runs)
    shard_holders: dict[str, int] = field(default_factory=dict)


def shard_view(rows: list[ShardSummary], labels: list[str]) -> tuple[int, dict[str, int]]:
    """(OPEN shards a fleet with ``labels`` could take now, LEASED shards per holder) from the summary.

    A run fits the fleet when its runsOn is a subset of the fleet's labels, as for scheduled runs.
    """
    fleet = set(labels)
    open_shards = sum(r.demand() for r in rows if set(r.runs_on) <= fleet)
    holders = Counter(w for r in rows for w in r.holders)
    return open_shards, dict(holders)


class ApiAccess:
    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self.cache = ApiStateCache(ttl=max(0.5, settings.resync_seconds))
        self.secrets = ApiStateCache(ttl=max(0.5, settings.resync_seconds))

    @property
    def http(self) -> httpx.AsyncClient:
        """One connection pool per event loop (kopf runs one loop; tests may run several in turn)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
                verify=self.settings.tls_verify(),
            )
            self._http_loop = loop
            self.cache = ApiStateCache(ttl=self.cache.ttl)
        return self._http

    async def close(self) -> None:
        if self._http is not None and self._http_loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    def url(self, spec: LightlyWorkerSpec) -> str:
        return (spec.api.url or self.settings.api_url).rstrip("/")

    async def token(self, namespace: str, spec: LightlyWorkerSpec, fresh: bool = False) -> tuple[str, str]:
        """The token and its fingerprint; the Secret is read at most once per resync interval (unless fresh)."""
        ref = spec.api.token_secret_ref

        async def read() -> tuple[str, str]:
            value, raw = await self.kube.read_secret_value(
                namespace, ref.name, ref.key, "spec.api.tokenSecretRef", self.settings.policy
            )
            return value, token_fingerprint({ref.key: raw}, ref.key)

        if fresh:
            return await read()
        cached: tuple[str, str] = await self.secrets.get((namespace, ref.name, ref.key), read)
        return cached

    async def check_secret(self, namespace: str, name: str, field: str) -> None:
        """SecretProblem unless the Secret exists and is opted in; the answer is kept for a resync interval."""

        async def read() -> bool:
            await self.kube.read_secret(namespace, name, field, self.settings.policy)
            return True

        await self.secrets.get((namespace, name, "", "opted-in"), read)

    def client(self, url: str, token: str) -> LightlyApi:
        return LightlyApi(url, token, self.settings.call_timeout_seconds, self.http)

    async def view(self, api: LightlyApi, fp: str, labels: list[str], autoscaling: bool) -> ApiView:
        key = (api.url, fp)
        workers = await self.cache.get((*key, "workers"), api.workers)
        locked = await self.cache.get((*key, "locked", tuple(sorted(labels))), lambda: api.scheduled("LOCKED", labels))
        open_runs = 0
        if autoscaling:
            rows = await self.cache.get((*key, "open", tuple(sorted(labels))), lambda: api.scheduled("OPEN", labels))
            open_runs = len(rows)
        # one summary per token and interval, shared by every fleet (each filters it by its labels)
        open_shards, holders = shard_view(await self.cache.get((*key, "shards"), api.shard_summary), labels)
        return ApiView(
            states={w.id: w for w in workers},
            holding={r.owner: r.id for r in locked if r.owner},
            open_runs=open_runs,
            open_shards=open_shards if autoscaling else 0,
            shard_holders=holders,
        )

    def invalidate(self, url: str, fp: str) -> None:
        """Forget the cached view of one API and token (after registering or deregistering workers)."""
        self.cache.invalidate((url, fp))
