"""The real operator (kopf, in process) against a real control plane (kube-apiserver, etcd, controller-manager).

There is no kubelet and no scheduler: tests play them by patching ``pods/status`` (Running/Ready,
Unschedulable, ImagePullBackOff) and act as workers over the Lightly API (claiming runs) to make workers busy.
Every test has its own namespace (``env.ns``) and cluster name, so worker names never collide.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from conftest import Api, Backend, ServerProcess, backend
from flows import config, dataset, lock, ok, schedule, scheduled_state
from kube.harness import pod_running, pod_unschedulable, pod_waiting
from lightly_operator import handlers
from lightly_operator.policy import SECRET_LABEL
from lightly_operator.settings import OperatorSettings
from lightly_server.auth import hash_token

if TYPE_CHECKING:
    from kube.harness import Kube

pytest_plugins = ("kube.fixtures",)

ROOT = Path(__file__).resolve().parent.parent
LW = "lightlyworkers.lightly.ai"
UNREACHABLE_API = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def api_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with backend("sqlite", tmp_path_factory.mktemp("operator-api")) as b:
        yield b


@pytest.fixture(scope="module")
def api_server(api_backend: Backend) -> ServerProcess:
    return api_backend.start_server()


class Env:
    """One test's world: a namespace of the control plane, the API server, a user's token, and helpers."""

    def __init__(self, kube: Kube, server: ServerProcess, token: str, settings: OperatorSettings) -> None:
        self.kube, self.server, self.token, self.settings = kube, server, token, settings
        self.app = handlers.build_operator(settings)  # its Kubernetes client reads $KUBECONFIG: the kube fixture's
        self.ns = kube.namespace
        self.api = Api(server.url, token)

    def apply(self, manifest: dict[str, Any] | str) -> None:
        self.kube.apply(manifest)

    def token_secret(
        self, token: str | None = None, name: str = "lightly-token", key: str = "token", opted_in: bool = True
    ) -> None:
        """The token Secret; ``opted_in``: with the label that lets fleets use it (``policy.SECRET_LABEL``)."""
        self.secret(name, {key: token or self.token}, opted_in)

    def secret(self, name: str, data: dict[str, str], opted_in: bool = True) -> None:
        labels = {SECRET_LABEL: "true"} if opted_in else {}
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": self.ns, "labels": labels},
                "data": encoded,
            }
        )

    def fleet(self, name: str = "fleet", **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": "lightly.ai/v1alpha1",
            "kind": "LightlyWorker",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"api": {"tokenSecretRef": {"name": "lightly-token"}}, **spec},
        }
        self.apply(body)
        return body

    def lw(self, name: str = "fleet") -> dict[str, Any]:
        return self.kube.get(LW, name) or {}

    def status(self, name: str = "fleet") -> dict[str, Any]:
        return self.lw(name).get("status") or {}

    def condition(self, ctype: str, name: str = "fleet") -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions") or [] if c["type"] == ctype), {})

    def pods(self, name: str = "fleet") -> list[dict[str, Any]]:
        items = self.kube.list("pods", labels=f"lightly.ai/fleet={name}")
        return sorted(
            (p for p in items if not p["metadata"].get("deletionTimestamp")),
            key=lambda p: int(p["metadata"]["labels"]["lightly.ai/worker-index"]),
        )

    def set_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        self.kube.set_pod_status(pod, status)

    def run_pods(self, name: str = "fleet") -> None:
        for p in self.pods(name):
            self.set_pod_status(p, pod_running())

    def events(self, *reasons: str) -> list[dict[str, Any]]:
        return [e for e in self.kube.events() if not reasons or e.get("reason") in reasons]

    def worker_name(self, index: int, fleet: str = "fleet") -> str:
        return self.settings.worker_name(self.ns, fleet, index)

    def api_workers(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in ok(self.api.get("/v1/docker/worker"))}

    def wait(self, predicate: Any, what: str, timeout: float = 20.0) -> Any:
        return self.kube.wait_for(predicate, timeout=timeout, what=what)

    def make_busy(self, worker_id: str) -> str:
        """Act as that worker: claim a scheduled run, so the API says it is busy."""
        ds, cid = dataset(self.api), config(self.api)
        sid = schedule(self.api, ds, cid)
        ok(lock(self.api, ds, worker_id, sid), 204)
        return sid


@pytest.fixture
def env(kube: Kube, lightly_crd: Path, api_server: ServerProcess, api_backend: Backend) -> Iterator[Env]:
    settings = OperatorSettings(
        api_url=api_server.url,
        worker_image="lightly-worker:test",
        cluster_name=f"c{secrets.token_hex(3)}",
        resync_seconds=0.3,
        sweep_seconds=0.5,
        orphan_grace_seconds=0.0,
        call_timeout_seconds=2.0,
        offline_grace_seconds=3600.0,
        namespaces=(kube.namespace,),
        # the tests' unreachable API, and the image of the autoscaling example
        allowed_api_urls=(api_server.url, UNREACHABLE_API),
        allowed_images=("lightly-worker:*", "eu.gcr.io/my-project/lightly-worker:*"),
    )
    e = Env(kube, api_server, api_backend.token(), settings)
    e.token_secret()
    yield e


@contextlib.contextmanager
def running(env: Env) -> Iterator[None]:
    """The operator as the CLI runs it: its registry and memo, the operator's own login handler."""
    with env.kube.operator(login=True, registry=env.app.registry, memo=env.app.memo()):
        yield


