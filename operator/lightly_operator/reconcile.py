"""Reconciliation of one LightlyWorker fleet: level-triggered and idempotent.

Every run re-reads the spec, the token Secret, the fleet's pods (from a kopf index, no LIST) and the
API's view of the workers (shared between fleets, one poll per interval), decides with the pure
``plan`` function, acts, and returns the new status (``None`` when nothing changed). Failures become
conditions, Events and log lines with a reason a human can act on; nothing is retried in a hot loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import kopf
from kubernetes.client import ApiException

from .builders import (
    CredentialsError,
    build_pod,
    build_pull_secret,
    selector_string,
    spec_checksum,
    token_fingerprint,
)
from .kube import Kube, SecretProblem
from .lightly_api import ApiProblem, ApiStateCache, LightlyApi
from .metrics import OperatorMetrics
from .plan import Plan, plan
from .settings import OperatorSettings
from .spec import LightlyWorkerSpec, SpecError, parse_spec
from .status import Condition, PodView, PullErrors, merge_conditions, now_iso

log = logging.getLogger("lightly_operator")


@dataclass
class FleetMemo:
    """What the operator remembers about one fleet between reconciles (kopf's per-object memo)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: dict[int, int] = field(default_factory=dict)
    retry_at: dict[int, float] = field(default_factory=dict)
    seen_failed: set[str] = field(default_factory=set)
    offline_since: dict[int, float] = field(default_factory=dict)
    autoscale_high_since: float = 0.0
    autoscale_desired: int | None = None
    warned: set[str] = field(default_factory=set)
    # registrations this process made or undid, for when the body's status is older than our last write
    registered: dict[int, str] = field(default_factory=dict)
    deregistered: set[str] = field(default_factory=set)
    # pods created but not yet seen in the pods index: pod name -> (when, its view)
    created: dict[str, tuple[float, PodView]] = field(default_factory=dict)


@dataclass
class ApiView:
    states: dict[str, Any]  # worker id -> WorkerData
    holding: dict[str, str]  # worker id -> scheduled run id it holds
    open_runs: int


class FleetReconciler:
    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self.cache = ApiStateCache(ttl=max(0.5, settings.resync_seconds))
        self.secrets = ApiStateCache(ttl=max(0.5, settings.resync_seconds))
        self.sweeps: dict[tuple[str, str], float] = {}
        self.pull_errors = PullErrors()

    @property
    def http(self) -> httpx.AsyncClient:
        """One connection pool per event loop (kopf runs one loop; tests may run several in turn)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=50, max_keepalive_connections=20))
            self._http_loop = loop
            self.cache = ApiStateCache(ttl=self.cache.ttl)
        return self._http

    async def close(self) -> None:
        if self._http is not None and self._http_loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = None

    # ------------------------------------------------------------------ helpers

    def api_url(self, spec: LightlyWorkerSpec) -> str:
        return (spec.api.url or self.settings.api_url).rstrip("/")

    async def token(self, namespace: str, spec: LightlyWorkerSpec, fresh: bool = False) -> tuple[str, str]:
        """The token and its fingerprint; the Secret is read at most once per resync interval (unless fresh)."""
        ref = spec.api.token_secret_ref

        async def read() -> tuple[str, str]:
            value, raw = await self.kube.read_secret_value(namespace, ref.name, ref.key, "spec.api.tokenSecretRef")
            return value, token_fingerprint({ref.key: raw}, ref.key)

        if fresh:
            return await read()
        return await self.secrets.get((namespace, ref.name, ref.key), read)

    def api(self, url: str, token: str) -> LightlyApi:
        return LightlyApi(url, token, self.settings.call_timeout_seconds, self.http)

    async def api_view(self, api: LightlyApi, fp: str, labels: list[str], autoscaling: bool) -> ApiView:
        key = (api.url, fp)
        workers = await self.cache.get((*key, "workers"), api.workers)
        locked = await self.cache.get((*key, "locked", tuple(sorted(labels))), lambda: api.scheduled("LOCKED", labels))
        open_runs = 0
        if autoscaling:
            rows = await self.cache.get((*key, "open", tuple(sorted(labels))), lambda: api.scheduled("OPEN", labels))
            open_runs = len(rows)
        return ApiView(
            states={w.id: w for w in workers},
            holding={r.owner: r.id for r in locked if r.owner},
            open_runs=open_runs,
        )

    # ------------------------------------------------------------------ reconcile

    async def reconcile(
        self,
        body: dict[str, Any],
        pods: list[PodView],
        memo: FleetMemo,
        logger: logging.Logger | logging.LoggerAdapter,
    ) -> dict[str, Any] | None:
        async with memo.lock:
            started = time.perf_counter()
            try:
                return await self._reconcile(body, pods, memo, logger)
            finally:
                self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    async def _reconcile(
        self, body: dict[str, Any], pods: list[PodView], memo: FleetMemo, logger: Any
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
        old_status = dict(body.get("status") or {})
        key = (namespace, name)
        problems: list[Condition] = []
        registered_ok: Condition | None = None

        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            return self._finish(
                body,
                memo,
                old_status,
                generation,
                phase="Error",
                problems=[Condition("Degraded", True, "InvalidSpec", str(exc))],
                extra={},
            )

        # pods we created that the index has not shown yet count as Pending (no duplicate creates)
        seen = {p.name for p in pods}
        now = time.monotonic()
        memo.created = {n: v for n, v in memo.created.items() if n not in seen and now - v[0] < 30}
        pods = [*pods, *(v[1] for v in memo.created.values())]
        by_index: dict[int, list[PodView]] = {}
        for p in pods:
            by_index.setdefault(p.index, []).append(p)
        workers_status = {w["index"]: w for w in old_status.get("workers") or [] if "index" in w}
        registered = {
            i: w["workerId"]
            for i, w in workers_status.items()
            if w.get("workerId") and w["workerId"] not in memo.deregistered
        }
        registered.update(memo.registered)

        # the token, and the API's view of the workers
        api: LightlyApi | None = None
        view: ApiView | None = None
        fp = ""
        url = self.api_url(spec)
        try:
            token, fp = await self.token(namespace, spec)
            api = self.api(url, token)
            view = await self.api_view(api, fp, spec.labels, spec.autoscaling.enabled)
        except SecretProblem as exc:
            problems.append(Condition("Degraded", True, exc.reason, str(exc)))
            registered_ok = Condition("Registered", False, exc.reason, str(exc))
            self.metrics.api_errors.labels(exc.reason).inc()
        except ApiProblem as exc:
            problems.append(Condition("Degraded", True, exc.reason, str(exc)))
            registered_ok = Condition("Registered", False, exc.reason, str(exc))
            self.metrics.api_errors.labels(exc.reason).inc()

        # which workers are busy (unknown API state: treat every worker as busy, touch nothing risky)
        if view is not None:
            busy = {
                i
                for i, wid in registered.items()
                if wid in view.holding or getattr(view.states.get(wid), "state", None) == "BUSY"
            }
        else:
            busy = set(registered) | set(by_index)

        if view is not None and api is not None:
            await self._rename_legacy(namespace, name, spec, api, view, registered, busy, by_index, memo, logger)

        desired = self._desired(spec, view, busy, memo)
        checksum = spec_checksum(body.get("spec") or {}, fp, self.settings, url) if fp else None

        # registry credentials -> pull Secret
        if spec.registry_credentials and api is not None:
            problem, changed = await self._pull_secret(body, spec, namespace)
            if problem:
                problems.append(problem)
            if changed:  # new credentials: pods that never got their image retry now, not after the backoff
                await self._retry_image_pulls(namespace, pods, logger)

        now = time.monotonic()
        blocked = {i for i, t in memo.retry_at.items() if t > now}
        the_plan: Plan | None = None
        if checksum is not None and api is not None:
            the_plan = plan(desired, registered, by_index, busy, checksum, spec.update_strategy.type, blocked)
            reg_problem = await self._register(the_plan, spec, namespace, name, api, registered)
            memo.registered.update({i: registered[i] for i in the_plan.register if i in registered})
            if reg_problem:
                problems.append(reg_problem)
                registered_ok = Condition("Registered", False, reg_problem.reason, reg_problem.message)
            await self._act(body, spec, the_plan, registered, checksum, url, api, memo, logger, by_index)
            if the_plan.deregister or the_plan.register:
                self.cache.invalidate((api.url, fp))

        # pods and workers -> status
        worker_entries, ready, busy_count, states = [], 0, 0, Counter()
        pending_reasons: Counter[str] = Counter()
        keep = the_plan.keep if the_plan else sorted(set(registered) | set(by_index))
        for i in sorted(set(keep) | set(registered)):
            if i not in registered:
                continue
            wid = registered[i]
            live = [p for p in by_index.get(i, []) if not p.deleting]
            pod = live[0] if live else None
            w = view.states.get(wid) if view else None
            state = "BUSY" if i in busy and view is not None else (w.state if w else "UNKNOWN")
            states[state] += 1
            entry: dict[str, Any] = {
                "index": i,
                "workerId": wid,
                "name": self.settings.worker_name(namespace, name, i),
                "state": state,
            }
            if pod:
                entry["pod"] = pod.name
                if pod.ready:
                    ready += 1
                if pod.problem:
                    pending_reasons[pod.problem[0]] += 1
                    problems.append(
                        Condition(
                            "Degraded", True, pod.problem[0], f"pod {pod.name}: {pod.problem[0]}: {pod.problem[1]}"
                        )
                    )
                elif pod.phase == "Pending":
                    pending_reasons["Pending"] += 1
            if view is not None and wid in view.holding:
                entry["currentRun"] = view.holding[wid]
            if w is not None:
                entry["lastSeen"] = _iso(w.last_modified_at)
                if w.docker_version:
                    entry["version"] = w.docker_version
            if i in busy and view is not None:
                busy_count += 1
            # a worker that stays OFFLINE although its pod is ready
            if pod and pod.ready and w is not None and w.state == "OFFLINE":
                since = memo.offline_since.setdefault(i, now)
                if now - since >= self.settings.offline_grace_seconds:
                    problems.append(
                        Condition(
                            "Degraded",
                            True,
                            "WorkerOffline",
                            f"worker {wid} (pod {pod.name}) has reported nothing to {url} for "
                            f"{int(now - since)} s although its pod is ready; check the pod's logs and its network "
                            "path to the API",
                        )
                    )
            else:
                memo.offline_since.pop(i, None)
            worker_entries.append(entry)

        versions = sorted(
            {
                w.docker_version
                for w in (view.states.values() if view else [])
                if w.docker_version and w.id in registered.values()
            }
        )
        live_pods = sum(1 for p in pods if not p.deleting)
        self.metrics.snapshot.workers[key] = states
        self.metrics.snapshot.pending[key] = pending_reasons

        registered_count = sum(1 for i in (the_plan.keep if the_plan else []) if i in registered)
        if registered_ok is None:
            registered_ok = Condition(
                "Registered",
                registered_count >= desired,
                "AllRegistered" if registered_count >= desired else "Registering",
                f"{registered_count}/{desired} workers registered with {url}",
            )
        if desired == 0:
            ready_cond = Condition("Ready", True, "ScaledToZero", "no workers wanted")
        else:
            ok = ready >= desired
            ready_cond = Condition(
                "Ready", ok, "AllReady" if ok else "PodsNotReady", f"{ready}/{desired} workers ready"
            )
        progressing = self._progressing(the_plan, desired, live_pods)
        extra = {
            "replicas": live_pods,
            "readyReplicas": ready,
            "busyReplicas": busy_count,
            "desiredReplicas": desired,
            "selector": selector_string(name),
            "workers": worker_entries,
        }
        if versions:
            extra["workerVersion"] = ",".join(versions)
        phase = (
            "Degraded"
            if problems
            else "ScaledToZero"
            if desired == 0 and live_pods == 0
            else "Updating"
            if progressing.status
            else "Running"
            if ready_cond.status
            else "Pending"
        )
        return self._finish(
            body,
            memo,
            old_status,
            generation,
            phase,
            problems,
            extra,
            conditions=[registered_ok, ready_cond, progressing],
        )

    # ------------------------------------------------------------------ pieces

    def _desired(self, spec: LightlyWorkerSpec, view: ApiView | None, busy: set[int], memo: FleetMemo) -> int:
        a = spec.autoscaling
        if not a.enabled:
            return spec.replicas
        if view is None:  # cannot see the queue: hold the current size
            return memo.autoscale_desired if memo.autoscale_desired is not None else a.min_replicas
        need = max(a.min_replicas, min(a.max_replicas, view.open_runs + len(busy)))
        now = time.monotonic()
        current = memo.autoscale_desired
        if current is None or need >= current:
            memo.autoscale_high_since = now
            memo.autoscale_desired = need
        elif now - memo.autoscale_high_since >= a.scale_down_delay_seconds:
            memo.autoscale_desired = need
        return memo.autoscale_desired

    async def _pull_secret(
        self, body: dict[str, Any], spec: LightlyWorkerSpec, namespace: str
    ) -> tuple[Condition | None, bool]:
        """Keep the dockerconfigjson pull Secret equal to the key file: (problem, whether it changed).

        Running pods are not restarted for a changed key: the kubelet reads pull Secrets only to pull.
        """
        creds = spec.registry_credentials
        assert creds is not None
        try:
            key, _ = await self.kube.read_secret_value(
                namespace, creds.secret_ref.name, creds.secret_ref.key, "spec.registryCredentials.secretRef"
            )
            changed = await self.kube.apply_secret(namespace, build_pull_secret(body, creds.registry, key))
        except SecretProblem as exc:
            return Condition("Degraded", True, f"Registry{exc.reason}", str(exc)), False
        except CredentialsError as exc:
            return Condition("Degraded", True, "RegistryCredentialsInvalid", str(exc)), False
        return None, changed

    async def _retry_image_pulls(self, namespace: str, pods: list[PodView], logger: Any) -> None:
        """Delete the pods whose container never started for want of its image (no job can run in them):
        they are recreated at once and pull with the new credentials."""
        for pod in pods:
            if pod.image_pull and not pod.deleting:
                try:
                    await self.kube.delete_pod(namespace, pod.name)
                    self.metrics.pod_actions.labels("delete").inc()
                    logger.info(f"deleted pod {pod.name}: it could not pull its image; retrying with new credentials")
                except ApiException as exc:
                    logger.warning(f"could not delete pod {pod.name} ({exc.status} {exc.reason}); kubelet retries")

    async def _rename_legacy(
        self,
        namespace: str,
        name: str,
        spec: LightlyWorkerSpec,
        api: LightlyApi,
        view: ApiView,
        registered: dict[int, str],
        busy: set[int],
        by_index: dict[int, list[PodView]],
        memo: FleetMemo,
        logger: Any,
    ) -> None:
        """Move idle replicas registered under the old name scheme (dots) to the current one.

        Register the new name, delete the replica's pod (it is recreated with the new worker id) and
        deregister the old worker. A busy replica keeps its old registration until it is idle. What
        fails here is retried next time or, for the old registration, removed by the orphan sweep.
        """
        for i, wid in sorted(registered.items()):
            w = view.states.get(wid)
            ref = self.settings.parse_worker_name(w.name, [(namespace, name)]) if w is not None else None
            if ref is None or not ref.legacy or (ref.namespace, ref.name, ref.index) != (namespace, name, i):
                continue
            if i in busy:
                continue
            new_name = self.settings.worker_name(namespace, name, i)
            try:
                new_id = await api.register(new_name, spec.labels, "")
            except ApiProblem as exc:
                logger.warning(f"could not re-register legacy-named worker {wid} ({w.name}): {exc}; will retry")
                continue
            registered[i] = memo.registered[i] = new_id
            self.metrics.registrations.labels("register", "ok").inc()
            try:
                for pod in by_index.get(i, []):
                    if pod.worker_id == wid and not pod.deleting:
                        await self.kube.delete_pod(namespace, pod.name)
                await api.delete_worker(wid)
            except (ApiException, ApiProblem) as exc:
                logger.warning(f"legacy-named worker {wid} ({w.name}) not removed yet ({exc}); the sweep will")
                continue
            memo.deregistered.add(wid)
            self.metrics.registrations.labels("deregister", "ok").inc()
            logger.info(f"replica {i}: legacy-named worker {wid} ({w.name}) replaced by {new_id} ({new_name})")

    async def _register(
        self, p: Plan, spec: LightlyWorkerSpec, namespace: str, name: str, api: LightlyApi, registered: dict[int, str]
    ) -> Condition | None:
        for i in p.register:
            try:
                registered[i] = await api.register(self.settings.worker_name(namespace, name, i), spec.labels, "")
                self.metrics.registrations.labels("register", "ok").inc()
            except ApiProblem as exc:
                self.metrics.registrations.labels("register", exc.reason).inc()
                self.metrics.api_errors.labels(exc.reason).inc()
                return Condition("Degraded", True, exc.reason, str(exc))
        return None

    async def _act(
        self,
        body: dict[str, Any],
        spec: LightlyWorkerSpec,
        p: Plan,
        registered: dict[int, str],
        checksum: str,
        url: str,
        api: LightlyApi,
        memo: FleetMemo,
        logger: Any,
        by_index: dict[int, list[PodView]],
    ) -> None:
        namespace = body["metadata"]["namespace"]
        now = time.monotonic()
        for pods in by_index.values():
            for pod in pods:
                if pod.phase == "Failed" and pod.name not in memo.seen_failed:
                    memo.seen_failed.add(pod.name)
                    n = memo.failures[pod.index] = memo.failures.get(pod.index, 0) + 1
                    memo.retry_at[pod.index] = now + min(300.0, 2.0**n)
                elif pod.ready:
                    memo.failures.pop(pod.index, None)
        for pod_name, reason in p.delete:
            try:
                await self.kube.delete_pod(namespace, pod_name)
                self.metrics.pod_actions.labels("delete").inc()
                logger.info(f"deleted pod {pod_name}: {reason}")
            except ApiException as exc:
                logger.warning(f"could not delete pod {pod_name} ({exc.status} {exc.reason}); will retry")
        for i in p.create:
            wid = registered.get(i)
            if not wid:
                continue
            pod = build_pod(body, spec, i, wid, checksum, self.settings, url)
            try:
                created = await self.kube.create_pod(namespace, pod)
                name = pod["metadata"]["name"]
                memo.created[name] = (time.monotonic(), PodView(name, i, checksum, wid, "Pending", False, False, None))
                if created:
                    self.metrics.pod_actions.labels("create").inc()
                    logger.info(f"created pod {name} for worker {wid}")
            except ApiException as exc:
                logger.warning(
                    f"could not create pod {pod['metadata']['name']} ({exc.status} {exc.reason}); will retry"
                )
        for i in p.deregister:
            wid = registered[i]
            try:
                await api.delete_worker(wid)
                self.metrics.registrations.labels("deregister", "ok").inc()
                registered.pop(i)
                memo.registered.pop(i, None)
                memo.deregistered.add(wid)
                logger.info(f"deregistered worker {wid} (replica {i} removed)")
            except ApiProblem as exc:
                self.metrics.registrations.labels("deregister", exc.reason).inc()
                logger.warning(f"could not deregister worker {wid}: {exc}; will retry")

    @staticmethod
    def _progressing(p: Plan | None, desired: int, live_pods: int) -> Condition:
        if p is None:
            return Condition("Progressing", False, "Blocked", "waiting for the API or the token Secret")
        if p.waiting_busy:
            return Condition(
                "Progressing",
                True,
                "WaitingForBusyWorkers",
                f"replicas {sorted(set(p.waiting_busy))} are busy; they are replaced or removed when idle",
            )
        if p.backing_off:
            return Condition(
                "Progressing",
                True,
                "BackingOff",
                f"replicas {p.backing_off} failed; recreating their pods after a backoff",
            )
        if p.register or p.create or p.delete or p.deregister or live_pods != desired:
            return Condition("Progressing", True, "Reconciling", f"{live_pods} pods, {desired} wanted")
        return Condition("Progressing", False, "Stable", f"{desired} workers as specified")

    def _finish(
        self,
        body: dict[str, Any],
        memo: FleetMemo,
        old_status: dict[str, Any],
        generation: int | None,
        phase: str,
        problems: list[Condition],
        extra: dict[str, Any],
        conditions: list[Condition] | None = None,
    ) -> dict[str, Any] | None:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if problems:
            first = problems[0]
            degraded = Condition("Degraded", True, first.reason, "; ".join(dict.fromkeys(p.message for p in problems)))
        else:
            degraded = Condition("Degraded", False, "AsExpected", "no problems")
        conds = [*(conditions or []), degraded]
        # Events for new problems only (not on every reconcile)
        current = {p.reason for p in problems}
        for p in problems:
            if p.reason not in memo.warned:
                kopf.warn(body, reason=p.reason, message=p.message[:1000])
                log.warning("%s/%s: %s: %s", key[0], key[1], p.reason, p.message)
        memo.warned = current
        self.metrics.snapshot.phase[key] = phase
        new_status = {
            **extra,
            "phase": phase,
            "observedGeneration": generation,
            "conditions": merge_conditions(old_status.get("conditions"), conds, generation, now_iso()),
        }
        comparable_old = {k: old_status.get(k) for k in new_status}
        if comparable_old == new_status:
            return None  # one status write per change, none otherwise
        return new_status


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
