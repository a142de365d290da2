"""A real Kubernetes cluster for the end-to-end suites: kubectl, bounded waits that explain themselves,
port-forwards, the project's images loaded into the cluster, and the Helm chart applied with kubectl.

The cluster is the one in ``LIGHTLY_E2E_KUBECONFIG`` (a dedicated variable, so a test run never touches
the cluster of your everyday ``KUBECONFIG`` by accident). Images are built with the container engine
(``CONTAINER_ENGINE``, see :mod:`lightly_devkit.engine`) and copied into the cluster by the command in
``LIGHTLY_E2E_LOAD_IMAGE`` with the image names appended (``kind load docker-image`` for kind,
``../shared/k8s-node/load-image`` for the single-node kit); without it the images must already be
where the cluster's nodes find them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from lightly_devkit.data import dataset_files
from lightly_devkit.envtest import kubectl_binary
from lightly_devkit.net import PROXY_VARS

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "lightly-worker-operator"
KUBECONFIG_ENV = "LIGHTLY_E2E_KUBECONFIG"
LOAD_IMAGE_ENV = "LIGHTLY_E2E_LOAD_IMAGE"
T = TypeVar("T")


def missing_reason() -> str | None:
    """None when an end-to-end cluster is configured, else why the suite cannot run."""
    path = os.environ.get(KUBECONFIG_ENV)
    if not path:
        return (
            f"no end-to-end cluster: set {KUBECONFIG_ENV} to the kubeconfig of a disposable cluster where pods run "
            f"(kind, k3d, ../shared/k8s-node) and {LOAD_IMAGE_ENV} to the command that loads local images into it"
        )
    if not Path(path).is_file():
        return f"{KUBECONFIG_ENV}={path} is not a file"
    return None


class Kube:
    """kubectl against one cluster, plus what a failing test needs to explain itself."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = kubeconfig
        self.binary = kubectl_binary()
        self.env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        self.env["KUBECONFIG"] = kubeconfig

    def run(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, *args]
        res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and res.returncode != 0:
            raise AssertionError(f"kubectl {shlex.join(args)} exited {res.returncode}:\n{res.stderr}{res.stdout}")
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def get(self, ns: str, kind: str, name: str) -> dict[str, Any] | None:
        res = self.run("-n", ns, "get", kind, name, "-o", "json", check=False)
        return json.loads(res.stdout) if res.returncode == 0 else None

    def apply(self, docs: list[dict[str, Any]] | str, ns: str | None = None) -> str:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        args = ["apply", "-f", "-"] + (["-n", ns] if ns else [])
        return self.run(*args, input=text).stdout

    def secret_value(self, ns: str, name: str, key: str) -> str:
        data = self.json("-n", ns, "get", "secret", name)["data"]
        return base64.b64decode(data[key]).decode()

    def diagnostics(self, ns: str, operator_selector: str | None = None) -> str:
        """Objects, events and logs of a namespace: what a failed wait prints."""
        parts = []

        def section(title: str, *args: str) -> None:
            res = self.run(*args, check=False, timeout=30)
            parts.append(f"--- {title}\n{res.stdout}{res.stderr}")

        section("objects", "-n", ns, "get", "lightlyworkers,deploy,pods,svc", "-o", "wide")
        section("lightlyworkers", "-n", ns, "get", "lightlyworkers", "-o", "yaml")
        section("events", "-n", ns, "get", "events", "--sort-by=.lastTimestamp")
        if operator_selector:
            section("operator log", "-n", ns, "logs", "-l", operator_selector, "--tail=150", "--all-containers")
        pods = self.run("-n", ns, "get", "pods", "-o", "name", check=False).stdout.split()
        for pod in pods[:8]:
            section(f"log {pod}", "-n", ns, "logs", pod, "--tail=40", "--all-containers", "--prefix")
        return "\n".join(parts)

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        *,
        what: str,
        timeout: float,
        ns: str,
        operator_selector: str | None = None,
        interval: float = 0.5,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; on timeout fail with the namespace's story."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                value = predicate()
            except (AssertionError, subprocess.SubprocessError) as exc:  # a transient kubectl failure
                value, last = None, exc
            if value:
                return value
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what} (last error: {last!r})\n"
            + self.diagnostics(ns, operator_selector)
        )

    def wait_condition(self, ns: str, target: str, condition: str, timeout: float, **kw: Any) -> None:
        """``kubectl wait`` (watch-driven); on timeout the namespace's story."""
        res = self.run(
            "-n",
            ns,
            "wait",
            target,
            f"--for={condition}",
            f"--timeout={int(timeout)}s",
            check=False,
            timeout=timeout + 30,
        )
        if res.returncode != 0:
            raise AssertionError(
                f"kubectl wait {target} --for={condition}: {res.stderr.strip()}\n" + self.diagnostics(ns, **kw)
            )

    @contextlib.contextmanager
    def port_forward(self, ns: str, target: str, port: int) -> Iterator[int]:
        """``kubectl port-forward TARGET :PORT``; yields the local port."""
        cmd = [self.binary, "--kubeconfig", self.kubeconfig, "-n", ns, "port-forward", target, f":{port}"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # "Forwarding from 127.0.0.1:PORT -> 8080"
            m = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not m:
                raise AssertionError(f"kubectl port-forward {target} :{port}: {line}{proc.stdout.read()[:2000]}")
            yield int(m.group(1))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def load_images(tags: list[str]) -> str:
    """Copy locally built images into the cluster with ``$LIGHTLY_E2E_LOAD_IMAGE``; say what was done."""
    cmd = os.environ.get(LOAD_IMAGE_ENV)
    if not cmd:
        return f"{LOAD_IMAGE_ENV} unset: assuming the cluster's nodes already have {', '.join(tags)}"
    start = time.monotonic()
    res = subprocess.run([*shlex.split(cmd), *tags], capture_output=True, text=True, timeout=1200)
    if res.returncode != 0:
        raise AssertionError(f"{cmd} {' '.join(tags)} exited {res.returncode}:\n{res.stderr[-3000:]}")
    return f"loaded {', '.join(tags)} in {time.monotonic() - start:.0f} s"


def render_chart(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """The chart's templates rendered by the real Helm engine (CRDs excluded: apply ``crds/`` first)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=release, namespace=namespace, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if not path.endswith("NOTES.txt"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


# ---------------------------------------------------------------------------- the installed stack

RELEASE = "lwo"


FULLNAME = f"{RELEASE}-lightly-worker-operator"


OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"


LABEL = "e2e"


N_IMAGES = 150


INPUT_CONFIGMAP = "e2e-images"


SELECTION = {"n_samples": 10, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


WORKER_CONFIG = {"embedding.input_size": 224, "lightly.loader.batch_size": 4, "worker.heartbeat_seconds": 2}


def require(reason: str | None) -> None:
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)


def image_values(tag: str, policy: str = "Never") -> dict[str, str]:
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


def input_configmap(name: str) -> dict[str, Any]:
    files = dataset_files(N_IMAGES)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name},
        "binaryData": {k: base64.b64encode(v).decode() for k, v in files.items()},
    }


def fleet(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "lightly.ai/v1alpha1",
        "kind": "LightlyWorker",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "labels": [LABEL],
            "api": {"tokenSecretRef": {"name": "lightly-token"}},
            "resources": {},  # this node has no GPU
            "input": {"configMap": {"name": INPUT_CONFIGMAP}},
            "workerConfig": WORKER_CONFIG,
            **spec,
        },
    }
