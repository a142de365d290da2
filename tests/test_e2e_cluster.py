"""End to end on a real cluster where pods run: the product's main path.

The Helm chart (rendered by the real Helm engine) is applied with kubectl: CRD, RBAC, the operator
Deployment from the operator image under the chart's ServiceAccount (cluster-wide, the chart's
default), and the bundled API server from the server image with its token bootstrap. A LightlyWorker
with 2 replicas and no GPU request gets worker pods from the worker image (token mounted as a file,
UID 10001, read-only root filesystem), and the unmodified ``lightly==1.5.26`` client schedules
DIVERSITY runs through a port-forward. Then: a busy worker's pod is deleted mid-run (the run still
completes, once), the fleet is scaled down while a worker is busy (the idle one goes), a GPU fleet on
a GPU-less node says ``Unschedulable: Insufficient nvidia.com/gpu``, and deleting the LightlyWorker
deregisters its workers. A real Prometheus then scrapes operator, server and worker.

Needs ``LIGHTLY_E2E_KUBECONFIG`` and a container engine (see tests/cluster.py); skips with the reason
without them, except under ``CI=true``, where it fails. The tests run in file order on one install.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cluster import CHART, Kube, load_images, missing_reason, render_chart
from lightly_devkit.data import dataset_files
from lightly_devkit.net import PROXY_VARS, free_port

RELEASE = "lwo"
FULLNAME = f"{RELEASE}-lightly-worker-operator"
OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
LABEL = "e2e"
N_IMAGES = 150
SELECTION = {"n_samples": 10, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
# large inputs make each run last long enough to act on a busy worker mid-run
WORKER_CONFIG = {"embedding.input_size": 224, "lightly.loader.batch_size": 4, "worker.heartbeat_seconds": 2}


def _require(reason: str | None) -> None:
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def kube() -> Kube:
    _require(missing_reason())
    k = Kube(os.environ["LIGHTLY_E2E_KUBECONFIG"])
    k.run("version")
    return k


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    from lightly_devkit import engine

    _require(engine.unavailable_reason())
    results = engine.build_images()
    for r in results.values():
        print(r.describe())
    tags = {name: r.tag for name, r in results.items()}
    print(load_images(list(tags.values())))
    return tags


def _image(tag: str, policy: str = "Never") -> dict[str, str]:
    repository, _, version = tag.rpartition(":")
    return {"repository": repository, "tag": version, "pullPolicy": policy}


class Stack:
    """The installed chart: namespace, the server reached through a port-forward, the real client."""

    def __init__(self, kube: Kube, ns: str, server_port: int, token: str) -> None:
        self.kube, self.ns, self.token = kube, ns, token
        self.url = f"http://127.0.0.1:{server_port}"
        from lightly.api import ApiWorkflowClient

        self.client = ApiWorkflowClient(token=token)
        self.dataset = f"e2e-{os.getpid()}"
        self.client.create_dataset(self.dataset)
        self.client.set_local_config(relative_path="", purpose="INPUT")
        self.client.set_local_config(relative_path="", purpose="LIGHTLY")

    def wait_for(self, predicate, *, what: str, timeout: float = 180):  # type: ignore[no-untyped-def]
        return self.kube.wait_for(
            predicate, what=what, timeout=timeout, ns=self.ns, operator_selector=OPERATOR_SELECTOR
        )

    def lw(self, name: str) -> dict[str, Any]:
        return self.kube.get(self.ns, "lightlyworker", name) or {}

    def pods(self, name: str) -> list[dict[str, Any]]:
        sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=lightly-worker"
        items = self.kube.json("-n", self.ns, "get", "pods", "-l", sel)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def schedule(self, dataset: str) -> str:
        self.client.set_dataset_id_by_name(dataset)
        return self.client.schedule_compute_worker_run(
            worker_config={"shutdown_when_job_finished": False}, selection_config=SELECTION, runs_on=[LABEL]
        )

    def run_info(self, scheduled_id: str):  # type: ignore[no-untyped-def]
        return self.client.get_compute_worker_run_info(scheduled_id)

    def wait_completed(self, scheduled_id: str, timeout: float = 420):  # type: ignore[no-untyped-def]
        info = self.wait_for(
            lambda: (i := self.run_info(scheduled_id)).in_end_state() and i,
            what=f"run {scheduled_id} to end",
            timeout=timeout,
        )
        assert info.ended_successfully(), f"run {scheduled_id}: {info.state} {info.message}"
        return info

    def busy_worker(self, name: str, scheduled_id: str) -> dict[str, Any]:
        """The status entry of the worker that holds ``scheduled_id``'s run, once the operator sees it busy."""

        def holder() -> dict[str, Any] | None:
            for w in self.lw(name).get("status", {}).get("workers", []):
                if w.get("currentRun") == scheduled_id and w.get("state") == "BUSY" and w.get("pod"):
                    return w
            return None

        return self.wait_for(holder, what=f"a worker of {name} busy with {scheduled_id}")

    def worker_names(self) -> set[str]:
        return {w.name for w in self.client.get_compute_workers()}


