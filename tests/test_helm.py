"""The Helm chart, rendered by the real Helm engine (helm-python-sdk), validated against Kubernetes schemas.

Also: the chart's RBAC equals operator/lightly_operator/rbac.py, every metric the dashboard and the
alerts name exists in the code, and the chart's manifests applied to a real apiserver run an operator
(with the rendered Deployment's args and env, as its ServiceAccount) that reconciles
examples/lightlyworker-basic.yaml.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

from conftest import Backend, ServerProcess, backend  # noqa: E402
from lightly_operator import rbac  # noqa: E402

if TYPE_CHECKING:
    from kube.harness import Kube

pytest_plugins = ("kube.fixtures",)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "lightly-worker-operator"
K8S_VERSION = "1.33.0"  # a recent Kubernetes release the offline schemas of kubernetes-validate cover
RELEASE, NAMESPACE = "lwo", "lightly-system"
FULLNAME = f"{RELEASE}-lightly-worker-operator"

COMBINATIONS: dict[str, dict[str, Any]] = {
    "default": {},
    "all-namespaces": {"watch": {"allNamespaces": True}},
    "namespaced": {"watch": {"allNamespaces": False, "namespaces": ["ml", "research"]}},
    "namespaced-no-discovery": {
        "watch": {"allNamespaces": False},
        "rbac": {"namespaceDiscovery": False},
        "leaderElection": "off",
    },
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "alertLabels": {"team": "ml"}},
        "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Lightly"}},
    },
    "server": {"server": {"enabled": True}},
    "server-postgres": {
        "replicaCount": 2,
        "server": {
            "enabled": True,
            "replicas": 3,
            "processes": 4,
            "database": {"type": "external", "existingSecret": "lightly-db"},
            "persistence": {"accessModes": ["ReadWriteMany"], "storageClass": "nfs"},
            "tokenBootstrap": {"enabled": False},
        },
        "lightlyToken": {"create": True, "value": "tok"},
    },
    "everything": {
        "watch": {"allNamespaces": False, "namespaces": ["ml"]},
        "image": {"digest": "sha256:" + "a" * 64},
        "server": {
            "enabled": True,
            "persistence": {"enabled": False},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "lightly.example.com",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": [{"secretName": "lightly-example-tls", "hosts": ["lightly.example.com"]}],
            },
        },
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
        "registryCredentials": {"create": True, "value": '{"type": "service_account"}'},
        "imagePullSecrets": [{"name": "regcred"}],
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
    },
}

# network security (TLS, /metrics token, NetworkPolicy): tests at the end of this file
COMBINATIONS["network"] = {
    "watch": {"allNamespaces": False, "namespaces": ["ml", "research"]},
    "server": {"enabled": True, "tls": {"enabled": True, "existingSecret": "lightly-server-tls"}},
    "apiCaCerts": {"existingSecret": "lightly-server-tls"},
    "metricsAuth": {"enabled": True, "existingSecret": "lightly-metrics-token"},
    "serviceMonitor": {"enabled": True},
    "networkPolicy": {"enabled": True, "extraFrom": [{"namespaceSelector": {"matchLabels": {"team": "ml"}}}]},
}


@functools.cache
def _render(key: str) -> tuple[dict[str, Any], ...]:
    values = COMBINATIONS[key]
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return tuple(docs)


def render(key: str) -> list[dict[str, Any]]:
    return json.loads(json.dumps(_render(key)))  # a copy


def notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(v for k, v in out.items() if k.endswith("NOTES.txt"))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> list:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
        and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None, namespace: str | None = None) -> dict:
    found = find(docs, kind, name, namespace)
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


# ---------------------------------------------------------------------------- lint, schemas


@pytest.mark.parametrize("key", sorted(COMBINATIONS))
def test_strict_lint_is_clean(key: str) -> None:
    report = helm.lint(str(CHART), COMBINATIONS[key], strict=True, namespace=NAMESPACE, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] == [] and report["messages"] == [], report


SECRET_KEY_SELECTOR = {
    "type": "object",
    "required": ["key"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "key": {"type": "string", "minLength": 1}},
}
# ServiceMonitor/PrometheusRule are CRDs kubernetes-validate has no schema for: the fields we set
MONITORING_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                                "scrapeTimeout": {"type": "string"},
                                # as in monitoring.coreos.com/v1 Endpoint (prometheus-operator's CRD)
                                "scheme": {"enum": ["http", "https"]},
                                "authorization": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {"type": {"type": "string"}, "credentials": SECRET_KEY_SELECTOR},
                                },
                                "tlsConfig": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "serverName": {"type": "string"},
                                        "ca": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {"secret": SECRET_KEY_SELECTOR},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["alert", "expr", "labels", "annotations"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9_]*$"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h|d|w|y))+$"},
                                            "labels": {"type": "object", "required": ["severity"]},
                                            "annotations": {"type": "object", "required": ["summary", "description"]},
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


@pytest.mark.parametrize("key", sorted(COMBINATIONS))
def test_every_manifest_validates_against_the_kubernetes_schemas(key: str) -> None:
    import jsonschema

    for doc in render(key):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            jsonschema.validate(doc, MONITORING_SCHEMAS[doc["kind"]])
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        labels = doc["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "lightly-worker-operator-0.1.0"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/name"] == "lightly-worker-operator"


def test_chart_crds_are_the_top_level_crds() -> None:
    top = sorted(p.name for p in (ROOT / "crds").iterdir())
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == top
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), name


INVALID = [
    ({"leaderElection": True}, "/leaderElection"),  # a bare `on` in YAML
    ({"watch": {"allNamespaces": "no"}}, "/watch/allNamespaces"),
    ({"watch": {"allNamespaces": False, "namespaces": ["Not_A_Namespace"]}}, "/watch/namespaces/0"),
    ({"clusterName": "prod.eu"}, "/clusterName"),
    ({"apiUrl": "lightly-server:8080"}, "/apiUrl"),
    ({"image": {"repository": "x", "digest": "latest"}}, "/image/digest"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"replicaCount": -1}, "/replicaCount"),
    ({"server": {"database": {"type": "mysql"}}}, "/server/database/type"),
    ({"server": {"persistence": {"size": "ten gigs"}}}, "/server/persistence/size"),
    ({"server": {"processes": 0}}, "/server/processes"),
    ({"prometheusRule": {"pendingFor": "15 minutes"}}, "/prometheusRule/pendingFor"),
    ({"serviceMonitr": {"enabled": True}}, "serviceMonitr"),  # typos are not silently ignored
    ({"logLevel": "verbose"}, "/logLevel"),
    ({"networkPolicy": {"enabled": "yes"}}, "/networkPolicy/enabled"),
    ({"server": {"tls": {"secret": "x"}}}, "secret"),
]


@pytest.mark.parametrize(("values", "where"), INVALID, ids=[w for _, w in INVALID])
def test_invalid_values_are_rejected_by_the_schema(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert where in str(err.value)
    report = helm.lint(str(CHART), values, strict=True)  # what `helm install` reports
    assert any(where in e for e in report["errors"]), report


TEMPLATE_CHECKS = [
    ({"replicaCount": 2, "leaderElection": "off"}, "needs leaderElection: on"),
    ({"server": {"enabled": True, "replicas": 2}}, "SQLite serves one replica"),
    ({"server": {"enabled": True, "processes": 2}}, "SQLite serves from one process"),
    ({"server": {"enabled": True, "database": {"type": "external"}}}, "existingSecret"),
    ({"lightlyToken": {"create": True}}, "lightlyToken.value"),
    ({"watch": {"allNamespaces": True, "namespaces": ["ml"]}}, "watch.namespaces (ml) is set but"),
    ({"registryCredentials": {"create": True}}, "registryCredentials.value"),
    ({"server": {"enabled": True}, "lightlyToken": {"create": True, "value": "t"}}, "turn one off"),
    ({"server": {"enabled": True, "tls": {"enabled": True}}}, "server.tls.existingSecret"),
    ({"metricsAuth": {"enabled": True}}, "metricsAuth.existingSecret"),
]


@pytest.mark.parametrize(("values", "message"), TEMPLATE_CHECKS, ids=[m for _, m in TEMPLATE_CHECKS])
def test_inconsistent_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as err:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(err.value)


# ---------------------------------------------------------------------------- the operator Deployment


def test_operator_deployment_defaults() -> None:
    docs = render("default")
    dep = one(docs, "Deployment", FULLNAME)
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/lightly-worker-fleet/operator:0.1.0"
    assert c["args"] == [
        f"--namespace={NAMESPACE}",  # by default only the release namespace (docs/operator.md, blast radius)
        "--metrics-port=8080",
        "--health-port=8081",
        "--leader-election=on",
        "--log-level=INFO",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["LIGHTLY_SERVER_LOCATION"]["value"] == "http://lightly-server:8080"
    from lightly_operator.settings import DEFAULT_IMAGE

    assert env["LIGHTLY_WORKER_IMAGE"]["value"] == DEFAULT_IMAGE
    assert env["LIGHTLY_CLUSTER_NAME"]["value"] == "default"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "health": 8081}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert pod["serviceAccountName"] == FULLNAME and one(docs, "ServiceAccount", FULLNAME)
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    svc = one(docs, "Service", f"{FULLNAME}-metrics")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not find(docs, "ServiceMonitor") and not find(docs, "PrometheusRule") and not find(docs, "Secret")


def test_operator_args_follow_the_watch_scope_and_replicas() -> None:
    docs = render("namespaced")
    c = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["--namespace=ml", "--namespace=research"]
    c = one(render("namespaced-no-discovery"), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][0] == f"--namespace={NAMESPACE}" and "--leader-election=off" in c["args"]
    # standby replicas answer /healthz while they wait for the Lease: the same probe fits every replica
    c = one(render("server-postgres"), "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


# ---------------------------------------------------------------------------- RBAC == rbac.py


def test_rbac_file_is_generated_from_rbac_py() -> None:
    assert (CHART / "files" / "rbac.yaml").read_text() == rbac.render_yaml(), (
        "regenerate: python -m lightly_operator.rbac > charts/lightly-worker-operator/files/rbac.yaml"
    )


def _rules(obj: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    out = []
    for r in obj["rules"]:
        for g in r["apiGroups"]:
            for res in r["resources"]:
                out.append((g, res, tuple(r["verbs"]), tuple(r.get("resourceNames", ()))))
    return sorted(out)


def _expected(*groups: tuple[rbac.Rule, ...]) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return sorted((r.api_group, r.resource, r.verbs, r.resource_names) for g in groups for r in g)


def _bound(docs: list[dict[str, Any]], kind: str, role: dict[str, Any]) -> None:
    binding = one(docs, kind, role["metadata"]["name"], role["metadata"].get("namespace"))
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_rendered_rbac_all_namespaces_is_exactly_rbac_py() -> None:
    docs = render("all-namespaces")
    cr = one(docs, "ClusterRole", FULLNAME)
    assert _rules(cr) == _expected(rbac.CLUSTER_DISCOVERY, rbac.WATCHED_NAMESPACES)
    _bound(docs, "ClusterRoleBinding", cr)
    lease = one(docs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)
    assert _rules(lease) == _expected(rbac.LEADER_ELECTION)
    _bound(docs, "RoleBinding", lease)
    assert len(find(docs, "Role")) == 1


def test_rendered_rbac_namespaced_is_exactly_rbac_py() -> None:
    docs = render("namespaced")
    cr = one(docs, "ClusterRole", FULLNAME)
    assert _rules(cr) == _expected(rbac.CLUSTER_DISCOVERY, rbac.NAMESPACE_DISCOVERY)  # no pods/Secrets cluster-wide
    for ns in ("ml", "research"):
        role = one(docs, "Role", FULLNAME, ns)
        assert _rules(role) == _expected(rbac.WATCHED_NAMESPACES)
        _bound(docs, "RoleBinding", role)
    assert _rules(one(docs, "Role", f"{FULLNAME}-leader-election", NAMESPACE)) == _expected(rbac.LEADER_ELECTION)
    docs = render("namespaced-no-discovery")
    assert _rules(one(docs, "ClusterRole", FULLNAME)) == _expected(rbac.CLUSTER_DISCOVERY)
    assert _rules(one(docs, "Role", FULLNAME, NAMESPACE)) == _expected(rbac.WATCHED_NAMESPACES)
    assert not find(docs, "Role", f"{FULLNAME}-leader-election")  # leader election off


def test_default_rbac_is_namespaced_to_the_release_namespace() -> None:
    """The default install grants pods and Secrets in the release namespace only: no ClusterRole rule on them."""
    docs = render("default")
    assert _rules(one(docs, "ClusterRole", FULLNAME)) == _expected(rbac.CLUSTER_DISCOVERY, rbac.NAMESPACE_DISCOVERY)
    assert _rules(one(docs, "Role", FULLNAME, NAMESPACE)) == _expected(rbac.WATCHED_NAMESPACES)
    assert {r["metadata"]["namespace"] for r in find(docs, "Role")} == {NAMESPACE}
    assert "Watching: lightly-system" in notes({})


def test_rbac_py_covers_the_calls_in_the_operator_code() -> None:
    """Every Kubernetes client call in the operator maps to a verb rbac.py grants (and nothing unused)."""
    src = "".join((ROOT / "operator" / "lightly_operator" / f).read_text() for f in ("kube.py", "leader.py"))
    calls = set(re.findall(r"\.(read|create|patch|replace|delete|list)_namespaced_(\w+?)\b", src))
    verb = {"read": "get", "replace": "update"}
    plural = {"secret": "secrets", "pod": "pods", "lease": "leases", "custom_object_status": "lightlyworkers/status"}
    used = {(plural[kind], verb.get(v, v)) for v, kind in calls}
    granted = {(r.resource, v) for r in rbac.WATCHED_NAMESPACES + rbac.LEADER_ELECTION for v in r.verbs}
    assert used <= granted
    # kopf's part: watching pods (the index) and the resource, patching it and its status, posting Events
    kopf_part = {
        ("pods", "list"),
        ("pods", "watch"),
        ("lightlyworkers", "list"),
        ("lightlyworkers", "watch"),
        ("lightlyworkers", "patch"),
        ("lightlyworkers/status", "patch"),
        ("lightlyworkers/finalizers", "update"),  # blockOwnerDeletion on the pods' ownerReferences
        ("events", "create"),
    }
    assert granted == used | kopf_part
    assert '"blockOwnerDeletion": True' in (ROOT / "operator" / "lightly_operator" / "builders.py").read_text()


# ---------------------------------------------------------------------------- monitoring


#: labels Prometheus itself puts on every scraped series (job, instance; the ServiceMonitor's target labels)
SCRAPE_TARGET_LABELS = {"job", "instance", "namespace", "pod", "service"}


def _metric_families(tmp: Path) -> dict[str, tuple[str, set[str]]]:
    """name -> (type, label names) of every metric the operator, server and worker code define."""
    from lightly_operator.metrics import OperatorMetrics
    from lightly_server.db import Database
    from lightly_server.metrics import ServerMetrics
    from lightly_worker.metrics import WorkerMetrics

    op = OperatorMetrics()
    op.snapshot.pending[("ns", "f")] = __import__("collections").Counter({"Unschedulable": 1})
    op.registrations.labels("register", "ok")
    op.api_errors.labels("ApiError")
    op.pod_actions.labels("create")
    w = WorkerMetrics()
    w.runs.labels("COMPLETED")
    w.stage_seconds.labels("EMBEDDING")
    db = Database(f"sqlite:///{tmp / 'metrics.sqlite3'}")
    db.migrate()
    s = ServerMetrics(db)
    s.http_latency.labels("GET", "/healthz", "200")
    s.run_duration.labels("COMPLETED")
    s.claims.labels("locked")
    names: dict[str, tuple[str, set[str]]] = {}
    for registry in (op.registry, w.registry, s.registry):
        for fam in registry.collect():
            labels = {k for sample in fam.samples for k in sample.labels}
            for sample in fam.samples:
                names[sample.name] = (fam.type, labels)
            names.setdefault(fam.name, (fam.type, labels))
    db.dispose()
    return names


def _promql_metrics(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names in its selector) of every lightly_* metric an expression names."""
    out = []
    for m in re.finditer(r"\b(lightly_[a-z_]+)(\{([^}]*)\})?", expr):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!=|!~|=)", m.group(3) or ""))
        out.append((m.group(1), labels))
    return out


