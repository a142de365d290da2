"""A fleet's status from what a reconcile saw and did: a pure function, like ``plan``.

``compute_status`` turns what a reconcile observed (``Observation``: the registered workers, their pods,
the API's view, who is busy), its plan and what its actions did (``ActResult``: the workers they registered
and deregistered, the problems they met) into the status the resource shows: one entry per worker, the
counts, the conditions (Registered, Ready, Progressing, Degraded) and the phase. It reads no clock, writes
none of its inputs and calls nothing: the caller passes the time.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .actions import ActResult
from .builders import selector_string
from .observe import Observation
from .plan import Plan
from .settings import OperatorSettings
from .status import Condition, PodView, merge_conditions


@dataclass(frozen=True)
class FleetStatus:
    """The status to show, and what the operator keeps or reports besides."""

    phase: str
    problems: list[Condition]
    status: dict[str, Any]  # the fields of .status this operator owns
    worker_states: Counter[str] | None = None  # for the metrics (None: not known)
    pending_reasons: Counter[str] | None = None
    offline_since: dict[int, float] = field(default_factory=dict)

    def patch(self, old_status: Mapping[str, Any]) -> dict[str, Any] | None:
        """The status to write, None when the old one says the same (one write per change)."""
        if {k: old_status.get(k) for k in self.status} == self.status:
            return None
        return self.status


def compute_status(
    body: Mapping[str, Any],
    seen: Observation,
    the_plan: Plan | None,
    acted: ActResult,
    *,
    desired: int,
    settings: OperatorSettings,
    offline_since: Mapping[int, float],
    now: float,
    timestamp: str,
) -> FleetStatus:
    """The status of the fleet ``body`` after one reconcile.

    ``seen``: what it observed (``seen.view`` None: the API or its token could not be read); ``the_plan``:
    None when nothing was planned (no API, no token); ``acted``: what the actions did; ``desired``: the
    replicas wanted; ``offline_since``: replica -> when first seen OFFLINE (the memo's; not written);
    ``now``: time.monotonic() of this reconcile (``offline_since`` is on the same clock); ``timestamp``:
    now as ISO 8601, for lastTransitionTime."""
    registered = acted.applied_to(seen.registered)
    workers = _workers(_Fleet(body, seen, settings, now), the_plan, registered, offline_since)
    problems = [*seen.problems, *acted.problems, *workers.problems]
    live_pods = sum(1 for pods in seen.by_index.values() for p in pods if not p.deleting)
    registered_count = sum(1 for i in (the_plan.keep if the_plan else []) if i in registered)
    registered_condition = (
        acted.registration_problem
        or seen.registration_problem
        or Condition(
            "Registered",
            registered_count >= desired,
            "AllRegistered" if registered_count >= desired else "Registering",
            f"{registered_count}/{desired} workers registered with {seen.url}",
        )
    )
    ready = ready_condition(workers.ready, desired)
    progress = progressing_condition(the_plan, desired, live_pods)
    fields: dict[str, Any] = {
        "replicas": live_pods,
        "readyReplicas": workers.ready,
        "busyReplicas": workers.busy,
        "shardsInFlight": workers.shards,
        "desiredReplicas": desired,
        "selector": selector_string(body["metadata"]["name"]),
        "workers": workers.entries,
    }
    versions = _versions(seen, registered)
    if versions:
        fields["workerVersion"] = ",".join(versions)
    phase = (
        "Degraded"
        if problems
        else "ScaledToZero"
        if desired == 0 and live_pods == 0
        else "Updating"
        if progress.status
        else "Running"
        if ready.status
        else "Pending"
    )
    return FleetStatus(
        phase=phase,
        problems=problems,
        status=_status(body, timestamp, phase, problems, fields, [registered_condition, ready, progress]),
        worker_states=workers.states,
        pending_reasons=workers.pending,
        offline_since=workers.offline_since,
    )


def invalid_spec_status(body: Mapping[str, Any], problem: Condition, timestamp: str) -> FleetStatus:
    """The status of a fleet whose spec cannot be read: phase Error, the reason in Degraded."""
    return FleetStatus(phase="Error", problems=[problem], status=_status(body, timestamp, "Error", [problem], {}, []))


def degraded_condition(problems: Sequence[Condition]) -> Condition:
    if not problems:
        return Condition("Degraded", False, "AsExpected", "no problems")
    return Condition("Degraded", True, problems[0].reason, "; ".join(dict.fromkeys(p.message for p in problems)))


def ready_condition(ready: int, desired: int) -> Condition:
    if desired == 0:
        return Condition("Ready", True, "ScaledToZero", "no workers wanted")
    ok = ready >= desired
    return Condition("Ready", ok, "AllReady" if ok else "PodsNotReady", f"{ready}/{desired} workers ready")


def progressing_condition(p: Plan | None, desired: int, live_pods: int) -> Condition:
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


# ---------------------------------------------------------------------------- pieces


def _status(
    body: Mapping[str, Any],
    timestamp: str,
    phase: str,
    problems: Sequence[Condition],
    fields: dict[str, Any],
    conditions: list[Condition],
) -> dict[str, Any]:
    conds = [*conditions, degraded_condition(problems)]
    generation = body["metadata"].get("generation")
    old_conditions = (body.get("status") or {}).get("conditions")
    return {
        **fields,
        "phase": phase,
        "observedGeneration": generation,
        "conditions": merge_conditions(old_conditions, conds, generation, timestamp),
    }


@dataclass(frozen=True)
class _Fleet:
    """What the per-worker pieces read: the fleet, what was observed, the settings, this reconcile's time."""

    body: Mapping[str, Any]
    seen: Observation
    settings: OperatorSettings
    now: float


@dataclass
class _Workers:
    entries: list[dict[str, Any]] = field(default_factory=list)
    ready: int = 0
    busy: int = 0
    shards: int = 0  # LEASED shards the fleet's workers hold
    states: Counter[str] = field(default_factory=Counter)
    pending: Counter[str] = field(default_factory=Counter)
    problems: list[Condition] = field(default_factory=list)
    offline_since: dict[int, float] = field(default_factory=dict)


def _workers(
    f: _Fleet, the_plan: Plan | None, registered: Mapping[int, str], offline_since: Mapping[int, float]
) -> _Workers:
    """One status entry per registered replica, the counts, and the problems of its pod and worker."""
    out = _Workers(offline_since=dict(offline_since))
    keep = the_plan.keep if the_plan else sorted(set(registered) | set(f.seen.by_index))
    for i in sorted(set(keep) | set(registered)):
        if i in registered:
            out.entries.append(_worker_entry(f, i, registered[i], out))
    return out


def _worker_entry(f: _Fleet, i: int, wid: str, out: _Workers) -> dict[str, Any]:
    """Replica ``i``'s status entry (worker ``wid``); its state, readiness and problems are counted into ``out``."""
    s = f.seen
    live = [p for p in s.by_index.get(i, []) if not p.deleting]
    pod = live[0] if live else None
    w = s.view.states.get(wid) if s.view is not None else None
    busy = i in s.busy and s.view is not None  # without the API's view nobody is known to be busy
    state = "BUSY" if busy else (w.state if w else "UNKNOWN")
    out.states[state] += 1
    out.busy += busy
    entry: dict[str, Any] = {
        "index": i,
        "workerId": wid,
        "name": f.settings.worker_name(f.body["metadata"]["namespace"], f.body["metadata"]["name"], i),
        "state": state,
    }
    if pod:
        entry["pod"] = pod.name
        out.ready += pod.ready
        if pod.problem:
            out.pending[pod.problem[0]] += 1
            out.problems.append(
                Condition("Degraded", True, pod.problem[0], f"pod {pod.name}: {pod.problem[0]}: {pod.problem[1]}")
            )
        elif pod.phase == "Pending":
            out.pending["Pending"] += 1
    if s.view is not None and wid in s.view.holding:
        entry["currentRun"] = s.view.holding[wid]
    if s.view is not None and wid in s.view.shard_holders:
        out.shards += s.view.shard_holders[wid]
    if w is not None:
        entry["lastSeen"] = _iso(w.last_modified_at)
        if w.docker_version:
            entry["version"] = w.docker_version
    if pod and pod.ready and w is not None and w.state == "OFFLINE":
        problem = _offline_problem(f, i, wid, pod, out.offline_since)
        if problem:
            out.problems.append(problem)
    else:
        out.offline_since.pop(i, None)
    return entry


def _offline_problem(f: _Fleet, i: int, wid: str, pod: PodView, offline_since: dict[int, float]) -> Condition | None:
    """A worker that stays OFFLINE although its pod is ready, for longer than the grace."""
    since = offline_since.setdefault(i, f.now)
    if f.now - since < f.settings.offline_grace_seconds:
        return None
    return Condition(
        "Degraded",
        True,
        "WorkerOffline",
        # a stable message (no growing age in it): the status is written only when it changes
        f"worker {wid} (pod {pod.name}) has reported nothing to {f.seen.url} for more than "
        f"{int(f.settings.offline_grace_seconds)} s although its pod is ready; check the pod's logs and its network "
        "path to the API",
    )


def _versions(seen: Observation, registered: Mapping[int, str]) -> list[str]:
    """The versions the fleet's registered workers report."""
    ids = set(registered.values())
    states = seen.view.states.values() if seen.view is not None else []
    return sorted({w.docker_version for w in states if w.docker_version and w.id in ids})


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