@pytest.fixture(scope="module")
def stack(kube: Kube, images: dict[str, str]) -> Iterator[Stack]:
    ns = f"lightly-e2e-{os.getpid()}"
    kube.run("create", "namespace", ns)
    values: dict[str, Any] = {
        "image": _image(images["operator"]),
        "workerImage": {"repository": images["worker"].rpartition(":")[0], "tag": "dev"},
        "settings": {"resyncSeconds": 2, "sweepSeconds": 30},
        "server": {
            "enabled": True,
            "image": _image(images["server"]),
            "persistence": {"enabled": False},
            "leaseSeconds": 20,
        },
    }
    try:
        kube.run("apply", "-f", str(CHART / "crds"))
        kube.apply(render_chart(values, RELEASE, ns))
        server = f"{FULLNAME}-server"
        kube.wait_condition(ns, f"deploy/{server}", "condition=Available", 240, operator_selector=OPERATOR_SELECTOR)
        # clusters without DNS (the single-node kit) cannot resolve Service names: point the operator
        # (and through it the workers) at the server's ClusterIP, as `helm upgrade --set apiUrl=...` would
        ip = kube.json("-n", ns, "get", "svc", server)["spec"]["clusterIP"]
        values["apiUrl"] = f"http://{ip}:8080"
        kube.apply(render_chart(values, RELEASE, ns))
        kube.run("-n", ns, "rollout", "status", f"deploy/{FULLNAME}", "--timeout=240s", timeout=270)
        token = kube.wait_for(
            lambda: kube.get(ns, "secret", "lightly-token"), what="the bootstrapped token Secret", timeout=60, ns=ns
        )
        token = base64.b64decode(token["data"]["token"]).decode()
        with kube.port_forward(ns, f"svc/{server}", 8080) as port:
            saved = {
                k: os.environ.get(k) for k in ("LIGHTLY_SERVER_LOCATION", "LIGHTLY_DID_VERSION_CHECK", *PROXY_VARS)
            }
            os.environ.update(LIGHTLY_SERVER_LOCATION=f"http://127.0.0.1:{port}", LIGHTLY_DID_VERSION_CHECK="True")
            for var in PROXY_VARS:
                os.environ.pop(var, None)
            try:
                yield Stack(kube, ns, port, token)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        kube.run("delete", "namespace", ns, "--wait=false", check=False)


def _input_configmap(name: str) -> dict[str, Any]:
    files = dataset_files(N_IMAGES)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "binaryData": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


def _fleet(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightly.ai/v1alpha1",
        "kind": "LightlyWorker",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labels": [LABEL],
            "api": {"tokenSecretRef": {"name": "lightly-token"}},
            "resources": {},  # this node has no GPU
            "input": {"configMap": {"name": "e2e-images"}},
            "workerConfig": WORKER_CONFIG,
            **spec,
        },
    }


def test_operator_runs_cluster_wide_from_its_image_under_the_chart_service_account(stack: Stack) -> None:
    pods = stack.kube.json("-n", stack.ns, "get", "pods", "-l", OPERATOR_SELECTOR)["items"]
    assert pods, stack.kube.diagnostics(stack.ns, OPERATOR_SELECTOR)
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    statuses = pod["status"]["containerStatuses"]
    assert all(c["ready"] and c["restartCount"] == 0 for c in statuses), statuses
    args = pod["spec"]["containers"][0].get("args", [])
    assert not any(a.startswith("--namespace") for a in args), args  # the chart's default: all namespaces
    log = stack.kube.run("-n", stack.ns, "logs", pod["metadata"]["name"]).stdout
    assert "Traceback" not in log, log[-3000:]