def test_apply_registers_workers_and_runs_pods(env: Env) -> None:
    with running(env):
        env.fleet(replicas=2, labels=["gpu"], workerConfig={"lightly.loader.batch_size": 16})
        pods = env.wait(lambda: len(env.pods()) == 2 and env.pods(), "two pods")
        workers = env.wait(lambda: len(env.status().get("workers") or []) == 2 and env.status()["workers"], "status")
        api = env.api_workers()
        w0, w1 = env.worker_name(0), env.worker_name(1)
        assert sorted(api) == sorted([w0, w1])
        assert all(w["labels"] == ["gpu"] for w in api.values())
        assert [w["workerId"] for w in workers] == [api[w0]["id"], api[w1]["id"]]
        c = pods[0]["spec"]["containers"][0]
        assert c["args"] == [
            f"worker.worker_id={api[w0]['id']}",
            "metrics.port=9100",
            "lightly.loader.batch_size=16",
        ]
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
        # the printer columns, as the apiserver's Table output has them
        header, row = env.kube.kubectl("get", "lw", "fleet").stdout.splitlines()
        assert header.split() == ["NAME", "DESIRED", "READY", "BUSY", "SHARDS", "PHASE", "AGE"]
        assert row.split()[:6] == ["fleet", "2", "2", "0", "0", "Running"]
        # the scale subresource, as HPA and kubectl scale see it
        scale = json.loads(env.kube.kubectl("get", "--raw", env.kube.resource_path(LW, "fleet") + "/scale").stdout)
        assert scale["spec"]["replicas"] == 2 and scale["status"]["replicas"] == 2
        assert scale["status"]["selector"] == st["selector"]


def _ready_fleet(env: Env, replicas: int, **spec: Any) -> list[dict[str, Any]]:
    env.fleet(replicas=replicas, **spec)
    env.wait(lambda: len(env.pods()) == replicas and len(env.status().get("workers") or []) == replicas, "pods")
    env.run_pods()
    env.wait(lambda: env.status().get("readyReplicas") == replicas, "ready")
    return env.status()["workers"]


def test_pod_problems_become_conditions_and_events(env: Env) -> None:
    with running(env):
        env.fleet(replicas=2)
        pods = env.wait(lambda: len(env.pods()) == 2 and env.pods(), "two pods")
        msg = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        env.set_pod_status(pods[0], pod_unschedulable(msg))
        env.set_pod_status(pods[1], pod_waiting("ImagePullBackOff", "unauthorized"))
        degraded = env.wait(
            lambda: (
                env.condition("Degraded").get("status") == "True"
                and "ImagePullBackOff" in env.condition("Degraded")["message"]
                and env.condition("Degraded")
            ),
            "Degraded",
        )
        assert degraded["reason"] == "Unschedulable" and msg in degraded["message"]
        assert "registryCredentials" in degraded["message"]
        assert env.status()["phase"] == "Degraded"
        events = env.wait(
            lambda: env.events("Unschedulable", "ImagePullBackOff"),
            "events",
        )
        assert {e["reason"] for e in events} >= {"Unschedulable"}
        env.run_pods()
        env.wait(lambda: env.condition("Degraded").get("status") == "False", "recovered")
        assert env.status()["phase"] == "Running"


def test_image_change_replaces_only_idle_workers(env: Env) -> None:
    with running(env):
        workers = _ready_fleet(env, 2)
        busy_id = workers[1]["workerId"]
        sid = env.make_busy(busy_id)
        env.wait(lambda: env.status().get("busyReplicas") == 1, "busy seen")
        assert env.status()["workers"][1]["currentRun"] == sid
        old = {p["metadata"]["name"] for p in env.pods()}
        env.fleet(replicas=2, image="lightly-worker:v2")
        env.wait(
            lambda: any(p["spec"]["containers"][0]["image"] == "lightly-worker:v2" for p in env.pods()),
            "idle worker replaced",
        )
        env.wait(lambda: env.condition("Progressing").get("reason") == "WaitingForBusyWorkers", "waiting")
        images = {
            int(p["metadata"]["labels"]["lightly.ai/worker-index"]): p["spec"]["containers"][0]["image"]
            for p in env.pods()
        }
        assert images == {0: "lightly-worker:v2", 1: "lightly-worker:test"}
        assert any(p["metadata"]["name"] in old for p in env.pods())  # the busy one kept its pod
        # the run ends: the busy worker is replaced too
        run = ok(env.api.post("/v1/docker/runs", json={"dockerVersion": "t", "scheduledId": sid}), 201)["id"]
        ok(env.api.put(f"/v1/docker/runs/{run}", json={"state": "COMPLETED"}), 204)
        env.wait(
            lambda: (
                all(p["spec"]["containers"][0]["image"] == "lightly-worker:v2" for p in env.pods())
                and len(env.pods()) == 2
            ),
            "all replaced",
        )
        # same worker ids: replacing a pod never re-registers
        assert [w["workerId"] for w in env.status()["workers"]] == [w["workerId"] for w in workers]


