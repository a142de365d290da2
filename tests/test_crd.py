"""The CRD: structure kubectl and autoscalers rely on, and defaults identical to the operator's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from lightly_operator.spec import GROUP, KIND, PLURAL, VERSION, parse_spec

CRD = yaml.safe_load((Path(__file__).resolve().parent.parent / "crds" / "lightlyworkers.lightly.ai.yaml").read_text())
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
