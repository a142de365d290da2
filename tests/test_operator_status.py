"""Unit tests of ``compute_status``: a fleet's status from what a reconcile saw and did (pure, like ``plan``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from lightly_operator.api_access import ApiView
from lightly_operator.fleet_status import (
    StatusInput,
    compute_status,
    degraded_condition,
    invalid_spec_status,
    progressing_condition,
)
from lightly_operator.plan import Plan, plan
from lightly_operator.settings import OperatorSettings
from lightly_operator.status import Condition, PodView
from lightly_protocol.models import WorkerData

S = OperatorSettings(api_url="http://api:8080", worker_image="worker:1", cluster_name="c1", offline_grace_seconds=60)
URL = "http://api:8080"
T0 = "2026-01-01T00:00:00Z"
IDS = {i: f"{i + 1:024x}" for i in range(4)}


def _worker(i: int, state: str = "IDLE", version: str | None = "3.1.0") -> WorkerData:
    return WorkerData.model_validate(
        {
            "id": IDS[i],
            "userId": "u",
            "name": S.worker_name("ml", "fleet", i),
            "workerType": "FULL",
            "state": state,
            "createdAt": 0,
            "lastModifiedAt": 1_767_225_600_000,  # 2026-01-01T00:00:00Z
            "labels": [],
            "dockerVersion": version,
        }
    )


def _pod(i: int, phase: str = "Running", ready: bool = True, problem: tuple[str, str] | None = None) -> PodView:
    return PodView(f"fleet-{i}", i, "sum", IDS[i], phase, ready, False, problem)


def _input(n: int = 2, **kw: Any) -> StatusInput:
    """A fleet of ``n`` registered, ready, idle workers, as the API reports them; ``kw`` changes any field."""
    registered = {i: IDS[i] for i in range(n)}
    by_index = {i: [_pod(i)] for i in range(n)}
    view = ApiView(states={IDS[i]: _worker(i) for i in range(n)}, holding={}, open_runs=0)
    base = StatusInput(
        namespace="ml",
        name="fleet",
        generation=3,
        old_status={},
        settings=S,
        api_url=URL,
        desired=n,
        registered=registered,
        by_index=by_index,
        busy=set(),
        view=view,
        plan=plan(n, registered, by_index, set(), "sum"),
        now=1000.0,
        timestamp=T0,
    )
    return replace(base, **kw)


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_ready_fleet_is_running_with_one_entry_per_worker() -> None:
    out = compute_status(_input(2))
    assert out.phase == "Running" and not out.problems
    st = out.status
    assert (st["replicas"], st["readyReplicas"], st["busyReplicas"], st["desiredReplicas"]) == (2, 2, 0, 2)
    assert st["selector"] == "app.kubernetes.io/managed-by=lightly-operator,lightly.ai/fleet=fleet"
    assert st["workerVersion"] == "3.1.0"
    assert st["observedGeneration"] == 3 and st["phase"] == "Running"
    assert st["workers"][0] == {
        "index": 0,
        "workerId": IDS[0],
        "name": S.worker_name("ml", "fleet", 0),
        "state": "IDLE",
        "pod": "fleet-0",
        "lastSeen": "2026-01-01T00:00:00Z",
        "version": "3.1.0",
    }
    assert _conditions(st) == {
        "Registered": ("True", "AllRegistered"),
        "Ready": ("True", "AllReady"),
        "Progressing": ("False", "Stable"),
        "Degraded": ("False", "AsExpected"),
    }
    assert all(c["lastTransitionTime"] == T0 and c["observedGeneration"] == 3 for c in st["conditions"])
    assert out.worker_states == {"IDLE": 2} and not out.pending_reasons


def test_an_unchanged_status_is_not_written_again() -> None:
    first = compute_status(_input(2))
    assert first.patch({}) == first.status
    later = compute_status(_input(2, old_status=first.status, timestamp="2026-01-01T00:05:00Z"))
    assert later.status["conditions"] == first.status["conditions"]  # lastTransitionTime kept
    assert later.patch(first.status) is None
    assert later.patch({**first.status, "readyReplicas": 1}) == later.status


def test_busy_workers_show_their_run_and_count_as_busy() -> None:
    s = _input(2)
    view = ApiView(states=s.view.states, holding={IDS[1]: "run-1"}, open_runs=0)  # type: ignore[union-attr]
    out = compute_status(replace(s, view=view, busy={1}))
    assert out.status["busyReplicas"] == 1
    assert out.status["workers"][1]["state"] == "BUSY" and out.status["workers"][1]["currentRun"] == "run-1"
    assert out.worker_states == {"IDLE": 1, "BUSY": 1}


def test_an_unknown_api_blocks_progress_and_reports_the_problem() -> None:
    problem = Condition("Degraded", True, "ApiUnreachable", "cannot reach the Lightly API")
    registration = Condition("Registered", False, "ApiUnreachable", "cannot reach the Lightly API")
    s = _input(2)
    out = compute_status(
        replace(s, view=None, plan=None, busy={0, 1}, problems=[problem], registration_problem=registration)
    )
    assert out.phase == "Degraded"
    assert [w["state"] for w in out.status["workers"]] == ["UNKNOWN", "UNKNOWN"]
    assert out.status["busyReplicas"] == 0  # not known to be busy
    assert "workerVersion" not in out.status
    assert _conditions(out.status) == {
        "Registered": ("False", "ApiUnreachable"),
        "Ready": ("True", "AllReady"),
        "Progressing": ("False", "Blocked"),
        "Degraded": ("True", "ApiUnreachable"),
    }


def test_pod_problems_make_the_fleet_degraded_and_count_as_pending() -> None:
    s = _input(2)
    pods = {0: [_pod(0)], 1: [_pod(1, "Pending", False, ("Unschedulable", "0/3 nodes"))]}
    out = compute_status(replace(s, by_index=pods, plan=plan(2, s.registered, pods, set(), "sum")))
    assert out.phase == "Degraded" and out.status["readyReplicas"] == 1
    degraded = next(c for c in out.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "Unschedulable" and degraded["message"] == "pod fleet-1: Unschedulable: 0/3 nodes"
    assert _conditions(out.status)["Ready"] == ("False", "PodsNotReady")
    assert out.pending_reasons == {"Unschedulable": 1}


def test_a_pending_pod_makes_the_fleet_pending() -> None:
    s = _input(1)
    pods = {0: [_pod(0, "Pending", False)]}
    out = compute_status(replace(s, by_index=pods, plan=Plan(keep=[0])))
    assert out.phase == "Pending" and out.pending_reasons == {"Pending": 1}


def test_a_worker_offline_with_a_ready_pod_is_degraded_after_the_grace() -> None:
    s = _input(1)
    view = ApiView(states={IDS[0]: _worker(0, "OFFLINE")}, holding={}, open_runs=0)
    first = compute_status(replace(s, view=view))
    assert first.offline_since == {0: 1000.0} and first.phase == "Running"  # within the grace
    later = compute_status(replace(s, view=view, offline_since=first.offline_since, now=1061.0))
    assert later.phase == "Degraded" and [p.reason for p in later.problems] == ["WorkerOffline"]
    assert "for more than 60 s although its pod is ready" in later.problems[0].message
    # the message stays the same while the worker stays offline: no status write per resync
    much_later = compute_status(replace(s, view=view, offline_since=later.offline_since, now=1500.0))
    assert much_later.problems == later.problems
    back = compute_status(replace(s, offline_since=later.offline_since, now=1062.0))
    assert back.offline_since == {} and back.phase == "Running"


def test_scaled_to_zero_and_updating() -> None:
    zero = compute_status(_input(0))
    assert zero.phase == "ScaledToZero" and _conditions(zero.status)["Ready"] == ("True", "ScaledToZero")
    s = _input(2)
    waiting = compute_status(replace(s, plan=Plan(keep=[0, 1], waiting_busy=[1, 1])))
    assert waiting.phase == "Updating"
    progressing = next(c for c in waiting.status["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "WaitingForBusyWorkers" and "replicas [1] are busy" in progressing["message"]


def test_progressing_reasons() -> None:
    assert progressing_condition(None, 1, 0).reason == "Blocked"
    assert progressing_condition(Plan(backing_off=[2]), 1, 1).reason == "BackingOff"
    assert progressing_condition(Plan(create=[0]), 1, 0) == Condition(
        "Progressing", True, "Reconciling", "0 pods, 1 wanted"
    )
    assert progressing_condition(Plan(keep=[0]), 1, 1).reason == "Stable"


def test_degraded_joins_distinct_messages_under_the_first_reason() -> None:
    a, b = Condition("Degraded", True, "A", "one"), Condition("Degraded", True, "B", "two")
    assert degraded_condition([a, b, a]) == Condition("Degraded", True, "A", "one; two")
    assert degraded_condition([]) == Condition("Degraded", False, "AsExpected", "no problems")


def test_an_invalid_spec_is_an_error_with_only_the_degraded_condition() -> None:
    problem = Condition("Degraded", True, "InvalidSpec", "spec.replicas: must be >= 0")
    out = invalid_spec_status(_input(1), problem)
    assert out.phase == "Error" and out.worker_states is None
    assert set(out.status) == {"phase", "observedGeneration", "conditions"}
    assert _conditions(out.status) == {"Degraded": ("True", "InvalidSpec")}