def test_scale_down_keeps_busy_removes_idle_and_deregisters(env: Env) -> None:
    with running(env):
        workers = _ready_fleet(env, 3)
        busy = workers[2]["workerId"]
        env.make_busy(busy)
        env.wait(lambda: env.status().get("busyReplicas") == 1, "busy seen")
        env.kube.kubectl("scale", "lw", "fleet", "--replicas=1")
        env.wait(lambda: len(env.pods()) == 1, "scaled down")
        assert env.pods()[0]["metadata"]["labels"]["lightly.ai/worker-index"] == "2"
        env.wait(lambda: len(env.api_workers()) == 1, "deregistered")
        assert [w["id"] for w in env.api_workers().values()] == [busy]
        assert [
            w["index"]
            for w in env.wait(lambda: len(env.status()["workers"]) == 1 and env.status()["workers"], "status")
        ] == [2]


HOLD = "test.lightly.ai/graceful-termination"


def _hold(env: Env, pod: str, finalizers: list[str] | None) -> None:
    """Play a kubelet's graceful termination: with the finalizer a deleted pod stays Terminating."""
    patch = json.dumps({"metadata": {"finalizers": finalizers}})
    env.kube.kubectl("patch", "pod", pod, "--type=merge", "-p", patch)


def test_a_replica_removed_by_a_scale_down_never_gets_its_pod_back(env: Env) -> None:
    """The scale-down deletes replica 2's (idle) pod. While the pod terminates its worker looks busy (it took a
    run in its last seconds, or the API's view is older than the delete; an unreachable API makes everyone
    look busy too). The replica is still the one removed: its pod is not recreated and no other pod goes."""
    from prometheus_client import generate_latest

    with running(env):
        workers = _ready_fleet(env, 3)
        before = {p["metadata"]["name"] for p in env.pods()}
        doomed = env.pods()[2]["metadata"]["name"]
        _hold(env, doomed, [HOLD])
        try:
            env.kube.kubectl("scale", "lw", "fleet", "--replicas=2")
            env.wait(lambda: (env.kube.get("pods", doomed) or {})["metadata"].get("deletionTimestamp"), "terminating")
            ds = dataset(env.api)
            sid = schedule(env.api, ds, config(env.api))
            ok(lock(env.api, ds, workers[2]["workerId"], sid), 204)
            env.wait(lambda: env.status().get("busyReplicas") == 1, "the terminating worker seen busy")
            time.sleep(1.0)  # a few resyncs with replica 2 busy and its pod terminating
        finally:
            _hold(env, doomed, None)
        env.wait(lambda: not env.kube.get("pods", doomed), "pod 2 gone")
        env.wait(lambda: len(env.api_workers()) == 2, "replica 2 deregistered")
        deadline = time.monotonic() + 3.0  # a few resyncs and pod events more: nothing comes back
        while time.monotonic() < deadline:
            assert {p["metadata"]["name"] for p in env.pods()} == before - {doomed}
            time.sleep(0.1)
        assert sorted(env.api_workers()) == [env.worker_name(0), env.worker_name(1)]
        assert [w["index"] for w in env.status()["workers"]] == [0, 1]
        # the run the removed worker held went back to the queue
        assert scheduled_state(env.api, ds, sid) == "OPEN"
        text = generate_latest(env.app.reconciler.metrics.registry).decode()
    assert 'lightly_operator_pod_actions_total{action="create"} 3.0' in text
    assert 'lightly_operator_pod_actions_total{action="delete"} 1.0' in text


def test_autoscaling_follows_the_queue(env: Env) -> None:
    with running(env):
        env.fleet(
            labels=["gpu"],
            autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 3, "scaleDownDelaySeconds": 0},
        )
        env.wait(lambda: env.status().get("phase") == "ScaledToZero", "zero")
        cid = config(env.api)
        sids = [schedule(env.api, dataset(env.api), cid, runs_on=["gpu"]) for _ in range(5)]
        schedule(env.api, dataset(env.api), cid, runs_on=["cpu"])  # not for this fleet
        env.wait(lambda: len(env.pods()) == 3, "scaled to max")
        env.wait(lambda: env.status().get("desiredReplicas") == 3, "status follows")
        for sid in sids:
            ok(env.api.put(f"/v1/datasets/{_dataset_of(env, sid)}/docker/worker/schedule/{sid}"), 204)
        env.wait(lambda: len(env.pods()) == 0 and env.status().get("phase") == "ScaledToZero", "back to zero")


def _dataset_of(env: Env, sid: str) -> str:
    rows = ok(env.api.get("/v1/docker/worker/schedule", params={"state": "OPEN", "labels": ["gpu", "cpu"]}))
    return next(r["datasetId"] for r in rows if r["id"] == sid)


