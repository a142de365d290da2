"""End to end on a real cluster where pods run: the product's main path.

The Helm chart (rendered by the real Helm engine) is applied with kubectl: CRD, RBAC, the operator
Deployment from the operator image under the chart's ServiceAccount (the release namespace, the
chart's default), and the bundled API server from the server image with its token bootstrap. A LightlyWorker
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

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from cluster import (
    CHART,
    FULLNAME,
    N_IMAGES,
    OPERATOR_SELECTOR,
    RELEASE,
    SELECTION,
    WORKER_CONFIG,
    Stack,
    fleet,
    render_chart,
    require,
)
from lightly_devkit.net import free_port
from lightly_protocol import paths

pytest_plugins = ("e2e_fixtures",)


def test_operator_watches_its_release_namespace_from_its_image_under_the_chart_service_account(stack: Stack) -> None:
    pods = stack.kube.json("-n", stack.ns, "get", "pods", "-l", OPERATOR_SELECTOR)["items"]
    assert pods, stack.kube.diagnostics(stack.ns, OPERATOR_SELECTOR)
    pod = pods[0]
    assert pod["spec"]["serviceAccountName"] == FULLNAME
    statuses = pod["status"]["containerStatuses"]
    assert all(c["ready"] and c["restartCount"] == 0 for c in statuses), statuses
    args = pod["spec"]["containers"][0].get("args", [])
    assert f"--namespace={stack.ns}" in args, args  # the chart's default: the release namespace only
    log = stack.kube.run("-n", stack.ns, "logs", pod["metadata"]["name"]).stdout
    assert "Traceback" not in log, log[-3000:]
    # the bundled server's secret key (datasource credentials at rest), made once by the bootstrap
    assert stack.kube.get(stack.ns, "secret", f"{FULLNAME}-server-secret-key")


def test_fleet_of_two_completes_a_diversity_run_from_the_real_client(stack: Stack) -> None:
    stack.kube.apply([fleet("fleet", 2)], ns=stack.ns)
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
    assert table.split()[:6] == ["NAME", "DESIRED", "READY", "BUSY", "SHARDS", "PHASE"], table

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
    stack.kube.apply([fleet("gpu", 1, resources={"limits": {"nvidia.com/gpu": 1}})], ns=stack.ns)

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
    require(None if prometheus else "no prometheus binary (Debian: apt-get install prometheus)")
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
            r = http.get("/api/v1/query", params={"query": expr})
            assert r.status_code == 200, f"{expr}: HTTP {r.status_code}: {r.text[:500]}"
            return r.json()

        def all_up() -> bool:
            try:  # Prometheus answers 503 "Service Unavailable" until its TSDB is open
                r = http.get("/api/v1/query", params={"query": "up"})
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
            r = r.json()
            up = {s["metric"]["job"]: s["value"][1] for s in r.get("data", {}).get("result", [])}
            return up == {job: "1" for job in ports}

        try:
            stack.wait_for(all_up, what="Prometheus to scrape operator, server and worker", timeout=90)
        except AssertionError as exc:
            log.flush()
            tail = (tmp_path / "prometheus.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n--- prometheus log (tail) ---\n{tail}") from None
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


def test_the_token_is_in_no_log_and_no_event(stack: Stack) -> None:
    """After registrations, runs, a killed pod and a scale-down: the logs of every pod of the install
    (operator, server, its token bootstrap, worker pods, current and previous containers) and every
    Event of the namespace hold the token 0 times."""
    pods = stack.kube.json("-n", stack.ns, "get", "pods")["items"]
    kinds = {p["metadata"].get("labels", {}).get("app.kubernetes.io/component", "worker") for p in pods}
    assert {"operator", "server"} <= kinds and stack.pods("fleet"), kinds
    found = []
    for p in pods:
        name = p["metadata"]["name"]
        for c in p["spec"]["containers"] + p["spec"].get("initContainers", []):
            for previous in ([], ["--previous"]):
                out = stack.kube.run("-n", stack.ns, "logs", name, "-c", c["name"], *previous, check=False)
                if stack.token in out.stdout:
                    found.append(f"pod {name} container {c['name']} {' '.join(previous)}")
    events = stack.kube.run("-n", stack.ns, "get", "events", "-o", "json").stdout
    if stack.token in events:
        found.append("events")
    assert not found, f"the token is in: {found}"


def test_deleting_the_fleet_deregisters_its_workers_and_its_pods_go(stack: Stack) -> None:
    names = {w["name"] for w in stack.lw("fleet")["status"]["workers"]}
    assert names and names <= stack.worker_names()
    stack.kube.run("-n", stack.ns, "delete", "lw", "fleet", "gpu", "--timeout=180s", timeout=200)
    assert not names & stack.worker_names()
    stack.wait_for(lambda: not stack.pods("fleet") or None, what="the fleet's pods to go", timeout=120)


def test_a_fleet_with_parallelism_auto_splits_one_run_over_its_pods(stack: Stack) -> None:
    """Issue 11 as a user runs it: the fleet default ``docker.parallelism: auto`` in ``spec.workerConfig``
    (the unmodified client refuses the key per run), one run from the real client, shards on both pods."""
    label = "e2e-split"
    config = {**WORKER_CONFIG, "docker.parallelism": "auto", "docker.shard_size": 10}
    stack.kube.apply([fleet("split", 2, labels=[label], workerConfig=config)], ns=stack.ns)
    stack.kube.wait_condition(
        stack.ns, "lightlyworker/split", "jsonpath={.status.readyReplicas}=2", 300, operator_selector=OPERATOR_SELECTOR
    )
    table = stack.kube.run("-n", stack.ns, "get", "lw", "split").stdout
    assert "SHARDS" in table.split("\n")[0], table
    stack.client.set_dataset_id_by_name(stack.dataset)
    sid = stack.client.schedule_compute_worker_run(
        worker_config={"shutdown_when_job_finished": False}, selection_config=SELECTION, runs_on=[label]
    )
    stack.wait_completed(sid)
    r = httpx.get(stack.url + paths.scheduled_shards(sid), params={"token": stack.token}, timeout=30)
    assert r.status_code == 200, r.text
    plan = r.json()
    shards = plan["shards"]
    assert plan["total"] == N_IMAGES and len(shards) == N_IMAGES // 10, plan
    # each shard was taken once and finished whole; the run's end retired them (CANCELED, results deleted)
    assert all(s["attempts"] == 1 and s["processed"] == s["stop"] - s["start"] for s in shards), shards
    assert {s["state"] for s in shards} == {"CANCELED"} and all("ended" in s["message"] for s in shards), shards
    holders = {s["workerId"] for s in shards}
    ids = {w["workerId"] for w in stack.lw("split")["status"]["workers"]}
    assert holders == ids and len(ids) == 2, (holders, ids, stack.kube.diagnostics(stack.ns, OPERATOR_SELECTOR))
    run = stack.client.get_compute_worker_run_from_scheduled_run(sid)
    tags = stack.client.get_compute_worker_run_tags(run.id)
    selected = stack.client.export_filenames_by_tag_name(tags[0].name).splitlines()
    assert len(selected) == SELECTION["n_samples"] and len(set(selected)) == len(selected)
    stack.kube.run("-n", stack.ns, "delete", "lw", "split", "--timeout=180s", timeout=200)
