"""kopf handlers: thin wrappers around ``FleetReconciler`` and the deletion/orphan logic.

``configure(settings)`` must run before kopf starts (the CLI and the tests do it); it builds the
shared reconciler that the handlers use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass
from typing import Any

import kopf

from .builders import ANN_SKIP_DEREGISTRATION, MANAGED_BY
from .kube import Kube, SecretProblem, load_client
from .lightly_api import ApiProblem
from .metrics import OperatorMetrics
from .reconcile import FleetMemo, FleetReconciler
from .settings import OperatorSettings
from .spec import GROUP, PLURAL, VERSION, SpecError, parse_spec
from .status import pod_view, pull_error_of

_state: dict[str, Any] = {}
log = logging.getLogger("lightly_operator")


def configure(settings: OperatorSettings, metrics: OperatorMetrics | None = None) -> FleetReconciler:
    kube = Kube(load_client(), settings.call_timeout_seconds)
    reconciler = FleetReconciler(settings, kube, metrics or OperatorMetrics())
    _state.update(settings=settings, reconciler=reconciler)
    _memos.clear()
    _pending.clear()
    return reconciler


def _r() -> FleetReconciler:
    if "reconciler" not in _state:
        configure(OperatorSettings())
    return _state["reconciler"]


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    _memos.clear()  # memos hold asyncio objects of one event loop: a (re)started operator starts afresh
    _pending.clear()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = 30  # post WARNING and above from kopf's own logs as Events
    settings.persistence.finalizer = "lightly.ai/deregister-workers"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lightly.ai")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lightly.ai", key="last-handled-configuration"
    )
    settings.background.cancellation_polling = 2
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]


@kopf.on.login()
def login(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials as the operator's own client: in-cluster, else $KUBECONFIG read now."""
    config = load_client().configuration
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if "reconciler" in _state:
        await _state["reconciler"].close()


# ---------------------------------------------------------------------------- indexes