def test_token_rotation_rolls_the_fleet(env: Env) -> None:
    with running(env):
        _ready_fleet(env, 2)
        before = {p["metadata"]["name"] for p in env.pods()}
        checksum = env.pods()[0]["metadata"]["annotations"]["lightly.ai/spec-checksum"]
        env.token_secret(token=env.token)  # unchanged content: nothing rolls
        new_token = _new_token_for_same_user(env)
        env.token_secret(token=new_token)
        env.wait(
            lambda: (
                env.pods() and all(p["metadata"]["name"] not in before for p in env.pods()) and len(env.pods()) == 2
            ),
            "rolled",
        )
        assert env.pods()[0]["metadata"]["annotations"]["lightly.ai/spec-checksum"] != checksum


def _new_token_for_same_user(env: Env) -> str:
    """A second token of the same user, as an admin rotating it would create."""
    db = env.server.proc.args[env.server.proc.args.index("--database") + 1]
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        uid = conn.execute("SELECT user_id FROM tokens WHERE token_hash = ?", (hash_token(env.token),)).fetchone()[0]
        name = conn.execute("SELECT name FROM users WHERE id = ?", (uid,)).fetchone()[0]
    out = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", db, "--user", name],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def test_missing_secret_and_invalid_token(env: Env) -> None:
    with running(env):
        env.fleet(name="nosecret", api={"tokenSecretRef": {"name": "absent"}})
        cond = env.wait(
            lambda: (
                env.condition("Registered", "nosecret").get("reason") == "SecretNotFound"
                and env.condition("Registered", "nosecret")
            ),
            "SecretNotFound",
        )
        assert f"{env.ns}/absent" in cond["message"] and "create it" in cond["message"]
        env.token_secret(token="not-a-valid-token", name="bad-token")
        env.fleet(name="badtoken", api={"tokenSecretRef": {"name": "bad-token"}})
        cond = env.wait(
            lambda: (
                env.condition("Degraded", "badtoken").get("reason") == "TokenRejected"
                and env.condition("Degraded", "badtoken")
            ),
            "TokenRejected",
        )
        assert "rejected the token" in cond["message"]
        assert "not-a-valid-token" not in yaml.safe_dump(env.lw("badtoken"))
        assert env.pods("nosecret") == [] and env.pods("badtoken") == []
        events = env.wait(lambda: env.events("TokenRejected"), "event")
        assert all("not-a-valid-token" not in e.get("message", "") for e in events)


def test_api_down_then_recovery(env: Env, api_backend: Backend) -> None:
    with running(env):
        env.fleet(name="far", replicas=1, api={"url": UNREACHABLE_API, "tokenSecretRef": {"name": "lightly-token"}})
        cond = env.wait(
            lambda: (
                env.condition("Degraded", "far").get("reason") == "ApiUnreachable" and env.condition("Degraded", "far")
            ),
            "ApiUnreachable",
        )
        assert "cannot reach the Lightly API at http://127.0.0.1:9" in cond["message"]
        env.fleet(name="far", replicas=1)  # point it at the real server: it recovers
        env.wait(lambda: len(env.pods("far")) == 1, "recovered")
        env.run_pods("far")
        env.wait(lambda: env.condition("Degraded", "far").get("status") == "False", "not degraded")


def test_delete_deregisters_and_removes_everything(env: Env) -> None:
    with running(env):
        _ready_fleet(env, 2)
        assert len(env.api_workers()) == 2
        env.kube.kubectl("delete", "lw", "fleet", "--timeout=20s")
        env.wait(lambda: not env.lw(), "gone")
        assert env.api_workers() == {}
        assert env.kube.list("pods") == []


def test_skip_annotation_and_missing_secret_never_wedge_deletion(env: Env) -> None:
    with running(env):
        _ready_fleet(env, 1)
        env.kube.kubectl("annotate", "lw", "fleet", "lightly.ai/skip-deregistration=true")
        env.kube.kubectl("delete", "lw", "fleet", "--timeout=20s")
        env.wait(lambda: not env.lw(), "released")
        assert len(env.api_workers()) == 1  # left registered on purpose
        env.fleet(name="other", replicas=1)
        env.wait(lambda: len(env.pods("other")) == 1, "pod")
        env.kube.delete("secrets", "lightly-token")
        env.kube.kubectl("delete", "lw", "other", "--timeout=20s")
        env.wait(lambda: not env.lw("other"), "released without a secret")
        warn = env.wait(
            lambda: env.events("DeregistrationImpossible"),
            "DeregistrationImpossible event",
        )
        assert "stay registered" in warn[0]["message"]


def test_deregistration_times_out_with_an_event(env: Env) -> None:
    with running(env):
        _ready_fleet(env, 1, deregistration={"timeoutSeconds": 1})
        wid = env.status()["workers"][0]["workerId"]
        env.fleet(
            replicas=1,
            deregistration={"timeoutSeconds": 1},
            api={"url": UNREACHABLE_API, "tokenSecretRef": {"name": "lightly-token"}},
        )
        env.kube.kubectl("delete", "lw", "fleet", "--wait=false")
        env.wait(lambda: not env.lw(), "released after the timeout", timeout=30)
        warn = env.wait(
            lambda: env.events("DeregistrationTimedOut"),
            "DeregistrationTimedOut event",
        )
        assert wid in warn[0]["message"]


