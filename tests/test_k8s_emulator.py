"""Tests of the Kubernetes API emulator layer (tests/k8s/), over real HTTP, kubectl and kopf."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import kopf
import kubernetes
import pytest
from k8s.emulator import K8sEmulator
from k8s.harness import EmulatorServer

if TYPE_CHECKING:
    from k8s.fixtures import K8s

pytest_plugins = ("k8s.fixtures",)

CM = "/api/v1/namespaces/default/configmaps"
WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONPATCH = {"Content-Type": "application/json-patch+json"}

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
      subresources:
        status: {}
        scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
"""


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def cm(name: str, labels: dict[str, str] | None = None, data: dict[str, str] | None = None, **meta: Any) -> dict:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}, **meta}}
    return body | ({"data": data} if data is not None else {})


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json()


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"], "uid": meta["uid"]}


def install_widgets(k8s: K8s) -> None:
    k8s.kubectl("apply", "--validate=false", "-f", "-", input=WIDGET_CRD)


def read_events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    """Read ``count`` watch events (the server-side ``timeoutSeconds`` guards against hanging)."""
    events: list[dict[str, Any]] = []
    for line in response.iter_lines():
        if line.strip():
            events.append(json.loads(line))
            if len(events) >= count:
                break
    return events


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


# --- discovery & basic fields ------------------------------------------------------------------------


def test_backbone_discovery(k8s: K8s) -> None:
    core = {r["name"] for r in ok(k8s.http.get("/api/v1"))["resources"]}
    assert {"namespaces", "pods", "pods/status", "secrets", "configmaps", "events", "services"} <= core
    groups = {g["name"] for g in ok(k8s.http.get("/apis"))["groups"]}
    assert {"apiextensions.k8s.io", "coordination.k8s.io", "apps", "events.k8s.io"} <= groups
    leases = ok(k8s.http.get("/apis/coordination.k8s.io/v1"))["resources"]
    assert [r["kind"] for r in leases] == ["Lease"]
    assert ok(k8s.http.get("/apis/apps"))["preferredVersion"]["version"] == "v1"
    assert ok(k8s.http.get("/version"))["major"] == "1"
    assert k8s.http.get("/apis/nope.example.com/v1").status_code == 404
    names = k8s.kubectl("api-resources", "-o", "name").stdout.split()
    assert {
        "pods",
        "namespaces",
        "customresourcedefinitions.apiextensions.k8s.io",
        "leases.coordination.k8s.io",
    } <= set(names)


def test_namespace_urls(k8s: K8s) -> None:
    names = [ns["metadata"]["name"] for ns in ok(k8s.http.get("/api/v1/namespaces"))["items"]]
    assert names == ["default", "kube-public", "kube-system"]
    assert ok(k8s.http.get("/api/v1/namespaces/default"))["status"]["phase"] == "Active"
    ok(k8s.http.post("/api/v1/namespaces", json={"metadata": {"name": "team"}}), 201)
    ok(k8s.http.post("/api/v1/namespaces/team/configmaps", json=cm("a")), 201)
    ok(k8s.http.post(CM, json=cm("b")), 201)
    assert [o["metadata"]["name"] for o in ok(k8s.http.get("/api/v1/configmaps"))["items"]] == ["b", "a"]
    assert ok(k8s.http.get("/api/v1/namespaces/team/configmaps/a"))["metadata"]["namespace"] == "team"
    assert k8s.http.get("/api/v1/namespaces/default/configmaps/a").status_code == 404
    ok(k8s.http.delete("/api/v1/namespaces/team"))  # cascades to the namespace's objects
    assert k8s.http.get("/api/v1/namespaces/team/configmaps/a").status_code == 404
    assert k8s.get("configmaps", "b") is not None


def test_create_sets_server_fields(k8s: K8s) -> None:
    created = ok(k8s.http.post(CM, json={"metadata": {"name": "one"}, "data": {"k": "v"}}), 201)
    meta = created["metadata"]
    assert meta["namespace"] == "default"  # from the URL
    assert meta["uid"] and meta["resourceVersion"].isdigit() and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert created["kind"] == "ConfigMap" and created["apiVersion"] == "v1"
    assert ok(k8s.http.get(f"{CM}/one")) == created
    again = k8s.http.post(CM, json={"metadata": {"name": "one"}})
    assert again.status_code == 409 and again.json()["reason"] == "AlreadyExists"
    wrong_ns = k8s.http.post(CM, json={"metadata": {"name": "two", "namespace": "other"}})
    assert wrong_ns.status_code == 400
    assert k8s.http.post(CM, json={"metadata": {}}).status_code == 422
    missing = k8s.http.get(f"{CM}/nope")
    assert missing.status_code == 404 and missing.json()["kind"] == "Status"