def _dashboard_exprs() -> list[str]:
    dash = json.loads((CHART / "dashboards" / "fleet-overview.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def _alert_exprs() -> list[str]:
    rule = one(render("monitoring"), "PrometheusRule")
    return [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]


def test_dashboard_and_alerts_name_only_metrics_that_exist(tmp_path: Path) -> None:
    families = _metric_families(tmp_path)
    for needed in (
        "lightly_operator_fleets",
        "lightly_operator_workers",
        "lightly_operator_pods_pending",
        "lightly_operator_registrations_total",
        "lightly_server_scheduled_runs",
        "lightly_server_run_duration_seconds_bucket",
        "lightly_worker_runs_total",
        "lightly_worker_state",
    ):
        assert needed in families, needed
    exprs = _dashboard_exprs() + _alert_exprs()
    seen = set()
    for expr in exprs:
        for name, labels in _promql_metrics(expr):
            assert name in families, f"{name} (in {expr!r}) is not defined by any metrics class"
            assert labels <= families[name][1], f"{name}: labels {labels - families[name][1]} do not exist"
            seen.add(name)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            known = {lb for n, ls in families.values() for lb in ls} | SCRAPE_TARGET_LABELS
            assert {g.strip() for g in group.split(",")} <= known, expr
    assert len(seen) >= 15


def test_dashboard_covers_the_fleet_overview() -> None:
    dash = json.loads((CHART / "dashboards" / "fleet-overview.json").read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Workers by state",
        "Busy ratio",
        "Queue depth by priority",
        "Runs by outcome",
        "Run duration (completed)",
        "Registration errors",
        "API errors by reason",
        "Pods pending by reason",
    } <= titles
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cm = one(render("monitoring"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["lightly-fleet-overview.json"]) == dash


def test_alerts_cover_the_failure_modes() -> None:
    rule = one(render("monitoring"), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert {
        "LightlyFleetDegraded",
        "LightlyWorkerPodsPending",
        "LightlyWorkerRegistrationErrors",
        "LightlyApiErrors",
        "LightlyWorkersOfflineWhilePodsRun",
        "LightlyRunsFailing",
    } <= set(alerts)
    assert all(a["labels"]["team"] == "ml" for a in alerts.values())
    assert alerts["LightlyWorkerPodsPending"]["for"] == "15m"
    assert "0.25" in alerts["LightlyRunsFailing"]["expr"]
    monitors = find(render("monitoring"), "ServiceMonitor")
    assert [m["spec"]["endpoints"][0]["port"] for m in monitors] == ["metrics"]
    assert monitors[0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert len(find(render("everything"), "ServiceMonitor")) == 2  # the bundled server too


# ---------------------------------------------------------------------------- bundled server, Secrets


def test_bundled_server_sqlite() -> None:
    docs = render("server")
    server = f"{FULLNAME}-server"
    dep = one(docs, "Deployment", server)
    pod = dep["spec"]["template"]["spec"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/lightly-worker-fleet/server:0.1.0" and c["args"] == ["serve"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LIGHTLY_SERVER_DATABASE"] == "sqlite:////data/lightly-server.sqlite3"
    assert env["LIGHTLY_SERVER_PROCESSES"] == "1"  # SQLite: one process (more are refused)
    assert env["LIGHTLY_SERVER_HOST"] == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    pvc = one(docs, "PersistentVolumeClaim", server)
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": server}} in pod["volumes"]
    # the operator's default API is the bundled server
    op = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    url = next(e["value"] for e in op["env"] if e["name"] == "LIGHTLY_SERVER_LOCATION")
    assert url == f"http://{server}.{NAMESPACE}.svc:8080"
    assert one(docs, "Service", server)["spec"]["ports"][0]["port"] == 8080
    # token bootstrap: an init container with its own short-lived token; the server gets none
    (init,) = pod["initContainers"]
    assert init["command"] == ["python", "/bootstrap/bootstrap-token.py"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == server
    assert any(m["name"] == "kube-api-access" for m in init["volumeMounts"])
    assert not any(m["name"] == "kube-api-access" for m in c["volumeMounts"])
    role = one(docs, "Role", f"{server}-token-bootstrap", NAMESPACE)
    assert _rules(role) == sorted([("", "secrets", ("create",), ()), ("", "secrets", ("get",), ("lightly-token",))])
    cm = one(docs, "ConfigMap", f"{server}-token-bootstrap")
    assert cm["data"]["bootstrap-token.py"] == (CHART / "files" / "bootstrap-token.py").read_text().rstrip("\n")


def test_bundled_server_postgres_and_quickstart_secrets() -> None:
    docs = render("server-postgres")
    dep = one(docs, "Deployment", f"{FULLNAME}-server")
    assert dep["spec"]["replicas"] == 3 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    c = dep["spec"]["template"]["spec"]["containers"][0]
    db = next(e for e in c["env"] if e["name"] == "LIGHTLY_SERVER_DATABASE")
    assert db["valueFrom"]["secretKeyRef"] == {"name": "lightly-db", "key": "url"}
    assert next(e["value"] for e in c["env"] if e["name"] == "LIGHTLY_SERVER_PROCESSES") == "4"
    assert "initContainers" not in dep["spec"]["template"]["spec"]
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    secret = one(docs, "Secret", "lightly-token", NAMESPACE)
    assert base64.b64decode(secret["data"]["token"]) == b"tok"
    docs = render("everything")
    reg = one(docs, "Secret", "lightly-registry-key", "ml")  # in the watched namespace
    assert json.loads(base64.b64decode(reg["data"]["container-credentials.json"])) == {"type": "service_account"}
    assert one(docs, "ConfigMap", f"{FULLNAME}-dashboard")["metadata"]["namespace"] == "monitoring"
    assert one(docs, "Role", f"{FULLNAME}-server-token-bootstrap", "ml")
    op = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    assert op["containers"][0]["image"] == "ghcr.io/lightly-worker-fleet/operator@sha256:" + "a" * 64
    assert op["imagePullSecrets"] == [{"name": "regcred"}]


def test_the_server_ingress_routes_its_host_to_the_service_and_is_off_by_default() -> None:
    assert not find(render("server"), "Ingress")
    ingress = one(render("everything"), "Ingress", f"{FULLNAME}-server")
    service = one(render("everything"), "Service", f"{FULLNAME}-server")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "lightly-example-tls", "hosts": ["lightly.example.com"]}]
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "lightly.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert rule["http"]["paths"][0] == {"path": "/", "pathType": "Prefix", "backend": {"service": backend}}


def test_notes_explain_the_first_steps() -> None:
    text = notes({})
    assert "kubectl -n lightly-system create secret generic lightly-token --from-literal=token=<YOUR TOKEN>" in text
    assert "--from-file=container-credentials.json=./container-credentials.json" in text
    assert "kind: LightlyWorker" in text and "nvidia.com/gpu" in text
    text = notes({"server": {"enabled": True}})
    assert "get secret lightly-token" in text and "port-forward" in text


def _load_bootstrap() -> Any:
    spec = importlib.util.spec_from_file_location("bootstrap_token", CHART / "files" / "bootstrap-token.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_token_bootstrap_creates_once_reuses_and_never_prints_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _load_bootstrap()
    store: dict[tuple[str, str], dict[str, Any]] = {}

    def api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        parts = path.strip("/").split("/")  # api v1 namespaces NS secrets [NAME]
        ns = parts[3]
        if method == "GET":
            found = store.get((ns, parts[5]))
            return (200, found) if found else (404, {})
        key = (ns, body["metadata"]["name"])
        if key in store:
            return 409, {}
        store[key] = body
        return 201, body

    db = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    env = {
        "TOKEN_SECRET_NAME": "lightly-token",
        "TOKEN_SECRET_KEY": "token",
        "TOKEN_NAMESPACES": "ml,research",
        "LIGHTLY_SERVER_DATABASE": db,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with mock.patch.dict(os.environ, env), mock.patch.object(mod, "api", api):
        assert mod.main() == 0
        token = base64.b64decode(store[("ml", "lightly-token")]["data"]["token"]).decode()
        assert store[("research", "lightly-token")]["data"] == store[("ml", "lightly-token")]["data"]
        assert mod.main() == 0  # idempotent: nothing new
        del store[("research", "lightly-token")]
        assert mod.main() == 0  # a missing namespace gets the existing token, no new token is made
        assert base64.b64decode(store[("research", "lightly-token")]["data"]["token"]).decode() == token
        store[("ml", "lightly-token")] = {"data": {"other": "eA=="}}
        assert mod.main() == 1  # a foreign Secret is never overwritten
    out = capsys.readouterr()
    assert token not in out.out + out.err and "created a token" in out.out and "without key 'token'" in out.err
    # the token is valid for the server: one user, one token in the database
    check = subprocess.run(
        [sys.executable, "-c", f"import sqlite3; print(sqlite3.connect({str(tmp_path / 'db.sqlite3')!r})"
         ".execute('SELECT count(*) FROM tokens').fetchone()[0])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert check.stdout.strip() == "1"


def test_token_bootstrap_creates_the_server_secret_key_once_and_never_replaces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _load_bootstrap()
    store: dict[str, dict[str, Any]] = {}

    def api(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        name = path.strip("/").split("/")[5] if method == "GET" else body["metadata"]["name"]
        if method == "GET":
            return (200, store[name]) if name in store else (404, {})
        if name in store:
            return 409, {}
        store[name] = body
        return 201, body

    handed = tmp_path / "secret-key"
    env = {
        "SECRET_KEY_SECRET_NAME": "srv-secret-key",
        "SECRET_KEY_SECRET_KEY": "secret-key",
        "SECRET_KEY_NAMESPACE": "ns",
        "SECRET_KEY_OUT_FILE": str(handed),
    }
    with mock.patch.dict(os.environ, env), mock.patch.object(mod, "api", api):
        assert mod.ensure_secret_key() == 0
        first = store["srv-secret-key"]["data"]["secret-key"]
        assert len(base64.b64decode(first)) >= 32  # the server wants at least 32 characters
        # handed to the server as a file only its user reads
        assert handed.read_text().strip() == base64.b64decode(first).decode() and handed.stat().st_mode & 0o777 == 0o400
        handed.unlink()
        assert mod.ensure_secret_key() == 0 and store["srv-secret-key"]["data"]["secret-key"] == first
        assert handed.read_text().strip() == base64.b64decode(first).decode()  # a restarted pod reads it back
        store["srv-secret-key"] = {"data": {"other": "eA=="}}
        assert mod.ensure_secret_key() == 1  # a foreign Secret is never overwritten
    out = capsys.readouterr()
    assert base64.b64decode(first).decode() not in out.out + out.err


def _secret_key_file(server: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the secret-key volume, its mount) of the server pod, after checking the key reaches the server as a
    file (``LIGHTLY_SERVER_SECRET_KEY_FILE``) and never as an environment variable."""
    (c,) = server["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert "LIGHTLY_SERVER_SECRET_KEY" not in env, env
    assert env["LIGHTLY_SERVER_SECRET_KEY_FILE"]["value"] == "/etc/lightly-server/secret-key/secret-key"
    mount = next(m for m in c["volumeMounts"] if m["name"] == "secret-key")
    assert mount == {"name": "secret-key", "mountPath": "/etc/lightly-server/secret-key", "readOnly": True}
    volume = next(v for v in server["volumes"] if v["name"] == "secret-key")
    return volume, mount


def test_the_bundled_server_gets_its_secret_key_from_a_secret() -> None:
    docs = render("server")
    server = one(docs, "Deployment", f"{FULLNAME}-server")["spec"]["template"]["spec"]
    volume, _ = _secret_key_file(server)
    # the bootstrap (an init container) creates the Secret after the pod's volumes are set up, and hands the key
    # to the server through an in-memory volume: no wait for the kubelet, no restart at the first install
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    (init,) = server["initContainers"]
    assert {"name": "secret-key", "mountPath": "/etc/lightly-server/secret-key"} in init["volumeMounts"]
    ref = {"name": f"{FULLNAME}-server-secret-key", "key": "secret-key"}
    boot = {e["name"]: e.get("value") for e in init["env"]}
    assert boot["SECRET_KEY_SECRET_NAME"] == ref["name"] and boot["SECRET_KEY_NAMESPACE"] == NAMESPACE
    assert boot["SECRET_KEY_OUT_FILE"] == "/etc/lightly-server/secret-key/secret-key"
    role = one(docs, "Role", f"{FULLNAME}-server-secret-key", NAMESPACE)
    assert {"get"} == set(role["rules"][1]["verbs"]) and role["rules"][1]["resourceNames"] == [ref["name"]]


def test_a_given_secret_key_secret_is_mounted_as_a_required_file() -> None:
    values = {"server": {"enabled": True, "secretKey": {"existingSecret": "my-key", "key": "k"}}}
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = [d for path, text in out.items() if not path.endswith("NOTES.txt") for d in yaml.safe_load_all(text) if d]
    server = one(docs, "Deployment", f"{FULLNAME}-server")["spec"]["template"]["spec"]
    volume, _ = _secret_key_file(server)
    secret = volume["secret"]
    assert secret["secretName"] == "my-key" and secret["items"] == [{"key": "k", "path": "secret-key"}]
    assert "optional" not in secret  # the pod waits for a missing Secret instead of starting without its key


# ---------------------------------------------------------------------------- on a real apiserver


@pytest.fixture(scope="module")
def api_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with backend("sqlite", tmp_path_factory.mktemp("helm-api")) as b:
        yield b


@pytest.fixture(scope="module")
def api_server(api_backend: Backend) -> ServerProcess:
    return api_backend.start_server()


def test_chart_on_a_real_apiserver_runs_an_operator_that_reconciles_the_example(
    kube: Kube, api_server: ServerProcess, api_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """helm render -> kubectl apply (the apiserver validates everything) -> the operator, with the Deployment's
    args and env and the chart's ServiceAccount token (so its RBAC is what is tested), reconciles the example."""
    from lightly_operator import cli, handlers
    from lightly_operator.leader import LeaseLock

    ns = kube.namespace  # the release's namespace, and the one namespace it watches
    token = api_backend.token()
    cluster = f"chart{secrets.token_hex(3)}"
    values = {
        "watch": {"allNamespaces": False, "namespaces": [ns]},
        "apiUrl": api_server.url,
        "clusterName": cluster,
        "workerImage": {"repository": "lightly-worker", "tag": "chart-test"},
        "settings": {"resyncSeconds": 0.3, "sweepSeconds": 0.5, "orphanGraceSeconds": 0, "callTimeoutSeconds": 2},
        "lightlyToken": {"create": True, "value": token},
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=RELEASE, namespace=ns, is_install=True)
    manifests = "\n---\n".join(v for k, v in sorted(rendered.items()) if not k.endswith("NOTES.txt"))
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    # no Prometheus Operator here: its two CRDs, structural and minimal, as kube-prometheus-stack installs them
    kube.apply([_crd(plural, kind) for plural, kind in PROMETHEUS_CRDS])
    for crd in sorted((CHART / "crds").iterdir()):
        kube.kubectl("apply", "-f", str(crd))
    names = [f"crd/{plural}.monitoring.coreos.com" for plural, _ in PROMETHEUS_CRDS] + ["crd/lightlyworkers.lightly.ai"]
    kube.kubectl("wait", "--for=condition=Established", "--timeout=30s", *names, timeout=40)
    kube.kubectl("apply", "-f", "-", input=manifests)  # validated by the apiserver: no --validate=false
    for d in docs:
        group = d["apiVersion"].rpartition("/")[0]
        plural = d["kind"].lower() + ("es" if d["kind"].endswith("s") else "s")
        resource = f"{plural}.{group}" if group else plural
        assert kube.get(resource, d["metadata"]["name"], d["metadata"].get("namespace", "")), (d["kind"], resource)

    # the operator with the settings of the Deployment as the apiserver stored it
    dep = kube.get("deployments.apps", FULLNAME)
    pod_spec = dep["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env["POD_NAMESPACE"] = dep["metadata"]["namespace"]  # the downward API
    with mock.patch.dict(os.environ, env):
        args = cli.build_parser().parse_args(container["args"])
        settings = cli.operator_settings(args)
        process = cli.process_options(args)
    assert args.namespace == [ns] and process.leader_election == "on" and process.lease_namespace == ns
    assert (settings.api_url, settings.cluster_name) == (api_server.url, cluster)
    assert settings.worker_image == "lightly-worker:chart-test" and settings.call_timeout_seconds == 2

    # from here on, everything runs as the chart's ServiceAccount: its RBAC must be enough
    sa = pod_spec["serviceAccountName"]
    sa_token = kube.kubectl("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    sa_kubeconfig = kube.cp.kubeconfig_for(namespace=ns, token=sa_token, name=f"{ns}-{sa}")
    monkeypatch.setenv("KUBECONFIG", str(sa_kubeconfig))  # the operator's load_client() and @kopf.on.login
    can_i = kube.kubectl("auth", "can-i", "create", "pods", "-n", ns, f"--as=system:serviceaccount:{ns}:{sa}")
    assert can_i.stdout.strip() == "yes"
    # leader election in the release namespace, where the chart's Role grants the Lease
    assert LeaseLock(kube.cp.api_client(sa_kubeconfig), process.lease_namespace, identity="chart-test").try_acquire()
    assert kube.get("leases.coordination.k8s.io", "lightly-operator", process.lease_namespace)

    app = handlers.build_operator(settings)
    scope = {"namespaces": args.namespace, "clusterwide": not args.namespace}
    with kube.operator(**scope, login=True, registry=app.registry, memo=app.memo()):
        kube.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "lightlyworker-basic.yaml"))
        pods = kube.wait_for(
            lambda: len(p := kube.list("pods", labels="lightly.ai/fleet=gpu-fleet")) == 2 and p,
            timeout=30,
            what="the example fleet's two pods",
        )
        status = kube.wait_for(
            lambda: (
                len((st := (kube.get("lightlyworkers.lightly.ai", "gpu-fleet") or {}).get("status") or {})
                    .get("workers") or []) == 2 and st
            ),
            timeout=30,
            what="two registered workers in the status",
        )  # fmt: skip
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"lightly-worker:chart-test"}
    assert all({"name": "LIGHTLY_SERVER_LOCATION", "value": api_server.url} in p["spec"]["containers"][0]["env"]
               for p in pods)  # fmt: skip
    names = sorted(w["name"] for w in status["workers"])
    assert names == sorted(settings.worker_name(ns, "gpu-fleet", i) for i in range(2))
    assert token not in json.dumps(status)


PROMETHEUS_CRDS = (("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule"))


def _crd(plural: str, kind: str) -> dict[str, Any]:
    """A minimal structural CRD of the Prometheus Operator's group: a typed root, a free-form spec."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind, "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


WHOLE_VALUES = ("resources", "podSecurityContext", "securityContext", "livenessProbe", "readinessProbe")


def test_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]
    for key, value in values.items():
        assert key in schema, f"values.schema.json lacks {key}"
        subkeys = value if isinstance(value, dict) and key not in WHOLE_VALUES else {}
        for sub in subkeys or [None]:
            path = f"{key}.{sub}" if sub else key
            assert f"`{path}" in readme, f"charts/lightly-worker-operator/README.md does not document {path}"


# ---------------------------------------------------------------------------- TLS, /metrics token, NetworkPolicy


def test_server_tls_mounts_the_tls_secret_and_the_default_api_url_is_https() -> None:
    docs = render("network")
    server = f"{FULLNAME}-server"
    pod = one(docs, "Deployment", server)["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LIGHTLY_SERVER_TLS_CERT"] == "/etc/lightly-server/tls/tls.crt"
    assert env["LIGHTLY_SERVER_TLS_KEY"] == "/etc/lightly-server/tls/tls.key"
    assert {"name": "tls", "mountPath": "/etc/lightly-server/tls", "readOnly": True} in c["volumeMounts"]
    tls = next(v for v in pod["volumes"] if v["name"] == "tls")["secret"]
    assert tls["secretName"] == "lightly-server-tls" and {i["key"] for i in tls["items"]} == {"tls.crt", "tls.key"}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS", probe
    op = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    opc = op["containers"][0]
    openv = {e["name"]: e.get("value") for e in opc["env"]}
    assert openv["LIGHTLY_SERVER_LOCATION"] == f"https://{server}.{NAMESPACE}.svc:8080"
    assert openv["LIGHTLY_CA_CERTS"] == "/etc/lightly-operator/ca/ca.pem"
    ca = next(v for v in op["volumes"] if v["name"] == "api-ca")["secret"]
    assert ca == {"secretName": "lightly-server-tls", "items": [{"key": "ca.crt", "path": "ca.pem"}]}
    # without TLS: plain http, no scheme on the probes, no CA
    plain = one(render("server"), "Deployment", server)["spec"]["template"]["spec"]["containers"][0]
    assert "scheme" not in plain["readinessProbe"]["httpGet"]
    assert not any(e["name"].startswith("LIGHTLY_SERVER_TLS") for e in plain["env"])


def test_metrics_auth_mounts_the_token_and_the_service_monitors_send_it() -> None:
    docs = render("network")
    op = one(docs, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-token-file=/etc/lightly-operator/metrics/token" in op["args"]
    server = one(docs, "Deployment", f"{FULLNAME}-server")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in server["containers"][0]["env"]}
    assert env["LIGHTLY_SERVER_METRICS_TOKEN_FILE"] == "/etc/lightly-server/metrics/token"
    vol = next(v for v in server["volumes"] if v["name"] == "metrics-token")["secret"]
    assert vol["secretName"] == "lightly-metrics-token" and vol["items"] == [{"key": "token", "path": "token"}]
    auth = {"type": "Bearer", "credentials": {"name": "lightly-metrics-token", "key": "token"}}
    for name in (FULLNAME, f"{FULLNAME}-server"):
        (endpoint,) = one(docs, "ServiceMonitor", name)["spec"]["endpoints"]
        assert endpoint["authorization"] == auth
    (server_ep,) = one(docs, "ServiceMonitor", f"{FULLNAME}-server")["spec"]["endpoints"]
    assert server_ep["scheme"] == "https"
    assert server_ep["tlsConfig"]["ca"]["secret"] == {"name": "lightly-server-tls", "key": "ca.crt"}
    # off by default: no token anywhere
    plain = render("monitoring")
    assert all("authorization" not in ep for sm in find(plain, "ServiceMonitor") for ep in sm["spec"]["endpoints"])


def test_network_policy_admits_workers_operator_prometheus_and_extra_peers_only() -> None:
    assert not find(render("server"), "NetworkPolicy")  # off by default
    docs = render("network")
    policy = one(docs, "NetworkPolicy", f"{FULLNAME}-server")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    server_pod = one(docs, "Deployment", f"{FULLNAME}-server")["spec"]["template"]["metadata"]["labels"]
    assert spec["podSelector"]["matchLabels"].items() <= server_pod.items()
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    workers, operator, prometheus, extra = rule["from"]
    # the labels the operator puts on worker pods
    from lightly_operator.builders import MANAGED_BY

    assert workers["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "lightly-worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    (expr,) = workers["namespaceSelector"]["matchExpressions"]
    assert expr["key"] == "kubernetes.io/metadata.name" and expr["values"] == ["ml", "research"]
    op_labels = one(docs, "Deployment", FULLNAME)["spec"]["template"]["metadata"]["labels"]
    assert operator["podSelector"]["matchLabels"].items() <= op_labels.items() and "namespaceSelector" not in operator
    assert prometheus == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
    }
    assert extra == {"namespaceSelector": {"matchLabels": {"team": "ml"}}}
    # the operator's /metrics: Prometheus only; its health port stays open to the kubelet's probes
    op_policy = one(docs, "NetworkPolicy", FULLNAME)["spec"]
    metrics_rule, health_rule = op_policy["ingress"]
    assert metrics_rule["ports"] == [{"port": 8080, "protocol": "TCP"}] and metrics_rule["from"] == [prometheus]
    assert health_rule == {"ports": [{"port": 8081, "protocol": "TCP"}]}


def test_network_policy_when_watching_all_namespaces_admits_workers_of_any_namespace() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(
            {"watch": {"allNamespaces": True}, "server": {"enabled": True}, "networkPolicy": {"enabled": True}},
            name=RELEASE,
            namespace=NAMESPACE,
        )
    docs = [d for k, v in out.items() if not k.endswith("NOTES.txt") for d in yaml.safe_load_all(v) if d]
    workers = one(docs, "NetworkPolicy", f"{FULLNAME}-server")["spec"]["ingress"][0]["from"][0]
    assert workers["namespaceSelector"] == {}
