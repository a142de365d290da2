"""What one reconcile sees of a fleet: its pods, its registered workers, the API's view, who is busy.

``observe`` reads (the token Secret, the API, through ``ApiAccess``'s caches) and decides nothing; a
token or API problem is recorded in the observation, for the status to report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .api_access import ApiAccess, ApiView
from .kube import SecretProblem
from .lightly_api import ApiProblem, LightlyApi
from .memo import FleetMemo
from .metrics import OperatorMetrics
from .spec import LightlyWorkerSpec
from .status import Condition, PodView

#: a pod we created counts as Pending this long while the pods index has not shown it yet
CREATED_POD_MEMORY_SECONDS = 30


@dataclass
class Observation:
    spec: LightlyWorkerSpec
    pods: list[PodView]  # the index's, and the ones created but not yet indexed
    by_index: dict[int, list[PodView]]
    registered: dict[int, str]  # replica index -> worker id
    url: str
    fp: str = ""  # the token's fingerprint ("": the token could not be read)
    api: LightlyApi | None = None
    view: ApiView | None = None  # None: the API's state is unknown
    busy: set[int] = field(default_factory=set)
    problems: list[Condition] = field(default_factory=list)
    registration_problem: Condition | None = None


async def observe(
    body: Mapping[str, Any],
    spec: LightlyWorkerSpec,
    indexed: Sequence[PodView],
    memo: FleetMemo,
    apis: ApiAccess,
    metrics: OperatorMetrics,
) -> Observation:
    namespace = body["metadata"]["namespace"]
    pods = with_created_pods(indexed, memo, time.monotonic())
    by_index: dict[int, list[PodView]] = {}
    for p in pods:
        by_index.setdefault(p.index, []).append(p)
    seen = Observation(spec, pods, by_index, registered_workers(body, memo), apis.url(spec))
    try:
        token, seen.fp = await apis.token(namespace, spec)
        seen.api = apis.client(seen.url, token)
        seen.view = await apis.view(seen.api, seen.fp, spec.labels, spec.autoscaling.enabled)
    except (SecretProblem, ApiProblem) as exc:
        seen.problems.append(Condition("Degraded", True, exc.reason, str(exc)))
        seen.registration_problem = Condition("Registered", False, exc.reason, str(exc))
        metrics.api_errors.labels(exc.reason).inc()
    seen.busy = busy_replicas(seen.registered, seen.by_index, seen.view)
    return seen


def with_created_pods(indexed: Sequence[PodView], memo: FleetMemo, now: float) -> list[PodView]:
    """The indexed pods, plus those we created that the index has not shown yet (no duplicate creates), and
    those we deleted counted as terminating until the index shows it (so a lagging index never shows the
    pod of a replica just scaled down alive again: the next plan must not pick another replica instead)."""
    names = {p.name for p in indexed}
    memo.created = {n: v for n, v in memo.created.items() if n not in names and now - v[0] < CREATED_POD_MEMORY_SECONDS}
    pods = [*indexed, *(v[1] for v in memo.created.values())]
    alive = {p.name for p in pods if not p.deleting}  # a name neither here nor terminating: gone, may be reused
    memo.deleted = {n: t for n, t in memo.deleted.items() if n in alive and now - t < CREATED_POD_MEMORY_SECONDS}
    return [replace(p, deleting=True) if p.name in memo.deleted else p for p in pods]


def registered_workers(body: Mapping[str, Any], memo: FleetMemo) -> dict[int, str]:
    """Replica index -> worker id: the status's, corrected by what this process registered or removed since."""
    listed = {w["index"]: w for w in (body.get("status") or {}).get("workers") or [] if "index" in w}
    registered = {
        i: w["workerId"] for i, w in listed.items() if w.get("workerId") and w["workerId"] not in memo.deregistered
    }
    registered.update(memo.registered)
    return registered


def busy_replicas(registered: Mapping[int, str], by_index: Mapping[int, Any], view: ApiView | None) -> set[int]:
    """Replicas whose worker holds a run or a shard or says BUSY; unknown API state: all (touch nothing risky)."""
    if view is None:
        return set(registered) | set(by_index)
    return {
        i
        for i, wid in registered.items()
        if wid in view.holding or wid in view.shard_holders or getattr(view.states.get(wid), "state", None) == "BUSY"
    }