def test_generate_name(k8s: K8s) -> None:
    names = set()
    for _ in range(20):
        created = ok(k8s.http.post(CM, json={"metadata": {"generateName": "gen-"}}), 201)
        names.add(created["metadata"]["name"])
    assert len(names) == 20 and all(n.startswith("gen-") and len(n) == 9 for n in names)
    assert {o["metadata"]["name"] for o in k8s.list("configmaps")} == names


# --- optimistic concurrency & patches ----------------------------------------------------------------


def test_stale_resource_version_conflicts(k8s: K8s) -> None:
    first = ok(k8s.http.post(CM, json=cm("c", data={"v": "1"})), 201)
    second = ok(k8s.http.patch(f"{CM}/c", json={"data": {"v": "2"}}, headers=MERGE))
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    stale_put = k8s.http.put(f"{CM}/c", json={**first, "data": {"v": "3"}})
    assert stale_put.status_code == 409 and stale_put.json()["reason"] == "Conflict"
    stale_patch = k8s.http.patch(
        f"{CM}/c", json={"metadata": {"resourceVersion": first["metadata"]["resourceVersion"]}}, headers=MERGE
    )
    assert stale_patch.status_code == 409
    replaced = ok(k8s.http.put(f"{CM}/c", json={**second, "data": {"v": "4"}}))
    assert replaced["data"] == {"v": "4"} and replaced["metadata"]["uid"] == first["metadata"]["uid"]
    unconditional = {k: v for k, v in replaced.items() if k != "metadata"} | {"metadata": {"name": "c"}}
    assert ok(k8s.http.put(f"{CM}/c", json={**unconditional, "data": {"v": "5"}}))["data"] == {"v": "5"}
    assert k8s.http.put(f"{CM}/nope", json=cm("nope")).status_code == 404


def test_json_patch(k8s: K8s) -> None:
    obj = ok(k8s.http.post(CM, json=cm("j", data={"a": "1"})), 201)
    rv = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
        {"op": "add", "path": "/metadata/finalizers/-", "value": "x/z"},
        {"op": "replace", "path": "/data/a", "value": "2"},
        {"op": "copy", "from": "/data/a", "path": "/data/b"},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    patched = ok(k8s.http.patch(f"{CM}/j", json=ops, headers=JSONPATCH))
    assert patched["data"] == {"a": "2", "b": "2"} and patched["metadata"]["finalizers"] == ["x/z"]
    failed = k8s.http.patch(f"{CM}/j", json=ops[:2], headers=JSONPATCH)  # rv is stale now: 422, as kopf expects
    assert failed.status_code == 422
    assert k8s.http.patch(f"{CM}/j", json=[{"op": "remove", "path": "/nope"}], headers=JSONPATCH).status_code == 422
    assert k8s.get("configmaps", "j")["metadata"]["finalizers"] == ["x/z"]
    strategic = {"Content-Type": "application/strategic-merge-patch+json"}
    patched = ok(k8s.http.patch(f"{CM}/j", json={"data": {"b": None, "c": "3"}, "$patch": "merge"}, headers=strategic))
    assert patched["data"] == {"a": "2", "c": "3"}
    assert (
        k8s.http.patch(f"{CM}/j", json={}, headers={"Content-Type": "application/apply-patch+yaml"}).status_code == 415
    )


def test_generation_bumps_on_spec_changes_only(k8s: K8s) -> None:
    install_widgets(k8s)
    ok(k8s.http.post(WIDGETS, json=widget("g", size=1)), 201)
    label = ok(k8s.http.patch(f"{WIDGETS}/g", json={"metadata": {"labels": {"a": "b"}}}, headers=MERGE))
    assert label["metadata"]["generation"] == 1
    status = ok(k8s.http.patch(f"{WIDGETS}/g/status", json={"status": {"phase": "Ok"}}, headers=MERGE))
    assert status["metadata"]["generation"] == 1
    spec = ok(k8s.http.patch(f"{WIDGETS}/g", json={"spec": {"size": 2}}, headers=MERGE))
    assert spec["metadata"]["generation"] == 2
    noop = ok(k8s.http.patch(f"{WIDGETS}/g", json={"spec": {"size": 2}}, headers=MERGE))
    assert noop["metadata"]["resourceVersion"] == spec["metadata"]["resourceVersion"]  # no change, no new RV
    assert noop["metadata"]["generation"] == 2


