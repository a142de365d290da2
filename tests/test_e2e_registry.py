"""The seed's registry flow for real, on a cluster where pods run.

Lightly's setup: ``docker login -u _json_key --password-stdin REGISTRY < container-credentials.json``,
``docker pull`` of the worker image from a private registry, and later "update the worker": pull the
new tag and restart. With the operator these become ``spec.registryCredentials`` (a pull Secret made
from a container-credentials.json Secret) and a rollout when ``spec.image`` changes.

Here a real registry (Debian's ``docker-registry``, basic auth with the ``_json_key`` convention) holds
the worker image, pushed with the container engine after a ``login --password-stdin``. Then: pods pull
with the operator's pull Secret and a run completes; a wrong key, a missing Secret and a Secret
without the key file are explained in the fleet's conditions and Events, and fixing the Secret
recovers the fleet; a rotated key updates the pull Secret without restarting pods; a new tag rolls
out with ``WhenIdle`` (the busy worker finishes its run first) and, rolled back with ``Recreate``,
replaces pods at once, the run handed back and completed on the version rolled to.

Needs what tests/test_e2e_cluster.py needs, plus ``LIGHTLY_E2E_REGISTRY``: a ``host:port`` where this
suite may run a registry that the cluster's nodes reach over plain HTTP (the single-node kit:
``10.199.0.1:5000``), and the ``docker-registry`` and ``htpasswd`` commands (Debian:
``docker-registry``, ``apache2-utils``). Skips with the reason without them, except under ``CI=true``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cluster import Stack, fleet, require
from lightly_operator.policy import SECRET_LABEL

pytest_plugins = ("e2e_fixtures",)

REGISTRY_ENV = "LIGHTLY_E2E_REGISTRY"
KEY_SECRET = "lightly-registry-key"
KEY_FILE = "container-credentials.json"
V1, V2 = "0.1.0-e2e.1", "0.1.0-e2e.2"


def service_account_key(project: str) -> str:
    """A container-credentials.json of the shape Google issues, kept short: the test registry's
    htpasswd takes at most 255 characters and bcrypt compares only the first 72 bytes, so keys must
    differ early (a random project id). The operator itself passes keys of any length through."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": f"{project}-{secrets.token_hex(4)}",
            "private_key_id": secrets.token_hex(12),
            "client_email": f"worker@{project}.iam.gserviceaccount.com",
        }
    )


def _missing() -> str | None:
    if not os.environ.get(REGISTRY_ENV):
        return f"no registry address: set {REGISTRY_ENV}=host:port (reachable by the cluster's nodes over HTTP)"
    for tool, pkg in (("docker-registry", "docker-registry"), ("htpasswd", "apache2-utils")):
        if not shutil.which(tool):
            return f"no {tool} command (Debian: apt-get install {pkg})"
    return None


class Registry:
    """``docker-registry serve`` with basic auth; the accepted key can be replaced (a restart)."""

    def __init__(self, address: str, work: Path) -> None:
        self.address, self.work = address, work
        self.proc: subprocess.Popen | None = None
        self.log = work / "registry.log"

    def start(self, key: str) -> None:
        self.stop()
        htpasswd = subprocess.run(
            ["htpasswd", "-Bbn", "_json_key", key], check=True, capture_output=True, text=True
        ).stdout
        (self.work / "htpasswd").write_text(htpasswd)
        config = {
            "version": 0.1,
            "storage": {"filesystem": {"rootdirectory": str(self.work / "data")}},
            "http": {"addr": self.address},
            "auth": {"htpasswd": {"realm": "e2e", "path": str(self.work / "htpasswd")}},
        }
        (self.work / "config.yml").write_text(yaml.safe_dump(config))
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                ["docker-registry", "serve", str(self.work / "config.yml")], stdout=fh, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{self.address}/v2/", timeout=2, trust_env=False).status_code == 401:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"the registry did not start on {self.address}:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None


