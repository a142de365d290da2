"""kopf handlers: thin wrappers around the ``FleetReconciler`` that kopf's memo holds.

Nothing here runs at import time: ``build_operator(settings)`` registers the handlers in a fresh kopf
registry (the timers with the intervals of ``settings``) and builds the reconciler; the CLI (and the
tests) pass ``registry`` and ``memo`` to ``kopf.operator``. Every object's memo is a copy of that memo,
so ``memo.reconciler`` is the one reconciler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from .builders import LABEL_FLEET, LABEL_MANAGED_BY, MANAGED_BY
from .indexes import FleetEntry, FleetIndex, PodIndex, plain_body, pods_of
from .kopf_state import MemoryDiffBaseStorage, MemoryProgressStorage
from .kube import Kube, load_client
from .memo import FleetKey
from .metrics import OperatorMetrics
from .reconcile import FleetReconciler
from .settings import OperatorSettings
from .spec import GROUP, PLURAL, VERSION
from .status import PodView, pod_view, pull_error_of

POD_LABELS = {LABEL_MANAGED_BY: MANAGED_BY}


@dataclass(frozen=True)
class OperatorApp:
    """What ``kopf.operator`` needs besides its scope: the handlers' registry and the memo."""

    settings: OperatorSettings
    reconciler: FleetReconciler
    registry: kopf.OperatorRegistry

    def memo(self) -> kopf.Memo:
        return kopf.Memo(reconciler=self.reconciler)


def build_operator(settings: OperatorSettings, metrics: OperatorMetrics | None = None) -> OperatorApp:
    """The reconciler (its Kubernetes client reads $KUBECONFIG now) and the handlers, for ``settings``."""
    kube = Kube(load_client(), settings.call_timeout_seconds)
    reconciler = FleetReconciler(settings, kube, metrics or OperatorMetrics())
    return OperatorApp(settings, reconciler, register_handlers(kopf.OperatorRegistry(), settings))


def _handler(fn: Callable[..., Any]) -> Any:
    """``fn``, for kopf's decorators. kopf calls a handler with its arguments by name, and each handler here
    takes those it uses (and ``**_``); kopf's callback protocols name every argument (``namespace: str |
    None``) and no index, so a handler that takes an index or a namespace as ``str`` cannot match them."""
    return fn


def register_handlers(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler of this module in ``registry``; the timers tick at the intervals of ``settings``."""
    kopf.on.startup(registry=registry)(startup)
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.index("pods", labels=POD_LABELS, registry=registry)(_handler(fleet_pods))
    kopf.index(GROUP, VERSION, PLURAL, registry=registry)(_handler(fleets))
    kopf.on.event("pods", labels=POD_LABELS, registry=registry)(_handler(pod_changed))
    for on in (kopf.on.resume, kopf.on.update, kopf.on.create):
        on(GROUP, VERSION, PLURAL, registry=registry)(_handler(reconcile_on_change))
    # the first tick after one interval: the create/resume handler has just reconciled the fleet
    kopf.timer(
        GROUP,
        VERSION,
        PLURAL,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds,
        sharp=False,
        registry=registry,
    )(_handler(reconcile_periodically))
    kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)(_handler(deregister_fleet))
    kopf.timer(
        GROUP, VERSION, PLURAL, interval=settings.sweep_seconds, initial_delay=5, sharp=False, registry=registry
    )(_handler(sweep_orphans))
    return registry


def _reconciler(memo: kopf.Memo) -> FleetReconciler:
    reconciler: FleetReconciler = memo.reconciler
    return reconciler


def _key(meta: kopf.Meta) -> FleetKey:
    return (str(meta["namespace"]), str(meta["name"]))


# ---------------------------------------------------------------------------- operator lifecycle


def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    _reconciler(memo).start()
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.posting.level = 30  # post WARNING and above from kopf's own logs as Events
    settings.persistence.finalizer = "lightly.ai/deregister-workers"
    # in memory, not in annotations: one write less per handled change (see kopf_state)
    settings.persistence.progress_storage = MemoryProgressStorage()
    settings.persistence.diffbase_storage = MemoryDiffBaseStorage()
    settings.background.cancellation_polling = 2
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]


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


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _reconciler(memo).close()


# ---------------------------------------------------------------------------- indexes


def fleet_pods(
    namespace: str,
    name: str,
    labels: kopf.Labels,
    annotations: kopf.Annotations,
    meta: kopf.Meta,
    status: kopf.Status,
    memo: kopf.Memo,
    **_: Any,
) -> dict[FleetKey, PodView] | None:
    """Pods of every fleet, by (namespace, fleet name): reconciles read this, never LIST pods."""
    fleet = labels.get(LABEL_FLEET)
    st = dict(status or {})
    pull_error = _reconciler(memo).pull_errors.note(str(meta.get("uid") or name), pull_error_of(st))
    view = pod_view(name, dict(labels), dict(annotations), dict(meta), st, pull_error)
    if not fleet or view is None:
        return None
    return {(namespace, fleet): view}


def fleets(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[FleetKey, FleetEntry]:
    """Every fleet: its latest body and the replica indices its status lists (orphan sweep, pod events)."""
    return {(namespace, name): FleetEntry.of(body)}


# ---------------------------------------------------------------------------- reconcile


async def _reconcile(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, fleet_pods: PodIndex
) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    r, key = _reconciler(memo), _key(body["metadata"])
    new_status = await r.reconcile(plain_body(body), pods_of(fleet_pods, key), r.memo(memo, key), logger)
    if new_status:
        patch.status.update(new_status)


async def pod_changed(
    labels: kopf.Labels, namespace: str, memo: kopf.Memo, fleets: FleetIndex, fleet_pods: PodIndex, **_: Any
) -> None:
    """A fleet's pod changed: reconcile that fleet soon (bursts folded into one reconcile)."""
    fleet = labels.get(LABEL_FLEET)
    if fleet:
        _reconciler(memo).reconcile_soon((namespace, fleet), fleets, fleet_pods)


async def reconcile_on_change(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, fleet_pods: PodIndex, **_: Any
) -> None:
    await _reconcile(body, memo, logger, patch, fleet_pods)


async def reconcile_periodically(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, patch: kopf.Patch, fleet_pods: PodIndex, **_: Any
) -> None:
    await _reconcile(body, memo, logger, patch, fleet_pods)


# ---------------------------------------------------------------------------- deletion and orphans


async def deregister_fleet(
    body: kopf.Body, meta: kopf.Meta, memo: kopf.Memo, logger: kopf.Logger, fleet_pods: PodIndex, **_: Any
) -> None:
    """Stop the fleet's pods, then deregister every worker id; never wedge the deletion."""
    await _reconciler(memo).deregister(body, pods_of(fleet_pods, _key(meta)), logger)


async def sweep_orphans(
    body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, fleets: FleetIndex, fleet_pods: PodIndex, **_: Any
) -> None:
    """Deregister API workers of this cluster that no fleet replica owns (crashes, lost finalizers)."""
    await _reconciler(memo).sweep_orphans(body, fleets, fleet_pods, logger)
