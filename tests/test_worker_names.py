"""API names of operator-managed workers: inside Lightly's pattern, unique, parseable, legacy-aware."""

from __future__ import annotations

import itertools
import re

import pytest
from lightly_operator.settings import OperatorSettings, SettingsError
from lightly_protocol.models import NAME_PATTERN, WorkerCreateRequest, WorkerData
from lightly_protocol.names import (
    MAX_CLUSTER_NAME,
    MAX_WORKER_NAME,
    k8s_worker_name,
    migrated_worker_name,
    parse_k8s_worker_name,
    parse_legacy_k8s_worker_name,
    renamed_duplicate_name,
)
from pydantic import ValidationError

LIGHTLY = re.compile(NAME_PATTERN)
S = OperatorSettings(api_url="http://api:8080", worker_image="worker:1", cluster_name="c1")

NAMES = [
    "fleet",
    "fleet.v2",
    "a.b.c",
    "a-b.c-d",
    "x--y.z",
    "a" * 253,
    ".".join(["ab"] * 84),  # 251 chars, 83 dots
    "0",
    "9.9",
]
NAMESPACES = ["ml", "default", "a", "n" * 63, "team-1"]


def _parse(name: str, ns: str, fleet: str) -> tuple:
    ref = S.parse_worker_name(name, [(ns, fleet)])
    assert ref is not None, name
    return ref.namespace, ref.name, ref.index, ref.legacy


@pytest.mark.parametrize("ns,fleet,index", list(itertools.product(NAMESPACES, NAMES, [0, 7, 12, 999, 123456])))
def test_round_trip_inside_the_pattern(ns: str, fleet: str, index: int) -> None:
    name = S.worker_name(ns, fleet, index)
    assert LIGHTLY.match(name) and len(name) >= 3, name
    assert len(name) <= MAX_WORKER_NAME
    assert name.startswith(S.name_prefix())
    assert _parse(name, ns, fleet) == (ns, fleet, index, False)
    WorkerCreateRequest(name=name)  # the request the operator sends validates


def test_short_names_are_readable_and_need_no_knowledge() -> None:
    assert S.worker_name("ml", "gpu-fleet.v2", 0) == "k8s_c1_ml_gpu-fleet__v2_0"
    ref = S.parse_worker_name("k8s_c1_ml_gpu-fleet__v2_0")
    assert ref is not None and (ref.namespace, ref.name, ref.index) == ("ml", "gpu-fleet.v2", 0)


def test_long_names_are_shortened_with_a_hash_and_resolved_by_candidates() -> None:
    long = "very-long." + "x" * 200
    name = S.worker_name("ml", long, 3)
    assert len(name) == MAX_WORKER_NAME and re.search(r"-H[0-9a-f]{10}_3$", name), name
    assert name.startswith("k8s_c1_ml_very-long__xxx")
    # without knowing the fleet: namespace and index, name unknown (-> the sweep treats it as gone)
    ref = S.parse_worker_name(name)
    assert ref is not None and (ref.namespace, ref.name, ref.index) == ("ml", None, 3)
    # other fleets do not resolve it, the right one does
    assert S.parse_worker_name(name, [("ml", long + "y"), ("other", long)]).name is None
    assert S.parse_worker_name(name, [("ml", "fleet"), ("ml", long)]).name == long
    # every replica of one fleet shares the head; all are distinct
    assert len({S.worker_name("ml", long, i) for i in range(50)}) == 50


def test_shortened_names_stay_unique() -> None:
    base = "a" * 240
    names = {S.worker_name("ml", f"{base}{i}", 0) for i in range(1000)}
    names |= {S.worker_name("ml", f"{base}.{i}", 0) for i in range(1000)}
    assert len(names) == 2000
    assert all(len(n) <= MAX_WORKER_NAME and LIGHTLY.match(n) for n in names)


def test_distinct_inputs_give_distinct_names() -> None:
    inputs = [(ns, f, i) for ns in ["a", "ab", "a-b"] for f in ["b", "b.c", "b-c", "bc", "c.b"] for i in range(12)]
    names = [S.worker_name(*x) for x in inputs]
    assert len(set(names)) == len(names)


def test_clusters_do_not_see_each_others_names() -> None:
    other = OperatorSettings(api_url="x", worker_image="y", cluster_name="c1-eu")
    prefixed = OperatorSettings(api_url="x", worker_image="y", cluster_name="c")
    name = other.worker_name("ml", "fleet", 0)
    assert S.parse_worker_name(name) is None and prefixed.parse_worker_name(name) is None
    assert other.parse_worker_name(S.worker_name("ml", "fleet", 0)) is None


