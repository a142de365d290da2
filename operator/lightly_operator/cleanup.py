"""Removing API workers: a deleted fleet's (deregistration) and those no fleet owns (the orphan sweep).

Both run on the reconciler's ``ApiAccess`` (token, HTTP pool) and metrics; the kopf handlers only call
``Deregistration.run`` and ``OrphanSweep.run``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
from lightly_protocol.names import K8sWorkerName

from .api_access import ApiAccess
from .builders import ANN_SKIP_DEREGISTRATION
from .indexes import FleetIndex, PodIndex
from .kube import Kube, SecretProblem
from .lightly_api import ApiProblem, LightlyApi
from .metrics import OperatorMetrics
from .settings import OperatorSettings
from .spec import SpecError, parse_spec
from .status import PodView


class Deregistration:
    """A deleted fleet: stop its pods, then deregister every worker id it had; never wedge the deletion."""

    def __init__(self, settings: OperatorSettings, kube: Kube, apis: ApiAccess, metrics: OperatorMetrics) -> None:
        self.settings, self.kube, self.apis, self.metrics = settings, kube, apis, metrics

    async def run(self, body: Mapping[str, Any], pods: Sequence[PodView], logger: kopf.Logger) -> None:
        """Raises ``kopf.TemporaryError`` while the API fails and ``spec.deregistration.timeoutSeconds``
        has not passed since the deletion; then gives up with a warning Event naming the leaked ids."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        ids = {w["workerId"] for w in (body.get("status") or {}).get("workers") or [] if w.get("workerId")}
        for pod in pods:
            if not pod.deleting:
                await self.kube.delete_pod(namespace, pod.name)
        if (meta.get("annotations") or {}).get(ANN_SKIP_DEREGISTRATION, "").lower() == "true":
            kopf.warn(
                body,  # type: ignore[arg-type]  # kopf posts Events for a plain mapping's metadata too
                reason="DeregistrationSkipped",
                message=f"{ANN_SKIP_DEREGISTRATION}=true: left registered: {sorted(ids) or 'none'}",
            )
            self.metrics.snapshot.forget((namespace, name))
            return
        age = deletion_age(meta)
        timeout = 300
        try:
            spec = parse_spec(body.get("spec") or {})
            timeout = spec.deregistration.timeout_seconds
            url = self.apis.url(spec)
            if not self.settings.policy.api_url_allowed(url):  # never send the token where the policy forbids
                raise SpecError(f"spec.api.url {url} is not an allowed Lightly API URL")
            token, _fp = await self.apis.token(namespace, spec, fresh=True)
            api = self.apis.client(url, token)
            ids |= await self._fleet_worker_ids(api, namespace, name)
            for wid in sorted(ids):
                await api.delete_worker(wid)
                self.metrics.registrations.labels("deregister", "ok").inc()
            logger.info(f"deregistered {len(ids)} workers")
        except (SpecError, SecretProblem) as exc:
            kopf.warn(
                body,  # type: ignore[arg-type]  # kopf posts Events for a plain mapping's metadata too
                reason="DeregistrationImpossible",
                message=f"{exc}; these worker ids stay registered: {sorted(ids) or 'none'}",
            )
        except ApiProblem as exc:
            self.metrics.registrations.labels("deregister", exc.reason).inc()
            if age < timeout:
                raise kopf.TemporaryError(
                    f"deregistration failed ({exc}); retrying for {int(timeout - age)} s more", delay=min(10, timeout)
                ) from None
            kopf.warn(
                body,  # type: ignore[arg-type]  # kopf posts Events for a plain mapping's metadata too
                reason="DeregistrationTimedOut",
                message=f"gave up after {timeout} s ({exc}); leaked worker ids: {sorted(ids)}",
            )
        self.metrics.snapshot.forget((namespace, name))

    async def _fleet_worker_ids(self, api: LightlyApi, namespace: str, name: str) -> set[str]:
        """The API workers named for this fleet's replicas (current and legacy names)."""
        ids = set()
        for w in await api.workers():
            ref = self.settings.parse_worker_name(w.name, [(namespace, name)])
            if ref is not None and (ref.namespace, ref.name) == (namespace, name):
                ids.add(w.id)
        return ids


def deletion_age(meta: Mapping[str, Any]) -> float:
    """Seconds since the object's deletionTimestamp (0 when it has none)."""
    ts = meta.get("deletionTimestamp")
    if not ts:
        return 0.0
    when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return max(0.0, time.time() - when.timestamp())


class OrphanSweep:
    """Deregister API workers of this cluster that no fleet replica owns (crashes, lost finalizers).

    One sweep per API and token per interval (not one per fleet): the first fleet whose timer fires
    sweeps for all fleets that share its token.
    """

    def __init__(self, settings: OperatorSettings, apis: ApiAccess, metrics: OperatorMetrics) -> None:
        self.settings, self.apis, self.metrics = settings, apis, metrics
        self.last: dict[tuple[str, str], float] = {}  # (API URL, token fingerprint) -> when swept

    async def run(self, body: Mapping[str, Any], fleets: FleetIndex, fleet_pods: PodIndex, logger: kopf.Logger) -> None:
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return
        try:
            spec = parse_spec(body.get("spec") or {})
            token, fp = await self.apis.token(meta["namespace"], spec)
            url = self.apis.url(spec)
            key = (url, fp)
            if time.monotonic() - self.last.get(key, -1e9) < self.settings.sweep_seconds * 0.9:
                return
            self.last[key] = time.monotonic()
            api = self.apis.client(url, token)
            workers = await api.workers()
        except (SpecError, SecretProblem, ApiProblem):
            return  # the reconcile reports these
        grace_ms = self.settings.orphan_grace_seconds * 1000
        now_ms = time.time() * 1000
        watched = set(self.settings.namespaces)
        known = list(fleets.keys())
        for w in workers:
            parsed = self.settings.parse_worker_name(w.name, known)
            if parsed is None or now_ms - w.created_at < grace_ms:
                continue
            if watched and parsed.namespace not in watched:
                continue  # another operator's business
            if _orphaned(parsed, w.id, fleets, fleet_pods):
                try:
                    await api.delete_worker(w.id)
                    self.metrics.registrations.labels("sweep", "ok").inc()
                    logger.info(f"deregistered orphaned API worker {w.id} ({w.name})")
                except ApiProblem as exc:
                    logger.warning(f"could not deregister orphan {w.id}: {exc}")


def _orphaned(ref: K8sWorkerName, worker_id: str, fleets: FleetIndex, fleet_pods: PodIndex) -> bool:
    """Whether no replica of a listed fleet owns the API worker ``worker_id`` named ``ref``."""
    ns, fleet, index = ref.namespace, ref.name, ref.index
    listed = fleets.get((ns, fleet)) if fleet is not None else None  # None: shortened, no such fleet
    if not listed or fleet is None:
        return True  # its fleet is gone
    entry = next(iter(listed))
    orphan = index not in entry.indices and not any(p.index == index for p in fleet_pods.get((ns, fleet), []))
    if ref.legacy and not orphan:
        # an old-scheme name whose replica the reconciler has re-registered under the new name
        orphan = entry.status_worker_id(index) not in (None, worker_id)
    return orphan
