"""The CRD: structure kubectl and autoscalers rely on, and defaults identical to the operator's.

The second half applies it to a real apiserver: it is structural, its validation refuses bad specs with
clear messages, defaults, printer columns and the scale subresource work as kubectl users see them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from lightly_operator.spec import GROUP, KIND, PLURAL, VERSION, parse_spec

if TYPE_CHECKING:
    from kube.harness import Kube

ROOT = Path(__file__).resolve().parent.parent
CRD = yaml.safe_load((ROOT / "crds" / "lightlyworkers.lightly.ai.yaml").read_text())
V = CRD["spec"]["versions"][0]
SPEC = V["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_names_scope_and_version() -> None:
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    names = CRD["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (KIND, PLURAL, ["lw"])
    assert CRD["spec"]["scope"] == "Namespaced" and V["name"] == VERSION and V["served"] and V["storage"]


def test_status_and_scale_subresources() -> None:
    assert V["subresources"]["status"] == {}
    assert V["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns() -> None:
    cols = {c["name"]: c["jsonPath"] for c in V["additionalPrinterColumns"]}
    assert cols == {
        "Desired": ".spec.replicas",
        "Ready": ".status.readyReplicas",
        "Busy": ".status.busyReplicas",
        "Shards": ".status.shardsInFlight",
        "Phase": ".status.phase",
        "Age": ".metadata.creationTimestamp",
    }


def _default(path: str) -> object:
    node = SPEC
    for part in path.split("."):
        node = node["properties"][part]
    return node["default"]


def test_schema_defaults_match_the_operator() -> None:
    s = parse_spec(
        {
            "api": {"tokenSecretRef": {"name": "t"}},
            "registryCredentials": {"secretRef": {"name": "r"}},
            "autoscaling": {},
            "deregistration": {},
            "updateStrategy": {},
        }
    )
    assert _default("replicas") == s.replicas
    assert _default("shmSize") == s.shm_size
    assert _default("labels") == s.labels
    assert _default("api.tokenSecretRef.key") == s.api.token_secret_ref.key
    assert _default("registryCredentials.registry") == s.registry_credentials.registry
    assert _default("registryCredentials.secretRef.key") == s.registry_credentials.secret_ref.key
    assert _default("updateStrategy.type") == s.update_strategy.type
    assert _default("autoscaling.enabled") == s.autoscaling.enabled
    assert _default("autoscaling.minReplicas") == s.autoscaling.min_replicas
    assert _default("autoscaling.maxReplicas") == s.autoscaling.max_replicas
    assert _default("autoscaling.scaleDownDelaySeconds") == s.autoscaling.scale_down_delay_seconds
    assert _default("deregistration.timeoutSeconds") == s.deregistration.timeout_seconds


def test_every_spec_field_is_in_the_schema() -> None:
    from lightly_operator.spec import LightlyWorkerSpec

    aliases = {f.alias or n for n, f in LightlyWorkerSpec.model_fields.items()}
    assert aliases == set(SPEC["properties"])


def test_cel_rule_for_autoscaling_bounds() -> None:
    rules = [r["rule"] for r in SPEC["x-kubernetes-validations"]]
    assert any("minReplicas <= self.autoscaling.maxReplicas" in r for r in rules)


def test_operator_cli_help_and_version() -> None:
    out = subprocess.run([sys.executable, "-m", "lightly_operator.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--namespace" in out.stdout and "--metrics-port" in out.stdout
    out = subprocess.run([sys.executable, "-m", "lightly_operator.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "lightly-operator" in out.stdout


def test_operator_without_kubernetes_credentials_says_so(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    out = subprocess.run(
        [sys.executable, "-m", "lightly_operator.cli", "--metrics-port", "0", "--health-port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 2 and "no Kubernetes credentials" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- on a real apiserver

pytest_plugins = ("kube.fixtures",)

LW = "lightlyworkers.lightly.ai"


def _lw(name: str, **spec: object) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"api": {"tokenSecretRef": {"name": "lightly-token"}}, **spec},
    }


def test_the_apiserver_accepts_the_crd_as_structural(kube: Kube, lightly_crd: Path) -> None:
    crd = kube.get("customresourcedefinitions.apiextensions.k8s.io", f"{PLURAL}.{GROUP}")
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert "NonStructuralSchema" not in conditions
    assert conditions["NamesAccepted"]["status"] == "True"


def test_the_apiserver_fills_the_same_defaults_as_the_operator(kube: Kube, lightly_crd: Path) -> None:
    kube.apply(_lw("defaults", autoscaling={}, deregistration={}, updateStrategy={}))
    stored = kube.get(LW, "defaults")["spec"]
    s = parse_spec(stored)
    assert stored["replicas"] == s.replicas == 1 and stored["shmSize"] == s.shm_size and stored["labels"] == []
    assert stored["api"]["tokenSecretRef"]["key"] == s.api.token_secret_ref.key
    assert stored["updateStrategy"] == {"type": s.update_strategy.type}
    assert stored["autoscaling"] == {
        "enabled": s.autoscaling.enabled,
        "minReplicas": s.autoscaling.min_replicas,
        "maxReplicas": s.autoscaling.max_replicas,
        "scaleDownDelaySeconds": s.autoscaling.scale_down_delay_seconds,
    }
    assert stored["deregistration"] == {"timeoutSeconds": s.deregistration.timeout_seconds}


def test_worker_config_keeps_scalars_of_every_type(kube: Kube, lightly_crd: Path) -> None:
    config = {"lightly.loader.batch_size": 16, "lightly.trainer.precision": "16-mixed", "x.ratio": 0.5, "x.on": True}
    kube.apply(_lw("config", workerConfig=config))
    stored = kube.get(LW, "config")["spec"]["workerConfig"]
    assert stored == config and {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in config.items()}
    assert parse_spec(kube.get(LW, "config")["spec"]).worker_config == config


@pytest.mark.parametrize(
    ("spec", "messages"),
    [
        ({"replicas": -1}, ["spec.replicas", "greater than or equal to 0"]),
        (
            {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
            ["autoscaling.minReplicas must not exceed autoscaling.maxReplicas"],
        ),
        ({"shmSize": "a lot"}, ['spec.shmSize: Invalid value: "a lot"', "should match"]),
        ({"updateStrategy": {"type": "Rolling"}}, ['spec.updateStrategy.type: Unsupported value: "Rolling"']),
        ({"workerConfig": {"nested": {"a": 1}}}, ["spec.workerConfig.nested", "at most 0"]),
        ({"workerConfig": {"listed": [1, 2]}}, ["spec.workerConfig.listed", "at most 0"]),
        ({"imagePullPolicy": "Sometimes"}, ['spec.imagePullPolicy: Unsupported value: "Sometimes"']),
        ({"api": {"url": "ftp://x", "tokenSecretRef": {"name": "t"}}}, ["spec.api.url", "should match"]),
        ({"api": {}}, ["spec.api.tokenSecretRef: Required value"]),
        # an empty string that has a meaning: refused, never silently "the default"
        ({"image": ""}, ["spec.image", "at least 1 chars long"]),
        ({"serviceAccountName": ""}, ["spec.serviceAccountName", "at least 1 chars long"]),
        ({"runtimeClassName": ""}, ["spec.runtimeClassName", "at least 1 chars long"]),
        ({"priorityClassName": ""}, ["spec.priorityClassName", "at least 1 chars long"]),
        ({"imagePullSecrets": [{"name": ""}]}, ["spec.imagePullSecrets[0].name", "at least 1 chars long"]),
        ({"api": {"url": "http://", "tokenSecretRef": {"name": "t"}}}, ["spec.api.url", "should match"]),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else "",
)
def test_invalid_specs_are_refused_with_a_clear_message(
    kube: Kube, lightly_crd: Path, spec: dict, messages: list[str]
) -> None:
    out = kube.apply(_lw("bad", **spec), check=False)
    assert out.returncode != 0, out.stdout
    for message in messages:
        assert message in out.stderr, out.stderr
    assert kube.get(LW, "bad") is None


def test_every_example_passes_server_side_dry_run(kube: Kube, lightly_crd: Path) -> None:
    examples = sorted((ROOT / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        out = kube.kubectl("apply", "--dry-run=server", "-f", str(path))
        assert "(server dry run)" in out.stdout


def test_kubectl_get_shows_the_printer_columns(kube: Kube, lightly_crd: Path) -> None:
    kube.apply(_lw("cols", replicas=3))
    status = {"replicas": 3, "readyReplicas": 2, "busyReplicas": 1, "shardsInFlight": 4, "phase": "Running"}
    kube.patch_status(LW, "cols", status)
    header, row = kube.kubectl("get", "lw", "cols").stdout.splitlines()
    assert header.split() == ["NAME", "DESIRED", "READY", "BUSY", "SHARDS", "PHASE", "AGE"]
    assert row.split()[:6] == ["cols", "3", "2", "1", "4", "Running"]
    # the category and the long names work too
    assert "cols" in kube.kubectl("get", "lightly", "-o", "name").stdout
    assert "cols" in kube.kubectl("get", f"{PLURAL}.{GROUP}", "-o", "name").stdout


def test_kubectl_scale_uses_the_scale_subresource(kube: Kube, lightly_crd: Path) -> None:
    kube.apply(_lw("scaled", replicas=1))
    selector = "app.kubernetes.io/managed-by=lightly-operator,lightly.ai/fleet=scaled"
    kube.patch_status(LW, "scaled", {"replicas": 1, "selector": selector})
    kube.kubectl("scale", "lw", "scaled", "--replicas=4")
    assert kube.get(LW, "scaled")["spec"]["replicas"] == 4
    scale = json.loads(kube.kubectl("get", "--raw", kube.resource_path(LW, "scaled") + "/scale").stdout)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4
    assert scale["status"] == {"replicas": 1, "selector": selector}
    out = kube.kubectl("scale", "lw", "scaled", "--replicas=-1", check=False)
    assert out.returncode != 0