@kopf.index("pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
def fleet_pods(namespace: str, name: str, labels: Any, annotations: Any, meta: Any, status: Any, **_: Any) -> Any:
    """Pods of every fleet, by (namespace, fleet name): reconciles read this, never LIST pods."""
    fleet = labels.get("lightly.ai/fleet")
    st = dict(status or {})
    pull_error = _r().pull_errors.note(str(meta.get("uid") or name), pull_error_of(st))
    view = pod_view(name, dict(labels), dict(annotations), dict(meta), st, pull_error)
    if not fleet or view is None:
        return None
    return {(namespace, fleet): view}


@kopf.index(GROUP, VERSION, PLURAL)
def fleets(namespace: str, name: str, body: Any, status: Any, **_: Any) -> Any:
    """Every fleet: its latest body and the replica indices its status lists (orphan sweep, pod events)."""
    indices = frozenset(w.get("index") for w in (status or {}).get("workers") or [] if "index" in w)
    return {(namespace, name): FleetEntry(_plain(body), indices)}


@dataclass(frozen=True)
class FleetEntry:
    body: dict[str, Any]
    indices: frozenset[int]


def _plain(body: Any) -> dict[str, Any]:
    meta = dict(body["metadata"])
    meta["namespace"] = body["metadata"]["namespace"]
    return {"metadata": meta, "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


# ---------------------------------------------------------------------------- reconcile


async def _reconcile(body: Any, memo: Any, logger: Any, patch: Any, fleet_pods: Any) -> None:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    key = (meta["namespace"], meta["name"])
    pods = list(fleet_pods.get(key, []))
    new_status = await _r().reconcile(_plain(body), pods, fleet_memo(memo, key), logger)
    if new_status:
        patch.status.update(new_status)


def fleet_memo(memo: Any, key: tuple[str, str]) -> FleetMemo:
    """kopf's per-object memo, also reachable by key (pod events reconcile their fleet with it)."""
    if "fleet" not in memo:
        memo["fleet"] = _memos.setdefault(key, FleetMemo())
    return memo["fleet"]


_memos: dict[tuple[str, str], FleetMemo] = {}
_pending: dict[tuple[str, str], asyncio.Task[None]] = {}


@kopf.on.event("pods", labels={"app.kubernetes.io/managed-by": MANAGED_BY})
async def pod_changed(labels: Any, namespace: str, fleets: Any, fleet_pods: Any, **_: Any) -> None:
    """A fleet's pod changed (scheduled, ready, failed, gone): reconcile that fleet now, not at the next
    timer tick. Bursts of pod events are folded into one reconcile per fleet."""
    fleet = labels.get("lightly.ai/fleet")
    key = (namespace, fleet)
    if fleet and key not in _pending:
        _pending[key] = asyncio.create_task(_react(key, fleets, fleet_pods))


async def _react(key: tuple[str, str], fleets: Any, fleet_pods: Any) -> None:
    await asyncio.sleep(0.2)
    _pending.pop(key, None)
    entries = fleets.get(key)
    memo = _memos.get(key)
    if not entries or memo is None:
        return
    body = next(iter(entries)).body
    if body["metadata"].get("deletionTimestamp"):
        return
    r = _r()
    logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())
    try:
        new_status = await r.reconcile(body, list(fleet_pods.get(key, [])), memo, logger)
        if new_status:
            await r.kube.patch_fleet_status(key[0], key[1], new_status)
    except Exception as exc:  # the timer retries; never let a pod event crash the operator
        log.warning("reconcile of %s/%s after a pod change failed: %s", key[0], key[1], exc)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile_on_change(body: Any, memo: Any, logger: Any, patch: Any, fleet_pods: Any, **_: Any) -> None:
    await _reconcile(body, memo, logger, patch, fleet_pods)


@kopf.timer(GROUP, VERSION, PLURAL, interval=OperatorSettings().resync_seconds, sharp=False)
async def reconcile_periodically(body: Any, memo: Any, logger: Any, patch: Any, fleet_pods: Any, **_: Any) -> None:
    await _reconcile(body, memo, logger, patch, fleet_pods)


# ---------------------------------------------------------------------------- deletion


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def deregister_fleet(body: Any, meta: Any, logger: Any, fleet_pods: Any, **_: Any) -> None:
    """Stop the fleet's pods, then deregister every worker id; never wedge the deletion."""
    r = _r()
    namespace, name = meta["namespace"], meta["name"]
    _memos.pop((namespace, name), None)
    ids = {w["workerId"] for w in (body.get("status") or {}).get("workers") or [] if w.get("workerId")}
    for pod in list(fleet_pods.get((namespace, name), [])):
        if not pod.deleting:
            await r.kube.delete_pod(namespace, pod.name)
    if (meta.get("annotations") or {}).get(ANN_SKIP_DEREGISTRATION, "").lower() == "true":
        kopf.warn(
            body,
            reason="DeregistrationSkipped",
            message=f"{ANN_SKIP_DEREGISTRATION}=true: left registered: {sorted(ids) or 'none'}",
        )
        r.metrics.snapshot.forget((namespace, name))
        return
    deadline = _deletion_age(meta)
    timeout = 300
    try:
        spec = parse_spec(body.get("spec") or {})
        timeout = spec.deregistration.timeout_seconds
        token, _fp = await r.token(namespace, spec, fresh=True)
        api = r.api(r.api_url(spec), token)
        for w in await api.workers():
            ref = r.settings.parse_worker_name(w.name, [(namespace, name)])
            if ref is not None and (ref.namespace, ref.name) == (namespace, name):
                ids.add(w.id)  # current and legacy names of this fleet's replicas
        for wid in sorted(ids):
            await api.delete_worker(wid)
            r.metrics.registrations.labels("deregister", "ok").inc()
        logger.info(f"deregistered {len(ids)} workers")
    except (SpecError, SecretProblem) as exc:
        kopf.warn(
            body,
            reason="DeregistrationImpossible",
            message=f"{exc}; these worker ids stay registered: {sorted(ids) or 'none'}",
        )
    except ApiProblem as exc:
        r.metrics.registrations.labels("deregister", exc.reason).inc()
        if deadline < timeout:
            raise kopf.TemporaryError(
                f"deregistration failed ({exc}); retrying for {int(timeout - deadline)} s more", delay=min(10, timeout)
            ) from None
        kopf.warn(
            body,
            reason="DeregistrationTimedOut",
            message=f"gave up after {timeout} s ({exc}); leaked worker ids: {sorted(ids)}",
        )
    r.metrics.snapshot.forget((namespace, name))


def _deletion_age(meta: Any) -> float:
    ts = meta.get("deletionTimestamp")
    if not ts:
        return 0.0
    when = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return max(0.0, time.time() - when.timestamp())


# ---------------------------------------------------------------------------- orphan sweep


@kopf.timer(GROUP, VERSION, PLURAL, interval=OperatorSettings().sweep_seconds, initial_delay=5, sharp=False)
async def sweep_orphans(body: Any, meta: Any, logger: Any, fleets: Any, fleet_pods: Any, **_: Any) -> None:
    """Deregister API workers of this cluster that no fleet replica owns (crashes, lost finalizers).

    One sweep per API and token per interval (not one per fleet): the first fleet whose timer fires
    sweeps for all fleets that share its token.
    """
    r = _r()
    if meta.get("deletionTimestamp"):
        return
    try:
        spec = parse_spec(body.get("spec") or {})
        token, fp = await r.token(meta["namespace"], spec)
        url = r.api_url(spec)
        key = (url, fp)
        if time.monotonic() - r.sweeps.get(key, -1e9) < r.settings.sweep_seconds * 0.9:
            return
        r.sweeps[key] = time.monotonic()
        api = r.api(url, token)
        workers = await api.workers()
    except (SpecError, SecretProblem, ApiProblem):
        return  # the reconcile reports these
    grace_ms = r.settings.orphan_grace_seconds * 1000
    now_ms = time.time() * 1000
    watched = set(r.settings.namespaces)
    known = list(fleets.keys())
    for w in workers:
        parsed = r.settings.parse_worker_name(w.name, known)
        if parsed is None or now_ms - w.created_at < grace_ms:
            continue
        ns, fleet, index = parsed.namespace, parsed.name, parsed.index
        if watched and ns not in watched:
            continue  # another operator's business
        listed = fleets.get((ns, fleet)) if fleet is not None else None  # None: shortened, no such fleet
        if listed:
            entry = next(iter(listed))
            orphan = index not in entry.indices and not any(p.index == index for p in fleet_pods.get((ns, fleet), []))
            if parsed.legacy and not orphan:
                # an old-scheme name whose replica the reconciler has re-registered under the new name
                orphan = _status_worker_id(entry.body, index) not in (None, w.id)
        else:
            orphan = True  # its fleet is gone
        if orphan:
            try:
                await api.delete_worker(w.id)
                r.metrics.registrations.labels("sweep", "ok").inc()
                logger.info(f"deregistered orphaned API worker {w.id} ({w.name})")
            except ApiProblem as exc:
                logger.warning(f"could not deregister orphan {w.id}: {exc}")


def _status_worker_id(body: dict[str, Any], index: int) -> str | None:
    """The worker id the fleet's status lists for replica ``index`` (None: not listed)."""
    for w in (body.get("status") or {}).get("workers") or []:
        if w.get("index") == index:
            return w.get("workerId")
    return None