def test_fleet_of_two_completes_a_diversity_run_from_the_real_client(stack: Stack) -> None:
    stack.kube.apply([_input_configmap("e2e-images"), _fleet("fleet", 2)], ns=stack.ns)
    stack.kube.wait_condition(
        stack.ns, "lightlyworker/fleet", "jsonpath={.status.readyReplicas}=2", 300, operator_selector=OPERATOR_SELECTOR
    )
    pods = stack.pods("fleet")
    assert len(pods) == 2
    for p in pods:
        spec = p["spec"]
        assert spec["securityContext"]["runAsUser"] == 10001 and spec["securityContext"]["fsGroup"] == 10001
        c = spec["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert not any("token=" in a for a in c.get("args", [])), "the token must never be in pod args"
        assert all(
            "value" not in e or "token" not in e["name"].lower() or e["name"] == "LIGHTLY_TOKEN_FILE" for e in c["env"]
        )
    # the unmodified client lists the operator's workers (their names fit Lightly's name pattern)
    names = stack.wait_for(lambda: len(stack.worker_names()) >= 2 and stack.worker_names(), what="2 workers")
    assert len(names) == 2
    table = stack.kube.run("-n", stack.ns, "get", "lw").stdout
    assert table.split()[:5] == ["NAME", "DESIRED", "READY", "BUSY", "PHASE"], table

    sid = stack.schedule(stack.dataset)
    stack.wait_completed(sid)
    run = stack.client.get_compute_worker_run_from_scheduled_run(sid)
    tags = stack.client.get_compute_worker_run_tags(run.id)
    assert len(tags) == 1
    selected = stack.client.export_filenames_by_tag_name(tags[0].name).splitlines()
    assert len(selected) == SELECTION["n_samples"] and len(set(selected)) == len(selected)
    assert set(selected) <= {f"scene_{i:03d}.jpg" for i in range(N_IMAGES)}


def test_deleting_the_busy_workers_pod_mid_run_still_completes_the_run_once(stack: Stack) -> None:
    sid = stack.schedule(stack.dataset)
    busy = stack.busy_worker("fleet", sid)
    stack.kube.run("-n", stack.ns, "delete", "pod", busy["pod"], "--wait=false")
    stack.wait_completed(sid)
    runs = [r for r in stack.client.get_compute_worker_runs() if r.scheduled_id == sid]
    completed = [r for r in runs if str(getattr(r.state, "value", r.state)) == "COMPLETED"]
    assert len(completed) == 1, runs
    assert len(stack.client.get_compute_worker_run_tags(completed[0].id)) == 1
    # the replacement pod takes the same worker id
    stack.kube.wait_condition(
        stack.ns, "lightlyworker/fleet", "jsonpath={.status.readyReplicas}=2", 300, operator_selector=OPERATOR_SELECTOR
    )
    ids = {w["workerId"] for w in stack.lw("fleet")["status"]["workers"]}
    assert busy["workerId"] in ids


def test_scaling_down_while_one_worker_is_busy_removes_the_idle_one(stack: Stack) -> None:
    sid = stack.schedule(stack.dataset)
    busy = stack.busy_worker("fleet", sid)
    before = {w["workerId"]: w["name"] for w in stack.lw("fleet")["status"]["workers"]}
    stack.kube.run("-n", stack.ns, "scale", "lw", "fleet", "--replicas", "1")
    pods = stack.wait_for(lambda: (p := stack.pods("fleet")) and len(p) == 1 and p, what="one pod left")
    assert pods[0]["metadata"]["name"] == busy["pod"], "the busy worker's pod must stay"
    info = stack.run_info(sid)
    assert not info.in_end_state() or info.ended_successfully(), info
    stack.wait_completed(sid)
    idle_name = next(n for wid, n in before.items() if wid != busy["workerId"])
    stack.wait_for(lambda: idle_name not in stack.worker_names(), what=f"{idle_name} deregistered")
    assert busy["name"] in stack.worker_names()


def test_a_gpu_fleet_on_a_gpu_less_node_says_why_it_cannot_run(stack: Stack) -> None:
    stack.kube.apply([_fleet("gpu", 1, resources={"limits": {"nvidia.com/gpu": 1}})], ns=stack.ns)

    def unschedulable() -> str | None:
        for c in stack.lw("gpu").get("status", {}).get("conditions", []):
            if "Insufficient nvidia.com/gpu" in (c.get("message") or ""):
                return f"{c['type']}={c['status']} {c.get('reason')}: {c['message']}"
        return None

    said = stack.wait_for(unschedulable, what="the gpu fleet's Unschedulable condition", timeout=120)
    assert "Unschedulable" in said, said


def _dashboard_queries() -> list[str]:
    board = json.loads((CHART / "dashboards" / "fleet-overview.json").read_text())
    panels = [p for row in board["panels"] for p in [row, *row.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def _alert_expressions() -> dict[str, str]:
    docs = render_chart({"prometheusRule": {"enabled": True}}, RELEASE, "monitoring")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    return {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


METRIC = re.compile(r"\b(lightly_[a-z_]+)\b")


def test_a_real_prometheus_scrapes_operator_server_and_worker(stack: Stack, tmp_path: Path) -> None:
    """Every dashboard query and every alert expression parses and returns series (or, for an alert
    whose condition is false, every metric it names has series): a panel that shows nothing is a bug."""
    prometheus = shutil.which(os.environ.get("PROMETHEUS", "prometheus"))
    _require(None if prometheus else "no prometheus binary (Debian: apt-get install prometheus)")
    worker_pod = stack.pods("fleet")[0]["metadata"]["name"]
    with contextlib.ExitStack() as es:
        ports = {
            "operator": es.enter_context(stack.kube.port_forward(stack.ns, f"svc/{FULLNAME}-metrics", 8080)),
            "server": es.enter_context(stack.kube.port_forward(stack.ns, f"svc/{FULLNAME}-server", 8080)),
            "worker": es.enter_context(stack.kube.port_forward(stack.ns, f"pod/{worker_pod}", 9100)),
        }
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in ports.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        web = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - closed by the exit stack
        es.callback(log.close)
        proc = subprocess.Popen(
            [
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{web}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        es.callback(proc.wait, 30)
        es.callback(proc.terminate)
        http = es.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{web}", timeout=10, trust_env=False))

        def query(expr: str) -> dict[str, Any]:
            return http.get("/api/v1/query", params={"query": expr}).json()

        def all_up() -> bool:
            try:
                r = query("up")
            except httpx.HTTPError:
                return False
            up = {s["metric"]["job"]: s["value"][1] for s in r.get("data", {}).get("result", [])}
            return up == {job: "1" for job in ports}

        stack.wait_for(all_up, what="Prometheus to scrape operator, server and worker", timeout=60)
        time.sleep(6)  # a few samples for rate()/increase()
        empty = []
        for expr in _dashboard_queries():
            r = query(expr.replace("$__rate_interval", "1m"))
            assert r["status"] == "success", f"{expr}: {r}"
            if not r["data"]["result"]:
                empty.append(expr)
        assert not empty, "dashboard panels that show nothing:\n" + "\n".join(empty)
        for alert, expr in _alert_expressions().items():
            r = query(expr)
            assert r["status"] == "success", f"{alert}: {expr}: {r}"
            if not r["data"]["result"]:  # not firing: what it watches must exist
                for metric in set(METRIC.findall(expr)):
                    assert query(metric)["data"]["result"], f"{alert}: no series of {metric}"


def test_deleting_the_fleet_deregisters_its_workers_and_its_pods_go(stack: Stack) -> None:
    names = {w["name"] for w in stack.lw("fleet")["status"]["workers"]}
    assert names and names <= stack.worker_names()
    stack.kube.run("-n", stack.ns, "delete", "lw", "fleet", "gpu", "--timeout=180s", timeout=200)
    assert not names & stack.worker_names()
    stack.wait_for(lambda: not stack.pods("fleet") or None, what="the fleet's pods to go", timeout=120)