def test_status_subresource(k8s: K8s) -> None:
    install_widgets(k8s)
    created = ok(k8s.http.post(WIDGETS, json={**widget("s", size=1), "status": {"phase": "Fake"}}), 201)
    assert "status" not in created  # dropped on create for resources with a status subresource
    main = ok(k8s.http.patch(f"{WIDGETS}/s", json={"spec": {"size": 2}, "status": {"phase": "X"}}, headers=MERGE))
    assert main["spec"] == {"size": 2} and "status" not in main  # the main endpoint ignores status
    sub = ok(k8s.http.patch(f"{WIDGETS}/s/status", json={"spec": {"size": 9}, "status": {"phase": "Y"}}, headers=MERGE))
    assert sub["spec"] == {"size": 2} and sub["status"] == {"phase": "Y"}  # /status changes only status
    put = ok(k8s.http.put(f"{WIDGETS}/s/status", json={**sub, "spec": {"size": 7}, "status": {"phase": "Z"}}))
    assert put["spec"] == {"size": 2} and put["status"] == {"phase": "Z"}
    put_main = ok(k8s.http.put(f"{WIDGETS}/s", json={**put, "spec": {"size": 3}, "status": {"phase": "W"}}))
    assert put_main["spec"] == {"size": 3} and put_main["status"] == {"phase": "Z"}
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": put_main["metadata"]["resourceVersion"]}]
    ops.append({"op": "add", "path": "/status/ready", "value": True})
    assert ok(k8s.http.patch(f"{WIDGETS}/s/status", json=ops, headers=JSONPATCH))["status"]["ready"] is True
    assert ok(k8s.http.get(f"{WIDGETS}/s/status"))["status"] == {"phase": "Z", "ready": True}
    ok(k8s.http.post(CM, json=cm("plain")), 201)
    assert k8s.http.get(f"{CM}/plain/status").status_code == 404  # configmaps have no status subresource


# --- CRDs & kubectl ----------------------------------------------------------------------------------


def test_crd_discovery_and_kubectl(k8s: K8s) -> None:
    assert k8s.http.get("/apis/example.com/v1").status_code == 404
    out = k8s.kubectl("apply", "--validate=false", "-f", "-", input=WIDGET_CRD).stdout
    assert "widgets.example.com created" in out
    resources = {r["name"]: r for r in ok(k8s.http.get("/apis/example.com/v1"))["resources"]}
    assert set(resources) == {"widgets", "widgets/status", "widgets/scale"}
    assert resources["widgets"]["shortNames"] == ["wd"] and resources["widgets"]["namespaced"] is True
    k8s.kubectl("wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=5s")

    manifest = (
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, labels: {tier: a}}\nspec: {replicas: 1}\n"
    )
    k8s.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    assert k8s.kubectl("get", "wd", "-o", "name").stdout.split() == ["widget.example.com/w1"]
    listed = json.loads(k8s.kubectl("get", "widgets", "-o", "json").stdout)
    assert [i["spec"] for i in listed["items"]] == [{"replicas": 1}]
    k8s.kubectl("apply", "--validate=false", "-f", "-", input=manifest.replace("replicas: 1", "replicas: 2"))
    assert k8s.get("widgets.example.com", "w1")["spec"] == {"replicas": 2}

    k8s.kubectl("scale", "wd/w1", "--replicas=4")
    obj = k8s.get("widgets.example.com", "w1")
    assert obj["spec"]["replicas"] == 4 and obj["metadata"]["generation"] == 3
    ok(k8s.http.patch(f"{WIDGETS}/w1/status", json={"status": {"replicas": 4}}, headers=MERGE))
    scale = ok(k8s.http.get(f"{WIDGETS}/w1/scale"))
    assert scale["kind"] == "Scale" and scale["spec"] == {"replicas": 4} and scale["status"]["replicas"] == 4
    scaled = ok(k8s.http.patch(f"{WIDGETS}/w1/scale", json={"spec": {"replicas": 6}}, headers=MERGE))
    assert scaled["spec"]["replicas"] == 6 and k8s.get("widgets.example.com", "w1")["spec"]["replicas"] == 6

    k8s.kubectl("label", "wd", "w1", "extra=yes")
    assert k8s.kubectl("get", "wd", "-l", "tier=a,extra", "-o", "name").stdout.strip() == "widget.example.com/w1"
    k8s.kubectl("patch", "wd", "w1", "--type=merge", "-p", '{"spec": {"colour": "red"}}')
    replacement = json.loads(k8s.kubectl("get", "wd", "w1", "-o", "json").stdout)
    replacement["spec"]["colour"] = "blue"
    k8s.kubectl("replace", "--validate=false", "-f", "-", input=json.dumps(replacement))
    assert k8s.get("widgets.example.com", "w1")["spec"]["colour"] == "blue"
    assert "deleted" in k8s.kubectl("delete", "wd", "w1", "--timeout=10s").stdout
    assert k8s.get("widgets.example.com", "w1") is None
    assert "No resources found" in k8s.kubectl("get", "wd").stderr

    k8s.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    k8s.kubectl("delete", "crd", "widgets.example.com")
    assert k8s.http.get("/apis/example.com/v1").status_code == 404
    assert k8s.list("widgets.example.com") == []


