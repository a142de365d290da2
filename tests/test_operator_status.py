"""Unit tests of ``compute_status``: a fleet's status from what a reconcile saw and did (pure, like ``plan``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from lightly_operator.actions import ActResult
from lightly_operator.api_access import ApiView
from lightly_operator.fleet_status import (
    FleetStatus,
    compute_status,
    degraded_condition,
    invalid_spec_status,
    progressing_condition,
)
from lightly_operator.observe import Observation
from lightly_operator.plan import Plan, plan
from lightly_operator.settings import OperatorSettings
from lightly_operator.spec import parse_spec
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


@dataclass(frozen=True)
class Case:
    """The arguments of one ``compute_status`` call: the fleet's old status, what the reconcile observed,
    planned and did, and the rest."""

    seen: Observation
    plan: Plan | None
    desired: int
    acted: ActResult = field(default_factory=ActResult)
    old_status: Mapping[str, Any] = field(default_factory=dict)
    offline_since: Mapping[int, float] = field(default_factory=dict)
    now: float = 1000.0
    timestamp: str = T0

    @property
    def body(self) -> dict[str, Any]:
        return {"metadata": {"namespace": "ml", "name": "fleet", "generation": 3}, "status": dict(self.old_status)}


OBSERVED = {f.name for f in fields(Observation)}


def _changed(case: Case, **kw: Any) -> Case:
    """``case`` with ``kw`` changed: fields of the case or of its observation (``view``, ``busy``, ...)."""
    seen = replace(case.seen, **{k: v for k, v in kw.items() if k in OBSERVED})
    return replace(case, seen=seen, **{k: v for k, v in kw.items() if k not in OBSERVED})


def _input(n: int = 2, **kw: Any) -> Case:
    """A fleet of ``n`` registered, ready, idle workers, as the API reports them; ``kw`` changes any field."""
    registered = {i: IDS[i] for i in range(n)}
    by_index = {i: [_pod(i)] for i in range(n)}
    view = ApiView(states={IDS[i]: _worker(i) for i in range(n)}, holding={}, open_runs=0)
    spec = parse_spec({"api": {"tokenSecretRef": {"name": "token"}}, "replicas": n})
    pods = [p for ps in by_index.values() for p in ps]
    seen = Observation(spec, pods, by_index, registered, URL, fp="fp", view=view)
    return _changed(Case(seen, plan(n, registered, by_index, set(), "sum"), desired=n), **kw)


def _status(case: Case, **kw: Any) -> FleetStatus:
    """``compute_status`` of ``case``, changed by ``kw`` (see ``_changed``)."""
    c = _changed(case, **kw)
    return compute_status(
        c.body,
        c.seen,
        c.plan,
        c.acted,
        desired=c.desired,
        settings=S,
        offline_since=c.offline_since,
        now=c.now,
        timestamp=c.timestamp,
    )


def _conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_ready_fleet_is_running_with_one_entry_per_worker() -> None:
    out = _status(_input(2))
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
    first = _status(_input(2))
    assert first.patch({}) == first.status
    later = _status(_input(2, old_status=first.status, timestamp="2026-01-01T00:05:00Z"))
    assert later.status["conditions"] == first.status["conditions"]  # lastTransitionTime kept
    assert later.patch(first.status) is None
    assert later.patch({**first.status, "readyReplicas": 1}) == later.status


def test_busy_workers_show_their_run_and_count_as_busy() -> None:
    s = _input(2)
    view = ApiView(states=s.seen.view.states, holding={IDS[1]: "run-1"}, open_runs=0)  # type: ignore[union-attr]
    out = _status(s, view=view, busy={1})
    assert out.status["busyReplicas"] == 1
    assert out.status["workers"][1]["state"] == "BUSY" and out.status["workers"][1]["currentRun"] == "run-1"
    assert out.worker_states == {"IDLE": 1, "BUSY": 1}


def test_an_unknown_api_blocks_progress_and_reports_the_problem() -> None:
    problem = Condition("Degraded", True, "ApiUnreachable", "cannot reach the Lightly API")
    registration = Condition("Registered", False, "ApiUnreachable", "cannot reach the Lightly API")
    s = _input(2)
    out = _status(s, view=None, plan=None, busy={0, 1}, problems=[problem], registration_problem=registration)
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
    out = _status(s, by_index=pods, plan=plan(2, s.seen.registered, pods, set(), "sum"))
    assert out.phase == "Degraded" and out.status["readyReplicas"] == 1
    degraded = next(c for c in out.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "Unschedulable" and degraded["message"] == "pod fleet-1: Unschedulable: 0/3 nodes"
    assert _conditions(out.status)["Ready"] == ("False", "PodsNotReady")
    assert out.pending_reasons == {"Unschedulable": 1}


def test_a_pending_pod_makes_the_fleet_pending() -> None:
    s = _input(1)
    pods = {0: [_pod(0, "Pending", False)]}
    out = _status(s, by_index=pods, plan=Plan(keep=[0]))
    assert out.phase == "Pending" and out.pending_reasons == {"Pending": 1}


def test_a_worker_offline_with_a_ready_pod_is_degraded_after_the_grace() -> None:
    s = _input(1)
    view = ApiView(states={IDS[0]: _worker(0, "OFFLINE")}, holding={}, open_runs=0)
    first = _status(s, view=view)
    assert first.offline_since == {0: 1000.0} and first.phase == "Running"  # within the grace
    later = _status(s, view=view, offline_since=first.offline_since, now=1061.0)
    assert later.phase == "Degraded" and [p.reason for p in later.problems] == ["WorkerOffline"]
    assert "for more than 60 s although its pod is ready" in later.problems[0].message
    # the message stays the same while the worker stays offline: no status write per resync
    much_later = _status(s, view=view, offline_since=later.offline_since, now=1500.0)
    assert much_later.problems == later.problems
    back = _status(s, offline_since=later.offline_since, now=1062.0)
    assert back.offline_since == {} and back.phase == "Running"


def test_scaled_to_zero_and_updating() -> None:
    zero = _status(_input(0))
    assert zero.phase == "ScaledToZero" and _conditions(zero.status)["Ready"] == ("True", "ScaledToZero")
    s = _input(2)
    waiting = _status(s, plan=Plan(keep=[0, 1], waiting_busy=[1, 1]))
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
    out = invalid_spec_status(_input(1).body, problem, T0)
    assert out.phase == "Error" and out.worker_states is None
    assert set(out.status) == {"phase", "observedGeneration", "conditions"}
    assert _conditions(out.status) == {"Degraded": ("True", "InvalidSpec")}


def test_the_status_shows_what_the_actions_registered_and_deregistered() -> None:
    s = _input(2)  # replicas 0 and 1 observed; replica 1's pod is gone, the fleet moves to replicas 0 and 2
    new = "f" * 24
    acted = ActResult(registered={2: new}, deregistered={1: IDS[1]})
    the_plan = Plan(keep=[0, 2], register=[2], create=[2], deregister=[1])
    out = _status(s, by_index={0: [_pod(0)]}, plan=the_plan, acted=acted)
    assert [(w["index"], w["workerId"], w["state"]) for w in out.status["workers"]] == [
        (0, IDS[0], "IDLE"),
        (2, new, "UNKNOWN"),  # registered after the API's view was read
    ]
    assert _conditions(out.status)["Registered"] == ("True", "AllRegistered")
    assert s.seen.registered == {0: IDS[0], 1: IDS[1]}  # the observation is not written
    assert acted.applied_to(s.seen.registered) == {0: IDS[0], 2: new}


def test_the_actions_problems_follow_the_observed_ones() -> None:
    refused = Condition("Degraded", True, "PodRejected", "the apiserver refused pod fleet-2")
    failed = Condition("Degraded", True, "ApiUnreachable", "cannot reach the Lightly API")
    registration = Condition("Registered", False, "ApiUnreachable", "cannot reach the Lightly API")
    acted = ActResult(problems=[refused, failed], registration_problem=registration)
    out = _status(_input(2), acted=acted)
    assert out.phase == "Degraded" and out.problems == [refused, failed]
    degraded = next(c for c in out.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "PodRejected"
    assert degraded["message"] == "the apiserver refused pod fleet-2; cannot reach the Lightly API"
    assert _conditions(out.status)["Registered"] == ("False", "ApiUnreachable")