@pytest.mark.parametrize(
    "hostile",
    [
        "",
        "k8s_c1_",
        "k8s_c1__fleet_0",  # empty namespace
        "k8s_c1_ml__0",  # empty name
        "k8s_c1_ml_fleet_",  # no index
        "k8s_c1_ml_fleet_01",  # not canonical
        "k8s_c1_ml_fleet_-1",
        "k8s_c1_ml_fleet_x",
        "k8s_c1_ML_fleet_0",  # uppercase namespace
        "k8s_c1_ml_Fleet_0",
        "k8s_c1_ml_fleet___v2_0",  # '.' followed by nothing
        "k8s_c1_ml___fleet_0",
        "k8s_c1_ml_fleet__-v2_0",  # label starting with '-'
        "k8s_c1_ml_-fleet_0",
        "k8s_c1_ml_fleet-_0",
        "k8s_c1_ml_a_b_0",  # a single '_' inside the name
        "k8s_c1_ml_fleet_0_1",
        "k8s_c1_ml_fleet-Hxyz_0",
        "k8s_c1_ml_fleet-H0123456789abc_0",
        "k8s_c1_ml_" + "a" * 300 + "_0",  # too long to be one of ours
        "k8s_c1_ml_fleet_99999999999999999999",
        "k8s_c1_ml.x_fleet_0",
        "k8s_c1_ml fleet_0",
        "k8s_c1_ml_fleet_0\n",
        "k8s_c1_ml_fleet\u0130_0",
        "K8S_c1_ml_fleet_0",
        "k8s.c1.ml.fleet",  # legacy without index
        "k8s.c1..fleet.0",
        "k8s.c1.ml..0",
        "k8s.c1.ml.Fleet.0",
        "k8s.c1.ml.fleet..v2.0",
        "k8s.c1.ml_x.fleet.0",
        "k8s.c2.ml.fleet.0",
        "my-laptop-worker",
    ],
)
def test_hostile_names_are_not_ours(hostile: str) -> None:
    assert S.parse_worker_name(hostile, [("ml", "fleet"), ("ml", "a")]) is None


def test_huge_hostile_names_are_refused_quickly() -> None:
    import time

    start = time.perf_counter()
    for hostile in ("k8s_c1_ml_" + "a-" * 50_000 + "_0", "k8s.c1.ml." + "a-" * 50_000 + ".0", "_0-abcdef" * 10_000):
        assert S.parse_worker_name(hostile) is None
    assert time.perf_counter() - start < 1


def test_legacy_names_are_recognised() -> None:
    legacy = S.legacy_worker_name("ml", "fleet.v2", 7)
    assert legacy == "k8s.c1.ml.fleet.v2.7"
    assert _parse(legacy, "ml", "fleet.v2") == ("ml", "fleet.v2", 7, True)
    # the server, which does not know cluster names, maps them to the current names of the same replica
    assert migrated_worker_name(legacy) == S.worker_name("ml", "fleet.v2", 7)
    assert migrated_worker_name("k8s.default.team-1." + "a" * 253 + ".0") == k8s_worker_name(
        "default", "team-1", "a" * 253, 0
    )
    assert migrated_worker_name("laptop.local") is None
    assert migrated_worker_name("k8s.Bad.ml.fleet.0") is None
    assert parse_legacy_k8s_worker_name("k8s.prod.ml.fleet.0") == ("prod", "ml", "fleet", 0, True)


def test_duplicates_renamed_by_the_server_are_recognised_as_legacy() -> None:
    current = S.worker_name("ml", "fleet.v2", 7)
    renamed = renamed_duplicate_name(current, "0123456789abcdef01234567")
    assert renamed == current + "-234567" and LIGHTLY.match(renamed)
    assert _parse(renamed, "ml", "fleet.v2") == ("ml", "fleet.v2", 7, True)
    assert S.parse_worker_name(current + "-23456") is None
    assert S.parse_worker_name(current + "-2345678") is None
    assert S.parse_worker_name("laptop_1-234567") is None


def test_workers_listed_by_an_old_server_can_be_read() -> None:
    """An operator upgraded before its server reads the old dotted names (to migrate them)."""
    row = {
        "id": "a" * 24,
        "userId": "u",
        "name": "k8s.c1.ml.fleet.0",
        "workerType": "FULL",
        "state": "IDLE",
        "createdAt": 1,
        "lastModifiedAt": 1,
        "labels": [],
    }
    assert WorkerData.model_validate(row).name == "k8s.c1.ml.fleet.0"
    with pytest.raises(ValidationError, match="should match pattern"):
        WorkerData.model_validate({**row, "name": "laptop.local"})
    with pytest.raises(ValidationError, match="should match pattern"):
        WorkerCreateRequest(name="k8s.c1.ml.fleet.0")