@dataclass
class Setup:
    stack: Stack
    registry: Registry
    key: str
    v1: str  # image references in the registry
    v2: str

    def lw(self, name: str) -> dict[str, Any]:
        return self.stack.lw(name)

    def set_key(self, value: str | None, *, key_file: str = KEY_FILE) -> None:
        """The key Secret as ``kubectl create secret generic ... --from-file`` makes it (None: no Secret)."""
        kube, ns = self.stack.kube, self.stack.ns
        kube.run("-n", ns, "delete", "secret", KEY_SECRET, "--ignore-not-found")
        if value is not None:
            data = {key_file: base64.b64encode(value.encode()).decode()}
            meta = {"name": KEY_SECRET, "labels": {SECRET_LABEL: "true"}}  # opted in: fleets may use it
            kube.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}], ns=ns)

    def pull_secret_password(self, fleet_name: str) -> str:
        raw = self.stack.kube.secret_value(self.stack.ns, f"{fleet_name}-registry", ".dockerconfigjson")
        return json.loads(raw)["auths"][self.registry.address]["password"]


def _push(engine: Any, source: str, target: str, authfile: Path) -> None:
    tls = ["--tls-verify=false"] if engine.kind == "podman" else []
    auth = ["--authfile", str(authfile)] if engine.kind == "podman" else []
    for args in (("tag", source, target), ("push", *tls, *auth, target)):
        res = engine.run(*args, timeout=900)
        assert res.returncode == 0, f"{engine.command} {' '.join(args)}: {res.stderr[-2000:]}"


