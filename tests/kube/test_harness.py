"""The test harness itself on the real control plane: kopf in a thread (vault login), kubelet playing, waits."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import kopf
import kubernetes
import pytest

from .harness import pod_running, pod_unschedulable, pod_waiting

if TYPE_CHECKING:
    from .harness import Kube

pytest_plugins = ("kube.fixtures",)

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {size: {type: integer}}}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
      subresources: {status: {}}
"""


def test_kubectl_and_the_namespace(kube: Kube) -> None:
    assert kube.kubectl("config", "view", "--minify", "-o", "jsonpath={..namespace}").stdout == kube.namespace
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
    assert kube.get("configmaps", "c")["data"] == {"a": "1"}
    core = kubernetes.client.CoreV1Api(kube.api_client())
    assert core.read_namespaced_config_map("c", kube.namespace).data == {"a": "1"}
    with pytest.raises(TimeoutError, match=r"(?s)never.*=== namespace"):
        kube.wait_for(lambda: False, timeout=0.2, what="never")


def test_playing_the_kubelet(kube: Kube) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "worker", "image": "worker"}]},
    }
    kube.apply(pod)
    for status, check in (
        (pod_unschedulable("no gpu"), lambda s: s["conditions"][0]["reason"] == "Unschedulable"),
        (pod_waiting("ImagePullBackOff", "denied"), lambda s: s["containerStatuses"][0]["state"]["waiting"]),
        (pod_running(), lambda s: s["phase"] == "Running" and s["containerStatuses"][0]["ready"]),
    ):
        assert check(kube.set_pod_status("p", status)["status"]), status
    ready = {c["type"]: c["status"] for c in kube.get("pods", "p")["status"]["conditions"]}
    assert ready["Ready"] == "True"
    kube.delete("pods", "p")  # never scheduled to a node: gone at once, no kubelet needed
    kube.wait_deleted("pods", "p", timeout=10)


def test_kopf_operator_end_to_end(kube: Kube) -> None:
    kube.apply(WIDGET_CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=30s")
    registry = kopf.OperatorRegistry()
    deleted: list[str] = []
    delete_ran = threading.Event()

    @kopf.on.create("example.com", "v1", "widgets", id="create_fn", registry=registry)
    def create_fn(body: Any, name: str, namespace: str, spec: Any, patch: Any, **_: Any) -> dict[str, Any]:
        child = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-child"}}
        child["data"] = {"size": str(spec.get("size"))}
        kopf.adopt(child, owner=body)
        kubernetes.client.CoreV1Api(kube.api_client()).create_namespaced_config_map(namespace, child)
        patch.status["phase"] = "Ready"
        return {"child": child["metadata"]["name"]}

    @kopf.on.delete("example.com", "v1", "widgets", registry=registry)
    def delete_fn(name: str, **_: Any) -> None:
        deleted.append(name)
        delete_ran.set()

    with kube.operator(registry=registry):  # a vault pre-filled with the CA and the admin token
        kube.apply({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})
        child = kube.wait_for(lambda: kube.get("configmaps", "w1-child"), what="the child ConfigMap")
        assert child["data"] == {"size": "3"}
        assert child["metadata"]["ownerReferences"][0]["name"] == "w1"
        done = kube.wait_for(
            lambda: (w := kube.get("widgets.example.com", "w1")) and w.get("status", {}).get("create_fn") and w,
            what="the widget's status",
        )
        assert done["status"]["phase"] == "Ready" and done["status"]["create_fn"] == {"child": "w1-child"}
        assert done["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        kube.kubectl("delete", "widget", "w1", "--timeout=20s")  # waits until kopf released the finalizer
        assert delete_ran.is_set() and deleted == ["w1"]
        assert kube.get("widgets.example.com", "w1") is None
    # the child's garbage collection is not awaited: ~30 s right after a CRD is created (see the next test)


def test_garbage_collection_of_owned_objects(kube: Kube) -> None:
    """Owned by a built-in kind the collector already watches: gone within seconds (by a new CRD's: ~30 s)."""
    if not kube.cp.has_controller_manager:
        pytest.skip("no kube-controller-manager in $KUBEBUILDER_ASSETS: no garbage collector")
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    owner = kube.get("configmaps", "owner")
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owned", "ownerReferences": [ref]}})
    kube.delete("configmaps", "owner")
    kube.wait_deleted("configmaps", "owned", timeout=30)