@pytest.mark.parametrize(
    "cluster", ["", "prod.eu", "Prod", "prod_eu", "-prod", "prod-", "a" * (MAX_CLUSTER_NAME + 1), "pröd", "a b"]
)
def test_bad_cluster_names_fail_at_startup(cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="LIGHTLY_CLUSTER_NAME: "):
        OperatorSettings(cluster_name=cluster)
    monkeypatch.setenv("LIGHTLY_CLUSTER_NAME", cluster)
    with pytest.raises(SettingsError):
        OperatorSettings.from_env()


@pytest.mark.parametrize("cluster", ["default", "a", "prod-eu-1", "a" * MAX_CLUSTER_NAME])
def test_good_cluster_names(cluster: str) -> None:
    s = OperatorSettings(cluster_name=cluster)
    name = s.worker_name("n" * 63, "x" * 253, 999999)
    assert LIGHTLY.match(name) and len(name) <= MAX_WORKER_NAME
    assert parse_k8s_worker_name(name, cluster, [("n" * 63, "x" * 253)]).name == "x" * 253


@pytest.mark.parametrize(
    "ns,name,index",
    [("ML", "fleet", 0), ("ml", "fleet_x", 0), ("ml", ".fleet", 0), ("ml", "fleet", -1), ("m.l", "f", 0)],
)
def test_invalid_kubernetes_names_are_refused(ns: str, name: str, index: int) -> None:
    with pytest.raises(ValueError):
        S.worker_name(ns, name, index)


# --------------------------------------------------------------------------- operator behaviour (fakes)


def _worker(wid: str, name: str, created_at: int = 0) -> WorkerData:
    return WorkerData.model_validate(
        {
            "id": wid,
            "userId": "u",
            "name": name,
            "workerType": "FULL",
            "state": "IDLE",
            "createdAt": created_at,
            "lastModifiedAt": created_at,
            "labels": [],
        }
    )


class FakeApi:
    def __init__(self, workers: list[WorkerData], fail_register: bool = False) -> None:
        self.by_id = {w.id: w for w in workers}
        self.fail_register = fail_register
        self.deleted: list[str] = []

    async def workers(self) -> list[WorkerData]:
        return list(self.by_id.values())

    async def register(self, name: str, labels: list[str], version: str) -> str:
        from lightly_operator.lightly_api import ApiProblem

        if self.fail_register:
            raise ApiProblem("ApiUnavailable", "down")
        for w in self.by_id.values():
            if w.name == name:
                return w.id
        wid = f"{len(self.by_id) + 1:024x}"
        self.by_id[wid] = _worker(wid, name)
        return wid

    async def delete_worker(self, wid: str) -> None:
        self.deleted.append(wid)
        self.by_id.pop(wid, None)


class FakeKube:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append(f"{namespace}/{name}")


def _pod(i: int, wid: str, deleting: bool = False):  # type: ignore[no-untyped-def]
    from lightly_operator.status import PodView

    return PodView(f"fleet-{i}", i, "c", wid, "Running", True, deleting, None)


def _reconciler(kube: FakeKube):  # type: ignore[no-untyped-def]
    from lightly_operator.metrics import OperatorMetrics
    from lightly_operator.reconcile import FleetReconciler

    return FleetReconciler(S, kube, OperatorMetrics())  # type: ignore[arg-type]


def _rename(api: FakeApi, registered: dict[int, str], busy: set[int], pods: dict) -> tuple:  # type: ignore[type-arg]
    """Rename the legacy registrations; (the fake Kubernetes, the fleet's memo, the registrations after)."""
    import asyncio
    import logging

    from lightly_operator.actions import ActContext
    from lightly_operator.api_access import ApiView
    from lightly_operator.memo import FleetMemo
    from lightly_operator.spec import parse_spec

    kube, memo = FakeKube(), FleetMemo()
    view = ApiView(states=dict(api.by_id), holding={}, open_runs=0)
    spec = parse_spec({"api": {"tokenSecretRef": {"name": "t"}}})
    r = _reconciler(kube)
    body = {"metadata": {"namespace": "ml", "name": "fleet.v2"}}
    ctx = ActContext(body, spec, memo, logging.getLogger("t"), registered, pods, api, S.api_url)  # type: ignore[arg-type]
    observed = dict(registered)
    asyncio.run(r.actions.rename_legacy(ctx, view, busy))
    assert registered == observed and set(ctx.done.registered) <= set(registered)  # recorded, not written
    return kube, memo, ctx.registered