def test_a_failed_deregistration_is_retried_until_the_timeout(env: Env) -> None:
    """kopf keeps handler progress in memory: the retry after a TemporaryError still comes (its touch)."""
    with running(env):
        _ready_fleet(env, 1, deregistration={"timeoutSeconds": 4})
        env.fleet(
            replicas=1,
            deregistration={"timeoutSeconds": 4},
            api={"url": UNREACHABLE_API, "tokenSecretRef": {"name": "lightly-token"}},
        )
        env.kube.kubectl("delete", "lw", "fleet", "--wait=false")
        # the first attempt fails within the timeout (TemporaryError, retried after 4 s); the retry gives up
        env.wait(lambda: not env.lw(), "released after the retry", timeout=40)
        env.wait(lambda: env.events("DeregistrationTimedOut"), "DeregistrationTimedOut event")


def test_orphan_sweep_deregisters_unowned_workers(env: Env) -> None:
    ghost = ok(
        env.api.post("/v1/docker/worker", json={"name": env.worker_name(0, "deleted-fleet"), "workerType": "FULL"}),
        201,
    )["id"]
    stray = ok(env.api.post("/v1/docker/worker", json={"name": env.worker_name(7), "workerType": "FULL"}), 201)["id"]
    mine = ok(env.api.post("/v1/docker/worker", json={"name": "laptop-worker", "workerType": "FULL"}), 201)["id"]
    with running(env):
        _ready_fleet(env, 1)
        env.wait(
            lambda: (
                ghost not in {w["id"] for w in env.api_workers().values()}
                and stray not in {w["id"] for w in env.api_workers().values()}
            ),
            "swept",
        )
        ids = {w["id"] for w in env.api_workers().values()}
        assert mine in ids and env.status()["workers"][0]["workerId"] in ids


def test_operator_restart_never_registers_twice(env: Env) -> None:
    with running(env):
        workers = _ready_fleet(env, 2)
    with running(env):
        env.fleet(replicas=3)
        env.wait(lambda: len(env.status().get("workers") or []) == 3, "third worker")
        again = env.status()["workers"]
    assert [w["workerId"] for w in again[:2]] == [w["workerId"] for w in workers]
    names = [w["name"] for w in env.api_workers().values()]
    assert len(names) == len(set(names)) == 3


def test_example_manifests_reconcile(env: Env) -> None:
    key = json.dumps({"type": "service_account", "private_key_id": "k"})
    env.secret("lightly-registry-key", {"container-credentials.json": key})
    with running(env):
        for path in sorted((ROOT / "examples").glob("*.yaml")):
            env.kube.kubectl("apply", "-n", env.ns, "-f", str(path))
        basic = env.wait(lambda: len(env.pods("gpu-fleet")) == 2 and env.pods("gpu-fleet"), "basic fleet pods")
        spec = basic[0]["spec"]
        assert {v["name"] for v in spec["volumes"]} >= {"input", "lightly", "dshm", "output", "lightly-token"}
        # the autoscaling example starts at zero and owns a pull Secret made from the key file
        pull = env.wait(lambda: env.kube.get("secrets", "elastic-fleet-registry"), "pull secret")
        assert pull["type"] == "kubernetes.io/dockerconfigjson"
        env.wait(lambda: env.status("elastic-fleet").get("phase") == "ScaledToZero", "elastic at zero")
        # the bucket fleet (no input/lightly volume) is accepted and follows the queue from zero as well
        env.wait(lambda: env.status("bucket-fleet").get("phase") == "ScaledToZero", "bucket fleet at zero")


def test_metrics_describe_the_fleets(env: Env) -> None:
    from prometheus_client import generate_latest

    with running(env):
        _ready_fleet(env, 2)
        text = generate_latest(env.app.reconciler.metrics.registry).decode()
    assert 'lightly_operator_fleets{phase="Running"} 1.0' in text
    assert 'lightly_operator_workers{state="OFFLINE"} 2.0' in text
    assert 'lightly_operator_registrations_total{action="register",outcome="ok"} 2.0' in text
    assert "lightly_operator_reconcile_duration_seconds_count" in text
    assert 'lightly_operator_pod_actions_total{action="create"} 2.0' in text
    assert env.token not in text and '"fleet"' not in text and '"default"' not in text  # no names in labels


def test_leader_election_lets_one_replica_act(env: Env) -> None:
    from lightly_operator.leader import LeaseLock

    client = env.kube.api_client()
    a = LeaseLock(client, env.ns, identity="replica-a", duration=2)
    b = LeaseLock(client, env.ns, identity="replica-b", duration=2)
    assert a.try_acquire() is True
    assert b.try_acquire() is False  # a holds it
    assert a.try_acquire() is True  # renewals keep it
    lease = env.kube.get("leases.coordination.k8s.io", "lightly-operator")
    assert lease["spec"]["holderIdentity"] == "replica-a"
    env.wait(lambda: b.try_acquire(), "a's lease to expire", timeout=10)
    assert env.kube.get("leases.coordination.k8s.io", "lightly-operator")["spec"]["holderIdentity"] == "replica-b"
    assert a.try_acquire() is False


