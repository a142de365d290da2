"""What the chart's ServiceAccount may do, measured on a real apiserver (docs/operator.md, "Blast radius").

The chart is rendered by the real Helm engine and its RBAC applied with kubectl; the apiserver's own
authorizer then answers SubjectAccessReviews for the operator's ServiceAccount (its user name and groups,
exactly what a request with its token carries) over a grid of resources, verbs and places, and real
requests with a token of that ServiceAccount check the refusals end to end.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

helm = pytest.importorskip("helm_python")

from lightly_operator import rbac  # noqa: E402

if TYPE_CHECKING:
    from kube.harness import Kube

pytest_plugins = ("kube.fixtures",)

CHART = Path(__file__).resolve().parent.parent / "charts" / "lightly-worker-operator"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
CLUSTER = "(cluster-wide)"  # a namespaced resource asked without a namespace: every namespace at once

#: (group, resource[/subresource], verb, name): what rbac.py grants, plus what an attacker would want
NAMESPACED_PROBES: list[tuple[str, str, str, str]] = sorted(
    {(r.api_group, r.resource, v, "") for r in rbac.WATCHED_NAMESPACES + rbac.LEADER_ELECTION for v in r.verbs}
    | {("coordination.k8s.io", "leases", v, rbac.LEASE_NAME) for v in ("get", "update", "delete")}
    | {("", "secrets", v, "") for v in ("get", "list", "watch", "create", "patch", "update", "delete")}
    | {("", "secrets", v, "lightly-token") for v in ("get", "patch")}
    | {("", "pods", v, "") for v in ("get", "list", "watch", "create", "delete", "patch", "deletecollection")}
    | {("", "pods/exec", "create", ""), ("", "serviceaccounts/token", "create", ""), ("", "configmaps", "get", "")}
    | {("apps", "deployments", "create", ""), ("rbac.authorization.k8s.io", "rolebindings", "create", "")}
    | {("lightly.ai", "lightlyworkers", v, "") for v in ("get", "list", "watch", "patch", "create", "delete")}
)
CLUSTER_PROBES: list[tuple[str, str, str, str]] = sorted(
    {(r.api_group, r.resource, v, "") for r in rbac.CLUSTER_DISCOVERY + rbac.NAMESPACE_DISCOVERY for v in r.verbs}
    | {("apiextensions.k8s.io", "customresourcedefinitions", v, "") for v in ("get", "create", "delete")}
    | {("", "namespaces", v, "") for v in ("create", "delete")}
    | {("", "nodes", "list", ""), ("rbac.authorization.k8s.io", "clusterrolebindings", "create", "")}
)


def _install(kube: Kube, release: str, values: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Apply the chart's ServiceAccount and RBAC for ``values`` (release namespace: the test's); its user name."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        out = chart.render(values, name=release, namespace=kube.namespace, is_install=True)
    docs = [
        d
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d and d["kind"] in RBAC_KINDS
    ]
    kube.apply(docs)
    (sa,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    return f"system:serviceaccount:{kube.namespace}:{sa}", docs


def _allowed(kube: Kube, user: str, probe: tuple[str, str, str, str], namespace: str) -> bool:
    group, resource, verb, name = probe
    resource, _, sub = resource.partition("/")
    attrs = {"group": group, "resource": resource, "subresource": sub, "verb": verb, "name": name}
    if namespace != CLUSTER:
        attrs["namespace"] = namespace
    ns = user.split(":")[2]
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
            "resourceAttributes": attrs,
        },
    }
    r = kube.http.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=body)
    r.raise_for_status()
    return bool(r.json()["status"].get("allowed"))


def _measure(kube: Kube, user: str, places: list[str]) -> set[tuple[str, str, str, str, str]]:
    """Every (place, group, resource, verb, name) the apiserver allows ``user``."""
    got = {(p, *probe) for p in places for probe in NAMESPACED_PROBES if _allowed(kube, user, probe, p)}
    return got | {(CLUSTER, *probe) for probe in CLUSTER_PROBES if _allowed(kube, user, probe, CLUSTER)}


def _grants(rules: tuple[rbac.Rule, ...], *places: str) -> set[tuple[str, str, str, str, str]]:
    """What rules bound at ``places`` allow among the probes (a rule with names allows only those names)."""
    out = set()
    for p in places:
        probes = CLUSTER_PROBES + NAMESPACED_PROBES if p == CLUSTER else NAMESPACED_PROBES
        for g, res, verb, name in probes:
            for r in rules:
                named = not r.resource_names or name in r.resource_names
                if (r.api_group, r.resource) == (g, res) and verb in r.verbs and named:
                    out.add((p, g, res, verb, name))
    return out


def _namespace(kube: Kube, hint: str) -> str:
    name = f"{hint}-{secrets.token_hex(3)}"
    kube.kubectl("create", "namespace", name)
    return name


def _cleanup(kube: Kube, docs: list[dict[str, Any]], namespaces: list[str]) -> None:
    for d in docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            kube.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--ignore-not-found", check=False)
    for ns in namespaces:
        kube.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_blast_radius_of_each_install_mode_measured_on_a_real_apiserver(kube: Kube) -> None:
    """default: the release namespace only; README's `watch.namespaces={team}`: that namespace (and the Lease at
    home); `watch.allNamespaces=true` (opt-in): pods and Secrets everywhere, kube-system included."""
    home = kube.namespace
    team, other = _namespace(kube, "ml-team"), _namespace(kube, "other")
    places = [home, team, other, "kube-system", "default", CLUSTER]
    discovery = _grants(rbac.CLUSTER_DISCOVERY + rbac.NAMESPACE_DISCOVERY, CLUSTER)
    leader = _grants(rbac.LEADER_ELECTION, home)
    tag = secrets.token_hex(2)
    installed: list[dict[str, Any]] = []
    try:
        user, docs = _install(kube, f"d{tag}", {})
        installed += docs
        default = _measure(kube, user, places)
        user, docs = _install(kube, f"r{tag}", {"watch": {"namespaces": [team]}})
        installed += docs
        readme = _measure(kube, user, places)
        user, docs = _install(kube, f"a{tag}", {"watch": {"allNamespaces": True}})
        installed += docs
        everywhere = _measure(kube, user, places)
    finally:
        _cleanup(kube, installed, [team, other])

    def outside(got: set[tuple[str, ...]], *inside: str) -> list[tuple[str, ...]]:
        return sorted(g for g in got if g[0] not in inside)

    assert outside(default, home, CLUSTER) == [], "the default install reaches beyond its namespace"
    assert default == _grants(rbac.WATCHED_NAMESPACES, home) | leader | discovery
    assert outside(readme, team, home, CLUSTER) == []
    assert readme == _grants(rbac.WATCHED_NAMESPACES, team) | leader | discovery
    assert {g for g in readme if g[0] == home} == leader  # at home only the Lease: no pods, no Secrets
    # the opt-in: everything rbac.py lists for watched namespaces, in every namespace and across all of them
    assert everywhere == _grants(rbac.WATCHED_NAMESPACES, *places) | leader | _grants(rbac.CLUSTER_DISCOVERY, CLUSTER)
    assert ("kube-system", "", "secrets", "get", "") in everywhere
    # never, in any mode: listing or watching Secrets, exec, tokens, RBAC, workloads other than pods
    never = {("", "secrets", "list"), ("", "secrets", "watch"), ("", "secrets", "delete"), ("", "pods/exec", "create")}
    never |= {("", "serviceaccounts/token", "create"), ("rbac.authorization.k8s.io", "rolebindings", "create")}
    never |= {("apps", "deployments", "create"), ("rbac.authorization.k8s.io", "clusterrolebindings", "create")}
    for got in (default, readme, everywhere):
        assert not [g for g in got if g[1:4] in never]


def test_default_install_token_is_refused_outside_its_namespace(kube: Kube) -> None:
    """Real requests with a token of the default install's ServiceAccount: 403 in kube-system, in another
    namespace and for cluster-wide Secret lists; allowed (404 / 200) in the release namespace."""
    other = _namespace(kube, "other")
    docs: list[dict[str, Any]] = []
    try:
        user, docs = _install(kube, f"t{secrets.token_hex(2)}", {})
        sa = user.rsplit(":", 1)[1]
        token = kube.kubectl("create", "token", sa, "-n", kube.namespace, "--duration=10m").stdout.strip()
        auth = {"Authorization": f"Bearer {token}"}

        def status(method: str, path: str, body: dict[str, Any] | None = None) -> int:
            return kube.http.request(method, path, json=body, headers=auth).status_code

        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}, "stringData": {"k": "v"}}
        home = f"/api/v1/namespaces/{kube.namespace}"
        # allowed at home (dry runs: nothing is created)
        assert status("GET", f"{home}/secrets/does-not-exist") == 404
        assert status("GET", f"{home}/pods") == 200
        assert status("POST", f"{home}/secrets?dryRun=All", secret) == 201
        # refused everywhere else
        for ns in ("kube-system", other, "default"):
            where = f"/api/v1/namespaces/{ns}"
            assert status("GET", f"{where}/secrets/does-not-exist") == 403, ns
            assert status("POST", f"{where}/secrets?dryRun=All", secret) == 403, ns
            assert status("PATCH", f"{where}/secrets/x", None) == 403, ns
            assert status("GET", f"{where}/pods") == 403, ns
            assert status("POST", f"{where}/pods?dryRun=All", pod) == 403, ns
            assert status("DELETE", f"{where}/pods/x") == 403, ns
        assert status("GET", "/api/v1/secrets") == 403  # list Secrets cluster-wide
        assert status("GET", f"{home}/secrets") == 403  # nor at home: get by name only
        assert status("GET", "/api/v1/pods") == 403
    finally:
        _cleanup(kube, docs, [other])