def test_kubernetes_client(k8s: K8s) -> None:
    api = kubernetes.client.CoreV1Api(k8s.api_client())
    body = kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name="kc", labels={"a": "b"}))
    api.create_namespaced_config_map("default", body)
    api.patch_namespaced_config_map("kc", "default", {"data": {"x": "y"}})  # strategic merge by default
    assert api.read_namespaced_config_map("kc", "default").data == {"x": "y"}
    assert [c.metadata.name for c in api.list_namespaced_config_map("default", label_selector="a=b").items] == ["kc"]
    with pytest.raises(kubernetes.client.ApiException) as exc:
        api.read_namespaced_config_map("nope", "default")
    assert exc.value.status == 404
    # The fixture re-points the kubeconfig that kubernetes froze at import time:
    kubernetes.config.load_kube_config()
    assert kubernetes.client.Configuration.get_default_copy().host == k8s.url
    watch = kubernetes.watch.Watch()
    seen = [
        (e["type"], e["object"].metadata.name)
        for e in watch.stream(api.list_namespaced_config_map, "default", timeout_seconds=1)
    ]
    assert seen == [("ADDED", "kc")]
    api.delete_namespaced_config_map("kc", "default")
    assert k8s.get("configmaps", "kc") is None


# --- deletion ----------------------------------------------------------------------------------------


def test_owner_reference_garbage_collection(k8s: K8s) -> None:
    owner = ok(k8s.http.post(CM, json=cm("owner")), 201)
    other = ok(k8s.http.post(CM, json=cm("other")), 201)
    child = ok(k8s.http.post(CM, json=cm("child", ownerReferences=[owner_ref(owner)])), 201)
    ok(k8s.http.post(CM, json=cm("grandchild", ownerReferences=[owner_ref(child)])), 201)
    ok(k8s.http.post(CM, json=cm("shared", ownerReferences=[owner_ref(owner), owner_ref(other)])), 201)
    ok(
        k8s.http.post(
            "/api/v1/namespaces/default/secrets",
            json={"metadata": {"name": "s", "ownerReferences": [owner_ref(owner)]}},
        ),
        201,
    )
    ok(k8s.http.delete(f"{CM}/owner"))
    assert sorted(o["metadata"]["name"] for o in k8s.list("configmaps")) == ["other", "shared"]
    assert k8s.get("secrets", "s") is None
    ok(k8s.http.delete(f"{CM}/other"))
    assert k8s.list("configmaps") == []

    owner = ok(k8s.http.post(CM, json=cm("owner")), 201)
    ok(k8s.http.post(CM, json=cm("orphan", ownerReferences=[owner_ref(owner)])), 201)
    ok(k8s.http.request("DELETE", f"{CM}/owner", json={"propagationPolicy": "Orphan"}))
    assert k8s.get("configmaps", "orphan")["metadata"]["ownerReferences"] == []