def test_cluster_wide_operator_reconciles_fleets_in_any_namespace(env: Env) -> None:
    """The default scope (no --namespace): kopf watches LightlyWorkers and pods in every namespace."""
    from dataclasses import replace

    from lightly_operator.cli import build_parser, watch_scope

    settings = replace(env.settings, namespaces=())
    app = handlers.build_operator(settings)
    scope = watch_scope(build_parser().parse_args([]).namespace)
    with env.kube.operator(login=True, registry=app.registry, memo=app.memo(), **scope):
        _ready_fleet(env, 1)
        assert sorted(env.api_workers()) == [settings.worker_name(env.ns, "fleet", 0)]


def test_the_cli_process_runs_the_operator_with_leader_election(env: Env, tmp_path: Path) -> None:
    """``lightly-operator`` as its own process: settings from the environment, a Lease, SIGTERM ends it cleanly."""
    import signal

    proc_env = {
        **{k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")},
        "KUBECONFIG": str(env.kube.kubeconfig),
        "LIGHTLY_SERVER_LOCATION": env.server.url,
        "LIGHTLY_CLUSTER_NAME": env.settings.cluster_name,
        "LIGHTLY_WORKER_IMAGE": "lightly-worker:cli",
        "LIGHTLY_OPERATOR_ORPHAN_GRACE_SECONDS": "0",
        "LIGHTLY_OPERATOR_RESYNC_SECONDS": "0.3",
        "LIGHTLY_OPERATOR_SWEEP_SECONDS": "0.5",
    }
    proc_env.pop("KUBERNETES_SERVICE_HOST", None)
    args = ["--namespace", env.ns, "--leader-election", "on", "--lease-namespace", env.ns]
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lightly_operator.cli", *args, "--metrics-port", "0", "--health-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=proc_env,
        )
    try:
        lease = env.wait(lambda: env.kube.get("leases.coordination.k8s.io", "lightly-operator"), "the Lease")
        assert lease["spec"]["holderIdentity"]
        env.fleet(replicas=1)
        pods = env.wait(lambda: env.pods(), f"the pod (operator log: {log})")
        assert pods[0]["spec"]["containers"][0]["image"] == "lightly-worker:cli"
        env.wait(lambda: env.status().get("workers"), "a registered worker")
        assert sorted(env.api_workers()) == [env.worker_name(0)]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()
    released = env.kube.get("leases.coordination.k8s.io", "lightly-operator")["spec"]
    assert not released.get("holderIdentity"), released  # a successor need not wait for it to expire


def test_one_big_split_run_grows_the_fleet_and_it_shrinks_after(env: Env) -> None:
    """Issue 11: OPEN shards are queue depth, shard holders are busy and counted in ``status.shardsInFlight``."""
    from flows import register, run_state, start_run
    from lightly_protocol import paths
    from lightly_protocol.shards import WorkData, encode_listing

    def split_run(n_files: int, labels: list[str]) -> str:
        coordinator = register(env.api, labels=labels)  # outside the fleet
        ds = dataset(env.api)
        sid = schedule(env.api, ds, config(env.api), runs_on=labels)
        ok(lock(env.api, ds, coordinator, sid), 204)
        rid = start_run(env.api, ds, sid)
        query = {"workerId": coordinator, "runId": rid, "shardSize": 1}
        listing = encode_listing([f"img-{i}.jpg" for i in range(n_files)])
        ok(env.api.put(paths.scheduled_shards(sid), params=query, content=listing))
        return rid

    with running(env):
        env.fleet(
            labels=["gpu"],
            autoscaling={"enabled": True, "minReplicas": 0, "maxReplicas": 3, "scaleDownDelaySeconds": 0},
        )
        env.wait(lambda: env.status().get("phase") == "ScaledToZero", "zero")
        split_run(2, ["gpu", "big"])  # not this fleet's: its labels lack "big"
        rid = split_run(20, ["gpu"])
        env.wait(lambda: len(env.pods()) == 3 and env.status().get("desiredReplicas") == 3, "scaled to max")
        assert env.status().get("shardsInFlight") == 0
        workers = env.wait(lambda: len(env.status().get("workers") or []) == 3 and env.status()["workers"], "workers")
        for w in workers[:2]:  # two of the fleet's workers take a shard each
            assert WorkData.model_validate(ok(env.api.get(paths.worker_work(w["workerId"])))).shard is not None
        env.wait(lambda: env.status().get("shardsInFlight") == 2, "shards in flight")
        env.wait(lambda: env.status().get("busyReplicas") == 2, "shard holders are busy")
        run_state(env.api, rid, "COMPLETED")  # the run ends: its shards are canceled
        env.wait(lambda: len(env.pods()) == 0 and env.status().get("phase") == "ScaledToZero", "back to zero")
        assert env.status().get("shardsInFlight") == 0