@pytest.fixture(scope="module")
def setup(stack: Stack, e2e_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require(_missing())
    from lightly_devkit.engine import find_engine

    engine = find_engine()
    work = tmp_path_factory.mktemp("registry")
    registry = Registry(os.environ[REGISTRY_ENV], work)
    key = service_account_key("e2e-registry")
    registry.start(key)
    try:
        # Lightly's step 1: docker login -u _json_key --password-stdin REGISTRY < container-credentials.json
        tls = ["--tls-verify=false"] if engine.kind == "podman" else []
        auth = ["--authfile", str(work / "auth.json")] if engine.kind == "podman" else []
        res = engine.run("login", *tls, *auth, "-u", "_json_key", "--password-stdin", registry.address, input=key)
        assert res.returncode == 0, f"login: {res.stderr}"
        # the worker image as v1, and a v2 that differs only in the version it reports
        v1, v2 = f"{registry.address}/lightly/worker:1", f"{registry.address}/lightly/worker:2"
        start = time.monotonic()
        base = e2e_images["worker"]
        (work / "v1").mkdir()
        (work / "v1" / "Containerfile").write_text(f"FROM {base}\nENV LIGHTLY_WORKER_VERSION={V1}\n")
        (work / "v2").mkdir()
        (work / "v2" / "Containerfile").write_text(f"FROM {base}\nENV LIGHTLY_WORKER_VERSION={V2}\n")
        for tag, d in ((f"{base}-v1", "v1"), (f"{base}-v2", "v2")):
            res = engine.run("build", "-t", tag, "-f", str(work / d / "Containerfile"), str(work / d), timeout=600)
            assert res.returncode == 0, f"build {tag}: {res.stderr[-2000:]}"
        _push(engine, f"{base}-v1", v1, work / "auth.json")
        _push(engine, f"{base}-v2", v2, work / "auth.json")
        print(f"pushed {v1} and {v2} in {time.monotonic() - start:.0f} s")
        s = Setup(stack, registry, key, v1, v2)
        s.set_key(key)
        yield s
    finally:
        registry.stop()


def _private_fleet(name: str, image: str, replicas: int = 1, key_secret: str = KEY_SECRET) -> dict[str, Any]:
    return fleet(
        name,
        replicas,
        image=image,
        imagePullPolicy="Always",  # every pod pulls: the credentials are checked each time
        registryCredentials={"registry": os.environ[REGISTRY_ENV], "secretRef": {"name": key_secret}},
    )


def _condition_saying(setup: Setup, name: str, text: str) -> str | None:
    for c in setup.lw(name).get("status", {}).get("conditions", []):
        if text in (c.get("message") or "") and c.get("status") == "True":
            return f"{c['type']} {c.get('reason')}: {c['message']}"
    return None


def _events_of(setup: Setup, name: str) -> str:
    kube, ns = setup.stack.kube, setup.stack.ns
    return kube.run("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}").stdout


def _versions(setup: Setup, name: str) -> list[str]:
    return sorted(w.get("version", "") for w in setup.lw(name).get("status", {}).get("workers", []))


def _pods(setup: Setup, name: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in setup.stack.pods(name)}


def test_pods_pull_from_the_private_registry_with_the_operators_pull_secret(setup: Setup) -> None:
    st = setup.stack
    st.kube.apply([_private_fleet("private", setup.v1, replicas=2)], ns=st.ns)
    st.kube.wait_condition(st.ns, "lightlyworker/private", "jsonpath={.status.readyReplicas}=2", 420)
    pod = next(iter(_pods(setup, "private").values()))
    assert pod["spec"]["imagePullSecrets"] == [{"name": "private-registry"}]
    assert pod["spec"]["containers"][0]["image"] == setup.v1
    st.wait_for(lambda: _versions(setup, "private") == [V1, V1], what="both workers to report v1")
    sid = st.schedule(st.dataset)
    st.wait_completed(sid)
    run = st.client.get_compute_worker_run_from_scheduled_run(sid)
    assert run.docker_version == V1


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    meta = {"name": name, "labels": {SECRET_LABEL: "true"}}  # opted in: fleets may use it
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": data}


def _fix_and_recover(setup: Setup, fleet_name: str, secret: str) -> None:
    """The right key file in the Secret: the fleet recovers without being deleted."""
    st = setup.stack
    st.kube.apply([_secret(secret, {KEY_FILE: setup.key})], ns=st.ns)
    st.kube.wait_condition(st.ns, f"lightlyworker/{fleet_name}", "jsonpath={.status.readyReplicas}=1", 240)
    st.wait_for(lambda: not _condition_saying(setup, fleet_name, "registryCredentials"), what="the condition to clear")
    st.kube.run("-n", st.ns, "delete", "lw", fleet_name, "--timeout=120s", timeout=150)


def test_wrong_key_is_explained_and_fixing_the_secret_recovers(setup: Setup) -> None:
    st = setup.stack
    wrong = _secret("wrong-key", {KEY_FILE: service_account_key("someone-else")})
    st.kube.apply([wrong, _private_fleet("wrongkey", setup.v1, key_secret="wrong-key")], ns=st.ns)
    want = f"401 Unauthorized from {setup.registry.address}: check registryCredentials"
    said = st.wait_for(lambda: _condition_saying(setup, "wrongkey", want), what=f"a condition saying {want!r}")
    assert said.startswith("Degraded") and ("ImagePullBackOff" in said or "ErrImagePull" in said), said
    st.wait_for(lambda: want in _events_of(setup, "wrongkey"), what="an Event saying it", timeout=60)
    _fix_and_recover(setup, "wrongkey", "wrong-key")


def test_missing_secret_and_missing_key_file_are_explained_and_recover(setup: Setup) -> None:
    st = setup.stack
    st.kube.apply([_private_fleet("nokey", setup.v1, key_secret="absent-key")], ns=st.ns)
    said = st.wait_for(
        lambda: _condition_saying(setup, "nokey", f"Secret {st.ns}/absent-key"), what="a missing-Secret condition"
    )
    assert "does not exist" in said and "spec.registryCredentials.secretRef" in said, said
    # a Secret without the key file (e.g. created --from-file with another file name)
    st.kube.apply([_secret("absent-key", {"key.json": "{}"})], ns=st.ns)
    said = st.wait_for(
        lambda: _condition_saying(setup, "nokey", f"no key '{KEY_FILE}'"), what="a missing-key condition"
    )
    assert "add it" in said, said
    _fix_and_recover(setup, "nokey", "absent-key")


def test_key_rotation_updates_the_pull_secret_and_restarts_no_pod(setup: Setup) -> None:
    st = setup.stack
    before = {n: p["metadata"]["uid"] for n, p in _pods(setup, "private").items()}
    new_key = service_account_key("e2e-registry-rotated")
    setup.registry.start(new_key)  # the registry now takes only the new key
    setup.key = new_key
    setup.set_key(new_key)
    st.wait_for(lambda: setup.pull_secret_password("private") == new_key, what="the pull Secret to hold the new key")
    time.sleep(3)  # a few reconciles: nothing may restart
    after = {n: p["metadata"]["uid"] for n, p in _pods(setup, "private").items()}
    assert after == before
    assert all(
        c["restartCount"] == 0 for p in _pods(setup, "private").values() for c in p["status"]["containerStatuses"]
    )


def test_a_new_tag_rolls_out_when_idle_the_busy_worker_finishing_its_run_first(setup: Setup) -> None:
    st = setup.stack
    sid = st.schedule(st.dataset)
    busy = st.busy_worker("private", sid)
    st.kube.run("-n", st.ns, "patch", "lw", "private", "--type=merge", "-p", json.dumps({"spec": {"image": setup.v2}}))
    st.wait_completed(sid)
    runs = [r for r in st.client.get_compute_worker_runs() if r.scheduled_id == sid]
    assert len(runs) == 1 and runs[0].docker_version == V1, "the busy worker must finish its run on v1"
    # both pods end up on v2 (pulled with the rotated key), with the same worker ids
    st.wait_for(lambda: _versions(setup, "private") == [V2, V2], what="both workers to report v2", timeout=300)
    assert busy["workerId"] in {w["workerId"] for w in setup.lw("private")["status"]["workers"]}
    assert all(p["spec"]["containers"][0]["image"] == setup.v2 for p in _pods(setup, "private").values())


def test_recreate_rolls_back_at_once_and_the_run_completes_on_the_version_rolled_to(setup: Setup) -> None:
    st = setup.stack
    # Recreate fleets' workers hand a run back at once on SIGTERM: switching rolls the (idle) pods
    before = set(_pods(setup, "private"))
    patch = {"spec": {"updateStrategy": {"type": "Recreate"}}}
    st.kube.run("-n", st.ns, "patch", "lw", "private", "--type=merge", "-p", json.dumps(patch))
    st.wait_for(
        lambda: not (set(_pods(setup, "private")) & before) and setup.lw("private")["status"].get("readyReplicas") == 2,
        what="the pods to be replaced for the new strategy",
        timeout=300,
    )
    sid = st.schedule(st.dataset)
    busy = st.busy_worker("private", sid)
    st.kube.run("-n", st.ns, "patch", "lw", "private", "--type=merge", "-p", json.dumps({"spec": {"image": setup.v1}}))
    st.wait_for(lambda: busy["pod"] not in _pods(setup, "private"), what="the busy pod to be replaced at once")
    info = st.wait_completed(sid)
    runs = [r for r in st.client.get_compute_worker_runs() if r.scheduled_id == sid]
    completed = [r for r in runs if str(getattr(r.state, "value", r.state)) == "COMPLETED"]
    assert len(completed) == 1 and completed[0].docker_version == V1, (info, runs)
    assert len(runs) == 2 and {r.docker_version for r in runs} == {V1, V2}, "handed back by v2, completed by v1"
    st.wait_for(lambda: _versions(setup, "private") == [V1, V1], what="both workers back on v1", timeout=300)
    st.kube.run("-n", st.ns, "delete", "lw", "private", "--timeout=180s", timeout=200)
