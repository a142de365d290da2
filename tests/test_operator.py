"""The real operator (kopf, in process) against the Kubernetes emulator and a real API server.

Pods never run in the emulator: tests set pod status themselves (Running/Ready, Unschedulable,
ImagePullBackOff) and act as workers over the API (claiming runs) to make workers busy.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

# the operator's timers read these when its handlers are imported
os.environ["LIGHTLY_OPERATOR_RESYNC_SECONDS"] = "0.3"
os.environ["LIGHTLY_OPERATOR_SWEEP_SECONDS"] = "0.5"

from conftest import Api, Backend, ServerProcess, backend
from flows import config, dataset, lock, ok, schedule
from lightly_operator import handlers
from lightly_operator.settings import OperatorSettings

if TYPE_CHECKING:
    from k8s.fixtures import K8s

pytest_plugins = ("k8s.fixtures",)

ROOT = Path(__file__).resolve().parent.parent
CRD = str(ROOT / "crds" / "lightlyworkers.lightly.ai.yaml")
NS = "default"


@pytest.fixture(scope="module")
def api_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with backend("sqlite", tmp_path_factory.mktemp("operator-api")) as b:
        yield b


@pytest.fixture(scope="module")
def api_server(api_backend: Backend) -> ServerProcess:
    return api_backend.start_server()


class Env:
    """One test's world: emulator, API server, a user's token, and helpers."""

    def __init__(self, k8s: K8s, server: ServerProcess, token: str, settings: OperatorSettings) -> None:
        self.k8s, self.server, self.token, self.settings = k8s, server, token, settings
        self.api = Api(server.url, token)

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        self.k8s.kubectl("apply", "--validate=false", "-f", "-", input=text)

    def token_secret(self, token: str | None = None, name: str = "lightly-token", key: str = "token") -> None:
        value = base64.b64encode((token or self.token).encode()).decode()
        self.apply(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": {key: value}}
        )

    def fleet(self, name: str = "fleet", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "lightly.ai/v1alpha1",
            "kind": "LightlyWorker",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"api": {"tokenSecretRef": {"name": "lightly-token"}}, **spec},
        }
        self.apply(body)
        return body

    def lw(self, name: str = "fleet") -> dict[str, Any]:
        return self.k8s.get("lightlyworkers.lightly.ai", name, NS) or {}

    def status(self, name: str = "fleet") -> dict[str, Any]:
        return self.lw(name).get("status") or {}

    def condition(self, ctype: str, name: str = "fleet") -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == ctype), {})

    def pods(self, name: str = "fleet") -> list[dict[str, Any]]:
        items = self.k8s.list("pods", namespace=NS, labels=f"lightly.ai/fleet={name}")
        return sorted(
            (p for p in items if not p["metadata"].get("deletionTimestamp")),
            key=lambda p: int(p["metadata"]["labels"]["lightly.ai/worker-index"]),
        )

    def set_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        r = self.k8s.http.patch(
            f"/api/v1/namespaces/{NS}/pods/{name}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200, r.text

    def run_pods(self, name: str = "fleet") -> None:
        for p in self.pods(name):
            self.set_pod_status(p, {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})

    def api_workers(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in ok(self.api.get("/v1/docker/worker"))}

    def wait(self, predicate: Any, what: str, timeout: float = 15.0) -> Any:
        return self.k8s.wait_for(predicate, timeout=timeout, what=what)

    def make_busy(self, worker_id: str) -> str:
        """Act as that worker: claim a scheduled run, so the API says it is busy."""
        ds, cid = dataset(self.api), config(self.api)
        sid = schedule(self.api, ds, cid)
        ok(lock(self.api, ds, worker_id, sid), 204)
        return sid


@pytest.fixture
def env(k8s: K8s, api_server: ServerProcess, api_backend: Backend) -> Iterator[Env]:
    settings = OperatorSettings(
        api_url=api_server.url,
        worker_image="lightly-worker:test",
        cluster_name=f"c{secrets.token_hex(3)}",
        resync_seconds=0.3,
        sweep_seconds=0.5,
        orphan_grace_seconds=0.0,
        call_timeout_seconds=2.0,
        offline_grace_seconds=3600.0,
    )
    handlers.configure(settings)
    e = Env(k8s, api_server, api_backend.token(), settings)
    k8s.kubectl("apply", "--validate=false", "-f", CRD)
    e.token_secret()
    yield e


@contextlib.contextmanager
def running(env: Env) -> Iterator[None]:
    with env.k8s.operator():
        env.k8s.wait_watching("lightlyworkers.lightly.ai")
        env.k8s.wait_watching("pods")
        yield


def test_apply_registers_workers_and_runs_pods(env: Env) -> None:
    with running(env):
        env.fleet(replicas=2, labels=["gpu"], workerConfig={"lightly.loader.batch_size": 16})
        pods = env.wait(lambda: len(env.pods()) == 2 and env.pods(), "two pods")
        workers = env.wait(lambda: len(env.status().get("workers") or []) == 2 and env.status()["workers"], "status")
        api = env.api_workers()
        prefix = f"k8s.{env.settings.cluster_name}.{NS}.fleet."
        assert sorted(api) == [prefix + "0", prefix + "1"]
        assert all(w["labels"] == ["gpu"] for w in api.values())
        assert [w["workerId"] for w in workers] == [api[prefix + "0"]["id"], api[prefix + "1"]["id"]]
        c = pods[0]["spec"]["containers"][0]
        assert c["args"] == [f"worker.worker_id={api[prefix + '0']['id']}", "lightly.loader.batch_size=16"]
        assert c["image"] == "lightly-worker:test"
        assert {"name": "LIGHTLY_SERVER_LOCATION", "value": env.server.url} in c["env"]
        assert env.token not in yaml.safe_dump(pods) and env.token not in yaml.safe_dump(env.lw())
        assert env.condition("Registered")["status"] == "True"
        assert env.condition("Ready")["status"] == "False"
        env.run_pods()
        env.wait(lambda: env.condition("Ready").get("status") == "True", "Ready")
        st = env.status()
        assert (st["replicas"], st["readyReplicas"], st["busyReplicas"], st["phase"]) == (2, 2, 0, "Running")
        assert st["selector"] == "app.kubernetes.io/managed-by=lightly-operator,lightly.ai/fleet=fleet"
        assert env.condition("Degraded")["reason"] == "AsExpected"
        assert env.condition("Ready")["observedGeneration"] == env.lw()["metadata"]["generation"]