def test_reconciler_replaces_idle_legacy_registrations() -> None:
    old0, old1, cur2 = "a" * 24, "b" * 24, "c" * 24
    api = FakeApi(
        [
            _worker(old0, S.legacy_worker_name("ml", "fleet.v2", 0)),
            _worker(old1, S.legacy_worker_name("ml", "fleet.v2", 1)),
            _worker(cur2, S.worker_name("ml", "fleet.v2", 2)),
        ]
    )
    registered = {0: old0, 1: old1, 2: cur2}
    pods = {0: [_pod(0, old0)], 1: [_pod(1, old1)], 2: [_pod(2, cur2)]}
    kube, memo, registered = _rename(api, registered, busy={1}, pods=pods)
    new0 = registered[0]
    assert new0 != old0 and api.by_id[new0].name == S.worker_name("ml", "fleet.v2", 0)
    assert memo.registered == {0: new0} and memo.deregistered == {old0}
    assert kube.deleted == ["ml/fleet-0"]  # recreated with the new worker id
    assert api.deleted == [old0]
    assert registered[1] == old1 and registered[2] == cur2  # busy: later; current: untouched


def test_reconciler_keeps_legacy_registrations_when_the_api_fails() -> None:
    old0 = "a" * 24
    api = FakeApi([_worker(old0, S.legacy_worker_name("ml", "fleet.v2", 0))], fail_register=True)
    registered = {0: old0}
    kube, memo, registered = _rename(api, registered, busy=set(), pods={0: [_pod(0, old0)]})
    assert registered == {0: old0} and not kube.deleted and not api.deleted and not memo.deregistered


def _sweep(api: FakeApi, fleets: dict, fleet_pods: dict) -> None:  # type: ignore[type-arg]
    import asyncio
    import logging

    import kopf
    from lightly_operator import handlers

    r = _reconciler(FakeKube())

    async def token(namespace: str, spec, fresh: bool = False) -> tuple[str, str]:  # type: ignore[no-untyped-def]
        return "tok", "fp"

    r.apis.token = token  # type: ignore[method-assign]
    r.apis.client = lambda url, tok: api  # type: ignore[method-assign,assignment]
    body = {"metadata": {"name": "fleet.v2", "namespace": "ml"}, "spec": {"api": {"tokenSecretRef": {"name": "t"}}}}
    asyncio.run(
        handlers.sweep_orphans(
            body=body,
            meta=body["metadata"],
            memo=kopf.Memo(reconciler=r),
            logger=logging.getLogger("t"),
            fleets=fleets,
            fleet_pods=fleet_pods,
        )
    )


def test_sweep_removes_legacy_and_shortened_names_it_owns_and_nothing_else() -> None:
    from lightly_operator.indexes import FleetEntry

    long = "l" * 200
    ids = {k: f"{i + 1:024x}" for i, k in enumerate("abcdefghij")}
    api = FakeApi(
        [
            _worker(ids["a"], S.worker_name("ml", "fleet.v2", 0)),  # in use
            _worker(ids["b"], S.legacy_worker_name("ml", "fleet.v2", 0)),  # superseded by a
            _worker(ids["c"], S.legacy_worker_name("ml", "fleet.v2", 1)),  # in use (busy, not yet replaced)
            _worker(ids["d"], S.legacy_worker_name("ml", "gone", 0)),  # its fleet is gone
            _worker(ids["e"], S.worker_name("ml", long, 0)),  # shortened, fleet exists
            _worker(ids["f"], S.worker_name("ml", long + "x", 0)),  # shortened, fleet gone
            _worker(ids["g"], "laptop-worker"),  # not ours
            _worker(ids["h"], "k8s.other.ml.fleet.0"),  # another cluster's
            _worker(ids["i"], renamed_duplicate_name(S.worker_name("ml", "fleet.v2", 1), "0" * 18 + "abcdef")),
            _worker(ids["j"], S.worker_name("ml", "fleet.v2", 5)),  # replica not listed
        ]
    )
    status = {"workers": [{"index": 0, "workerId": ids["a"]}, {"index": 1, "workerId": ids["c"]}]}
    fleets = {
        ("ml", "fleet.v2"): [FleetEntry({"metadata": {}, "spec": {}, "status": status}, frozenset({0, 1}))],
        ("ml", long): [
            FleetEntry({"metadata": {}, "spec": {}, "status": {"workers": [{"index": 0, "workerId": ids["e"]}]}},
                       frozenset({0}))
        ],
    }  # fmt: skip
    _sweep(api, fleets, {})
    assert sorted(api.deleted) == sorted([ids["b"], ids["d"], ids["f"], ids["i"], ids["j"]])