def test_the_operator_command_logs_no_token_even_at_debug(env: Env, tmp_path: Path) -> None:
    """``lightly-operator`` as the chart runs it (its own process, its own logging), at DEBUG: it registers
    a fleet's workers and polls the API several times, and its log holds the token 0 times (httpx would
    print every request URL, ``?token=...``, at INFO)."""
    log_path = tmp_path / "operator.log"
    environ = {
        **os.environ,
        "KUBECONFIG": str(env.kube.kubeconfig),
        "LIGHTLY_SERVER_LOCATION": env.server.url,
        "LIGHTLY_CLUSTER_NAME": env.settings.cluster_name,
        "LIGHTLY_WORKER_IMAGE": "lightly-worker:test",
        "LIGHTLY_OPERATOR_RESYNC_SECONDS": "0.3",
        "LIGHTLY_OPERATOR_SWEEP_SECONDS": "0.5",
    }
    argv = [sys.executable, "-m", "lightly_operator.cli", "--namespace", env.ns, "--metrics-port", "0"]
    argv += ["--health-port", "0", "--leader-election", "off", "--log-level", "DEBUG"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)
        try:
            env.fleet(replicas=1)

            def registered() -> Any:
                if proc.poll() is not None:
                    raise AssertionError(f"the operator exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                return env.status().get("workers") and env.api_workers()

            env.wait(registered, "the operator process to register the fleet's worker", timeout=60)
            env.wait(lambda: env.condition("Registered").get("status") == "True", "Registered")
        finally:
            proc.terminate()
            proc.wait(30)
    text = log_path.read_text(errors="replace")
    assert "lightly_operator" in text or "kopf" in text, f"the operator logged nothing at DEBUG:\n{text[-2000:]}"
    lines = [line for line in text.splitlines() if env.token in line]
    assert not lines, "the operator's log holds the token:\n" + "\n".join(lines[:5])


def _refusal(env: Env, reason: str, name: str = "fleet") -> dict[str, Any]:
    def refused() -> dict[str, Any] | None:
        c = env.condition("Degraded", name)
        return c if c.get("reason") == reason else None

    return env.wait(refused, f"Degraded {reason} on {name}")


def test_a_fleet_that_asks_for_more_than_the_policy_allows_is_refused_with_the_reason(env: Env) -> None:
    """podTemplate cannot get around the policy: what is checked is the pod the operator would build."""
    with running(env):
        env.fleet(
            name="escalate",
            replicas=1,
            podTemplate={
                "spec": {
                    "hostNetwork": True,
                    "serviceAccountName": "default",
                    "containers": [
                        {"name": "worker", "image": "evil.example/miner:1", "securityContext": {"privileged": True}}
                    ],
                    "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                }
            },
        )
        env.fleet(
            name="exfiltrate",
            replicas=1,
            api={"url": "http://attacker.example", "tokenSecretRef": {"name": "lightly-token"}},
        )
        env.fleet(
            name="foreign-registry",
            replicas=1,
            registryCredentials={"registry": "attacker.example", "secretRef": {"name": "lightly-token"}},
        )
        c = _refusal(env, "PolicyViolation", "escalate")
        for words in ("hostNetwork", "evil.example/miner:1", "privileged", "hostPath", "serviceAccountName default"):
            assert words in c["message"], c["message"]
        assert env.status("escalate")["phase"] == "Error"
        c = _refusal(env, "PolicyViolation", "exfiltrate")
        assert "spec.api.url http://attacker.example is not an allowed" in c["message"], c["message"]
        c = _refusal(env, "PolicyViolation", "foreign-registry")
        assert "registry attacker.example is not an allowed" in c["message"], c["message"]
        warned = {(e["reason"], e["type"], e["involvedObject"]["name"]) for e in env.events("PolicyViolation")}
        assert {("PolicyViolation", "Warning", n) for n in ("escalate", "exfiltrate", "foreign-registry")} <= warned
    # nothing was created nor registered for them
    assert not [p for n in ("escalate", "exfiltrate", "foreign-registry") for p in env.pods(n)]
    prefix = env.settings.name_prefix()
    assert not [w for w in env.api_workers() if w.startswith(prefix)]


def test_secrets_without_the_opt_in_label_are_not_used(env: Env) -> None:
    env.token_secret(name="plain-token", opted_in=False)
    env.secret("aws", {"key": "x"}, opted_in=False)
    with running(env):
        env.fleet(name="plain", replicas=1, api={"tokenSecretRef": {"name": "plain-token"}})
        c = _refusal(env, "SecretNotOptedIn", "plain")
        assert f"kubectl -n {env.ns} label secret plain-token {SECRET_LABEL}=true" in c["message"], c["message"]
        assert env.condition("Registered", "plain")["status"] == "False"
        env.fleet(
            name="envref",
            replicas=1,
            env=[{"name": "AWS_KEY", "valueFrom": {"secretKeyRef": {"name": "aws", "key": "key"}}}],
        )
        c = _refusal(env, "SecretNotOptedIn", "envref")
        assert "Secret " + env.ns + "/aws" in c["message"] and "AWS_KEY" in c["message"], c["message"]
        assert not env.pods("plain") and not env.pods("envref")
        # opting in is all it takes
        env.token_secret(name="plain-token", opted_in=True)
        env.wait(lambda: len(env.pods("plain")) == 1, "the opted-in fleet's pod", timeout=30)


def test_a_pod_the_apiserver_refuses_is_a_degraded_condition_and_a_warning_event(env: Env) -> None:
    """A real refusal (a ResourceQuota of 0 pods): the apiserver's own message in the condition and an Event."""
    env.apply(
        {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    )
    env.wait(lambda: (env.kube.get("resourcequotas", "no-pods") or {}).get("status", {}).get("hard"), "quota status")
    with running(env):
        env.fleet(replicas=1)
        c = _refusal(env, "PodRejected")
        assert "the apiserver refused pod fleet-0-" in c["message"] and "exceeded quota" in c["message"], c["message"]
        events = env.wait(lambda: env.events("PodRejected"), "the PodRejected Event")
        assert events[0]["type"] == "Warning" and "exceeded quota" in events[0]["message"], events
        env.kube.delete("resourcequotas", "no-pods")
        env.wait(lambda: len(env.pods()) == 1, "the pod, once the quota is gone", timeout=40)
        env.wait(lambda: env.condition("Degraded").get("reason") != "PodRejected", "PodRejected cleared", timeout=40)


def test_a_pull_secret_the_operator_does_not_own_is_never_overwritten(env: Env) -> None:
    env.secret("lightly-registry-key", {"container-credentials.json": json.dumps({"type": "service_account"})})
    env.secret("fleet-registry", {"precious": "data"}, opted_in=False)
    with running(env):
        env.fleet(replicas=1, registryCredentials={"secretRef": {"name": "lightly-registry-key"}})
        c = _refusal(env, "RegistrySecretNotOwned")
        assert f"Secret {env.ns}/fleet-registry exists and is not owned by LightlyWorker fleet" in c["message"], c
    kept = env.kube.get("secrets", "fleet-registry")
    assert kept and base64.b64decode(kept["data"]["precious"]).decode() == "data" and "type" not in kept.get("data", {})


def test_a_fleet_deleted_while_no_operator_runs_is_released_as_the_docs_say(env: Env) -> None:
    """docs/operator.md, "Deleting a fleet while no operator runs": the fleet stays Terminating; the documented
    ``kubectl patch`` removes the finalizer; its worker id stays registered until the documented call of the
    unmodified lightly client deregisters it."""
    with running(env):
        env.fleet(replicas=1)
        workers = env.wait(lambda: env.status().get("workers"), "the fleet's worker")
    wid = workers[0]["workerId"]
    env.kube.kubectl("delete", "lw", "fleet", "--wait=false")
    lw = env.wait(lambda: env.lw().get("metadata", {}).get("deletionTimestamp") and env.lw(), "deletionTimestamp")
    assert lw["metadata"]["finalizers"] == ["lightly.ai/deregister-workers"]
    time.sleep(2)
    assert env.lw(), "without an operator the fleet stays Terminating"
    env.kube.kubectl("patch", "lw", "fleet", "--type=json", "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
    env.kube.wait_deleted(LW, "fleet")
    assert wid in {w["id"] for w in env.api_workers().values()}, "the worker id is left registered"
    script = f"from lightly.api import ApiWorkflowClient; ApiWorkflowClient().delete_compute_worker({wid!r})"
    environ = {
        **os.environ,
        "LIGHTLY_SERVER_LOCATION": env.server.url,
        "LIGHTLY_TOKEN": env.token,
        "LIGHTLY_DID_VERSION_CHECK": "True",
    }
    out = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert wid not in {w["id"] for w in env.api_workers().values()}


def test_the_workers_trust_the_ca_the_operator_trusts(env: Env, tmp_path: Path) -> None:
    """An operator with LIGHTLY_CA_CERTS (the chart's apiCaCerts) gives each fleet an owned Secret with that
    CA, mounted into the pods and named by LIGHTLY_CA_CERTS: TLS on the bundled server works for workers too."""
    import dataclasses

    from test_tls import _write_pki

    ca, _cert, _key = _write_pki(tmp_path)
    with_ca = Env(env.kube, env.server, env.token, dataclasses.replace(env.settings, ca_certs=str(ca)))
    with running(with_ca):
        with_ca.fleet(replicas=1)
        pods = with_ca.wait(lambda: with_ca.pods() or None, "the fleet's pod")
        secret = with_ca.wait(lambda: env.kube.get("secrets", "fleet-api-ca"), "the CA Secret")
    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == ca.read_text()
    assert secret["metadata"]["ownerReferences"][0]["name"] == "fleet"
    spec = pods[0]["spec"]
    c = spec["containers"][0]
    assert {"name": "LIGHTLY_CA_CERTS", "value": "/var/run/secrets/lightly-ca/ca.crt"} in c["env"]
    assert {"name": "api-ca", "mountPath": "/var/run/secrets/lightly-ca", "readOnly": True} in c["volumeMounts"]
    assert any(v.get("secret", {}).get("secretName") == "fleet-api-ca" for v in spec["volumes"])