def test_finalizers(k8s: K8s) -> None:
    created = ok(k8s.http.post(CM, json=cm("f", finalizers=["a/b", "c/d"])), 201)
    with k8s.http.stream(
        "GET",
        CM,
        params={"watch": "true", "resourceVersion": created["metadata"]["resourceVersion"], "timeoutSeconds": "5"},
    ) as watch:
        deleting = ok(k8s.http.delete(f"{CM}/f"))
        assert deleting["metadata"]["deletionTimestamp"] and deleting["metadata"]["finalizers"] == ["a/b", "c/d"]
        again = ok(k8s.http.delete(f"{CM}/f"))
        assert again["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
        added = k8s.http.patch(f"{CM}/f", json={"metadata": {"finalizers": ["a/b", "c/d", "e/f"]}}, headers=MERGE)
        assert added.status_code == 422  # no new finalizers on an object being deleted
        ok(k8s.http.patch(f"{CM}/f", json={"metadata": {"finalizers": ["c/d"]}}, headers=MERGE))
        assert k8s.get("configmaps", "f") is not None
        last = ok(k8s.http.patch(f"{CM}/f", json={"metadata": {"finalizers": None}}, headers=MERGE))
        assert "finalizers" not in last["metadata"]
        assert k8s.get("configmaps", "f") is None
        assert k8s.http.get(f"{CM}/f").status_code == 404
        assert summary(read_events(watch, 3)) == [("MODIFIED", "f"), ("MODIFIED", "f"), ("DELETED", "f")]


# --- selectors & watches -----------------------------------------------------------------------------


def test_label_and_field_selectors_on_list(k8s: K8s) -> None:
    for name, labels in [("a", {"app": "x", "tier": "1"}), ("b", {"app": "y", "tier": "2"}), ("c", {"app": "x"})]:
        ok(k8s.http.post(CM, json=cm(name, labels)), 201)

    def names(**params: str) -> list[str]:
        return [o["metadata"]["name"] for o in ok(k8s.http.get(CM, params=params))["items"]]

    assert names(labelSelector="app=x") == ["a", "c"]
    assert names(labelSelector="app==x,tier=1") == ["a"]
    assert names(labelSelector="app!=x") == ["b"]
    assert names(labelSelector="tier in (1, 2)") == ["a", "b"]
    assert names(labelSelector="tier notin (1),app") == ["b", "c"]
    assert names(labelSelector="tier") == ["a", "b"]
    assert names(labelSelector="!tier") == ["c"]
    assert names(fieldSelector="metadata.name=b") == ["b"]
    assert names(fieldSelector="metadata.name!=b,metadata.namespace=default") == ["a", "c"]
    assert k8s.http.get(CM, params={"labelSelector": "a b c"}).status_code == 400
    listing = ok(k8s.http.get(CM))
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert int(listing["metadata"]["resourceVersion"]) >= max(
        int(i["metadata"]["resourceVersion"]) for i in listing["items"]
    )
    assert k8s.kubectl("get", "cm", "-l", "app=x,tier notin (1)", "-o", "name").stdout.split() == ["configmap/c"]
    ok(k8s.http.delete(CM, params={"labelSelector": "app=x"}))  # delete-collection
    assert names() == ["b"]


def test_label_selectors_on_watch(k8s: K8s) -> None:
    params = {"watch": "true", "labelSelector": "app=x", "timeoutSeconds": "5"}
    with k8s.http.stream("GET", CM, params=params) as watch:
        assert watch.headers["content-type"].startswith("application/json")
        ok(k8s.http.post(CM, json=cm("other", {"app": "y"})), 201)
        ok(k8s.http.post(CM, json=cm("mine", {"app": "x"})), 201)
        ok(k8s.http.patch(f"{CM}/other", json={"metadata": {"labels": {"app": "x"}}}, headers=MERGE))  # enters
        ok(k8s.http.patch(f"{CM}/mine", json={"data": {"k": "v"}}, headers=MERGE))
        ok(k8s.http.patch(f"{CM}/mine", json={"metadata": {"labels": {"app": "z"}}}, headers=MERGE))  # leaves
        ok(k8s.http.patch(f"{CM}/mine", json={"data": {"k": "w"}}, headers=MERGE))  # unseen
        ok(k8s.http.delete(f"{CM}/other"))
        events = read_events(watch, 5)
    assert summary(events) == [
        ("ADDED", "mine"),
        ("ADDED", "other"),
        ("MODIFIED", "mine"),
        ("DELETED", "mine"),
        ("DELETED", "other"),
    ]


def test_watch_resumes_without_lost_events(k8s: K8s) -> None:
    ok(k8s.http.post(CM, json=cm("before")), 201)
    listing = ok(k8s.http.get(CM))
    # Changes between the list snapshot and the watch request must not be lost:
    for i in range(30):
        ok(k8s.http.post(CM, json=cm(f"gap{i:02}")), 201)
    ok(k8s.http.delete(f"{CM}/before"))
    params = {"watch": "true", "resourceVersion": listing["metadata"]["resourceVersion"], "timeoutSeconds": "5"}
    with k8s.http.stream("GET", CM, params=params) as watch:
        ok(k8s.http.post(CM, json=cm("live")), 201)
        events = read_events(watch, 32)
    assert summary(events) == [("ADDED", f"gap{i:02}") for i in range(30)] + [("DELETED", "before"), ("ADDED", "live")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(listing["metadata"]["resourceVersion"])

    # Without a resourceVersion: the current state first; with sendInitialEvents: a closing bookmark.
    initial = {"watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan", "timeoutSeconds": "5"}
    with k8s.http.stream("GET", CM, params=initial) as watch:
        events = read_events(watch, 32)
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert {e["type"] for e in events[:-1]} == {"ADDED"} and len(events) == 32

    started = time.monotonic()
    with k8s.http.stream("GET", f"{CM}/live", params={"watch": "true", "timeoutSeconds": "1"}) as watch:
        assert summary(read_events(watch, 99)) == [("ADDED", "live")]  # a named watch; ends by timeoutSeconds
    assert 0.9 < time.monotonic() - started < 4


def test_watch_too_old_resource_version_is_gone() -> None:
    with EmulatorServer(K8sEmulator(history_limit=5)) as server, httpx.Client(base_url=server.url) as http:
        rv = ok(http.get(CM))["metadata"]["resourceVersion"]
        for i in range(10):
            ok(http.post(CM, json=cm(f"x{i}")), 201)
        with http.stream("GET", CM, params={"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}) as watch:
            events = read_events(watch, 99)
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]


def test_request_cost_stays_constant(k8s: K8s) -> None:
    ok(k8s.http.post(CM, json=cm("fixed")), 201)

    def batch(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            ok(k8s.http.post(CM, json={"metadata": {"generateName": "load-"}}), 201)
            ok(k8s.http.patch(f"{CM}/fixed", json={"data": {"n": str(n)}}, headers=MERGE))
            ok(k8s.http.get(f"{CM}/fixed"))
        return time.perf_counter() - started

    first = batch(200)
    batch(600)
    last = batch(200)
    assert last < max(first * 4, 1.0), (first, last)
    assert len(k8s.emulator.request_log) <= k8s.emulator.request_log_limit


# --- kopf end to end ---------------------------------------------------------------------------------


def test_kopf_operator_end_to_end(k8s: K8s) -> None:
    install_widgets(k8s)
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []
    delete_ran = threading.Event()

    @kopf.on.create("example.com", "v1", "widgets", id="create_fn", registry=registry)
    def create_fn(body: Any, name: str, namespace: str, spec: Any, patch: Any, **_: Any) -> dict[str, Any]:
        child = cm(f"{name}-child", data={"size": str(spec.get("size"))})
        kopf.adopt(child, owner=body)
        kubernetes.client.CoreV1Api(k8s.api_client()).create_namespaced_config_map(namespace, child)
        patch.status["phase"] = "Ready"
        return {"child": child["metadata"]["name"]}

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    def delete_fn(name: str, **_: Any) -> None:
        deleted.append(name)
        delete_ran.set()

    with k8s.operator(registry=registry):
        k8s.wait_watching("widgets.example.com")
        ok(k8s.http.post(WIDGETS, json=widget("w1", size=3)), 201)
        child = k8s.wait_for(lambda: k8s.get("configmaps", "w1-child"), what="the child ConfigMap")
        assert child["data"] == {"size": "3"}
        assert child["metadata"]["ownerReferences"][0]["name"] == "w1"
        done = k8s.wait_for(
            lambda: (w := k8s.get("widgets.example.com", "w1")) and w.get("status", {}).get("create_fn") and w,
            what="the widget's status",
        )
        assert done["status"]["phase"] == "Ready" and done["status"]["create_fn"] == {"child": "w1-child"}
        assert done["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

        k8s.kubectl("delete", "widget", "w1", "--timeout=20s")  # waits until kopf released the finalizer
        assert delete_ran.is_set() and deleted == ["w1"]
        assert k8s.get("widgets.example.com", "w1") is None
        assert k8s.get("configmaps", "w1-child") is None  # garbage-collected via the ownerReference
