"""What a LightlyWorker may ask for: the operator's allowlists and the pod fields it refuses (pure).

Whoever may create a LightlyWorker makes the operator act with its own rights: it creates pods, reads
Secrets and sends a token to a URL. Without limits that is a way to run any pod and to send any Secret
of the namespace anywhere. So, before anything is registered or created, a fleet is checked against the
operator's ``FleetPolicy`` (set by the platform team, in the chart's ``policy`` values):

- ``spec.api.url``: the operator sends the token Secret's value there; only allowed URLs;
- the image of every container the pod would run, ``spec.image`` and ``podTemplate`` alike: only
  allowed images; ``spec.registryCredentials.registry``: only allowed registries;
- the pod the operator would build (``podTemplate.spec`` merged in) must keep to Pod Security
  "restricted" where it matters for escalation: no hostNetwork/hostPID/hostIPC, no hostPath volume, no
  privileged container, no privilege escalation, no added capability, no root user, no service account
  token, no service account but allowed ones, unless the operator's settings allow them.

Each refusal names the field and says what to change; the reconcile reports it as the condition
``Degraded=True, reason PolicyViolation`` and creates nothing. Secrets are opted in separately: the
token and registry Secrets, and every Secret the pod would reference, must carry ``secret_label``
(``Kube.read_secret_value``, ``secret_references``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

#: the label a Secret carries when LightlyWorkers may use it (its value must be "true")
SECRET_LABEL = "lightly.ai/fleet-secret"

#: Lightly's registry of the original worker image (``registryCredentials.registry``'s default)
LIGHTLY_REGISTRY = "eu.gcr.io"

ANY = "*"


@dataclass(frozen=True)
class FleetPolicy:
    #: URLs (exact, or a prefix ending in "/") a fleet's ``spec.api.url`` may name; "*": any
    api_urls: tuple[str, ...]
    #: image reference patterns (shell-style, ``*`` matches anything) the pod's containers may run
    images: tuple[str, ...]
    #: registries ``registryCredentials.registry`` may name; "*": any
    registries: tuple[str, ...]
    #: service accounts the pod may run as (none by default: no Kubernetes API access at all)
    service_accounts: tuple[str, ...] = ()
    allow_host_path: bool = False
    allow_host_namespaces: bool = False
    allow_privileged: bool = False
    #: the label (value "true") a Secret needs before a fleet may use it; "": no label needed
    secret_label: str = SECRET_LABEL

    @classmethod
    def defaults_for(
        cls,
        api_url: str,
        worker_image: str,
        *,
        api_urls: Iterable[str] = (),
        images: Iterable[str] = (),
        registries: Iterable[str] = (),
        **flags: Any,
    ) -> FleetPolicy:
        """The policy with each empty allowlist replaced by its narrow default: the operator's own API URL,
        the default worker image's repository (any tag or digest), Lightly's registry and the default
        image's registry."""
        repo = image_repository(worker_image)
        return cls(
            api_urls=tuple(api_urls) or (api_url.rstrip("/"),),
            images=tuple(images) or (f"{repo}:*", f"{repo}@*"),
            registries=tuple(registries) or tuple(dict.fromkeys([LIGHTLY_REGISTRY, image_registry(worker_image)])),
            **flags,
        )

    def api_url_allowed(self, url: str) -> bool:
        url = url.rstrip("/")
        return any(
            a == ANY or url == a.rstrip("/") or (a.endswith("/") and (url + "/").startswith(a)) for a in self.api_urls
        )

    def image_allowed(self, image: str) -> bool:
        return any(fnmatchcase(image, pattern) for pattern in self.images)

    def registry_allowed(self, registry: str) -> bool:
        return ANY in self.registries or registry in self.registries


def image_repository(image: str) -> str:
    """``registry/path/name`` of an image reference (without its tag or digest)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def image_registry(image: str) -> str:
    """The registry host of an image reference (Docker Hub's for a bare name)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def check_fleet(spec_raw: dict[str, Any], api_url: str, pod_spec: dict[str, Any], policy: FleetPolicy) -> list[str]:
    """Every refusal for a fleet whose API URL is ``api_url`` and whose pods look like ``pod_spec`` (the
    spec the operator builds, ``podTemplate.spec`` merged in); empty: allowed."""
    problems: list[str] = []
    if not policy.api_url_allowed(api_url):
        problems.append(
            f"spec.api.url {api_url} is not an allowed Lightly API URL (the operator would send the token there); "
            f"use one of {list(policy.api_urls)} or ask the operator's admin to add it (chart value "
            "policy.allowedApiUrls)"
        )
    registry = ((spec_raw.get("registryCredentials") or {}).get("registry")) or None
    if spec_raw.get("registryCredentials") is not None:
        registry = registry or LIGHTLY_REGISTRY
        if not policy.registry_allowed(registry):
            problems.append(
                f"spec.registryCredentials.registry {registry} is not an allowed registry (the kubelet would send "
                f"the key there); use one of {list(policy.registries)} or ask the operator's admin to add it "
                "(chart value policy.allowedRegistries)"
            )
    problems += check_pod_spec(pod_spec, policy)
    for c_where, c in _containers(pod_spec):
        for e in c.get("env") or []:
            if isinstance(e, dict) and e.get("name") == "LIGHTLY_SERVER_LOCATION" and e.get("value") != api_url:
                problems.append(
                    f"{c_where}.env LIGHTLY_SERVER_LOCATION must stay {api_url} (the API the token is for); "
                    "remove it and set spec.api.url instead"
                )
    return problems


def _containers(pod_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in pod_spec.get(kind) or []:
            if isinstance(c, dict):
                yield f"{kind}[{c.get('name', '?')}]", c


def check_pod_spec(pod_spec: dict[str, Any], policy: FleetPolicy) -> list[str]:
    """The refusals for one pod spec as the operator would create it."""
    problems: list[str] = []
    where = "the pod (spec or podTemplate.spec)"
    for c_where, c in _containers(pod_spec):
        image = str(c.get("image") or "")
        if not policy.image_allowed(image):
            problems.append(
                f"{c_where}.image {image or '(empty)'} is not an allowed image; use spec.image with one matching "
                f"{list(policy.images)} or ask the operator's admin to add it (chart value policy.allowedImages)"
            )
        if c.get("command"):
            problems.append(
                f"{c_where}.command is not allowed (it would run other code than the image's entrypoint, with the "
                "fleet's token at hand); remove it"
            )
        if not policy.allow_privileged:
            problems += _container_privileges(c_where, c.get("securityContext") or {})
        if not policy.allow_host_namespaces:
            ports = [p.get("hostPort") for p in c.get("ports") or [] if isinstance(p, dict) and p.get("hostPort")]
            if ports:
                problems.append(
                    f"{c_where}.ports hostPort {ports} is not allowed (Pod Security 'restricted'); remove it"
                )
    if not policy.allow_host_namespaces:
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod_spec.get(field):
                problems.append(f"{where}.{field}: true is not allowed (Pod Security 'restricted'); remove it")
    if not policy.allow_host_path:
        for v in pod_spec.get("volumes") or []:
            if isinstance(v, dict) and "hostPath" in v:
                problems.append(
                    f"volume {v.get('name')}: hostPath is not allowed (it exposes the node's files); use a "
                    "PersistentVolumeClaim (spec.input/output/lightly: {persistentVolumeClaim: ...}) or ask the "
                    "operator's admin to allow it (chart value policy.allowHostPath)"
                )
    if not policy.allow_privileged:
        problems += _pod_privileges(pod_spec.get("securityContext") or {})
    account = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount")
    if account and account not in policy.service_accounts:
        problems.append(
            f"serviceAccountName {account} is not allowed (worker pods need no Kubernetes API access); remove it or "
            "ask the operator's admin to allow it (chart value policy.allowedServiceAccounts)"
        )
    if pod_spec.get("automountServiceAccountToken") is True:
        problems.append(
            "automountServiceAccountToken: true is not allowed (worker pods need no Kubernetes API access); remove it"
        )
    return problems


def _container_privileges(where: str, sc: dict[str, Any]) -> list[str]:
    problems = []
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged: true is not allowed; remove it")
    if sc.get("allowPrivilegeEscalation") is True:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation: true is not allowed; remove it")
    added = (sc.get("capabilities") or {}).get("add") or []
    extra = [cap for cap in added if cap not in ("NET_BIND_SERVICE",)]  # the one "restricted" allows
    if extra:
        problems.append(f"{where}.securityContext.capabilities.add {extra} is not allowed; remove them")
    problems += _root(f"{where}.securityContext", sc)
    return problems


def _pod_privileges(sc: dict[str, Any]) -> list[str]:
    return _root("the pod's securityContext", sc)


def _root(where: str, sc: dict[str, Any]) -> list[str]:
    problems = []
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where}.seccompProfile Unconfined is not allowed; use RuntimeDefault")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}.runAsUser: 0 (root) is not allowed; use a non-zero user")
    if sc.get("runAsNonRoot") is False:
        problems.append(f"{where}.runAsNonRoot: false is not allowed; remove it")
    return problems


def secret_references(pod_spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(Secret name, where) of every Secret a pod spec references: env ``secretKeyRef``, ``envFrom``
    ``secretRef``, ``secret`` and projected volumes, ``imagePullSecrets``."""
    refs: list[tuple[str, str]] = []
    for c_where, c in _containers(pod_spec):
        for e in c.get("env") or []:
            ref = ((e or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name"):
                refs.append((ref["name"], f"{c_where}.env[{e.get('name')}]"))
        for e in c.get("envFrom") or []:
            ref = (e or {}).get("secretRef") or {}
            if ref.get("name"):
                refs.append((ref["name"], f"{c_where}.envFrom"))
    for v in pod_spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        if (v.get("secret") or {}).get("secretName"):
            refs.append((v["secret"]["secretName"], f"volume {v.get('name')}"))
        for source in (v.get("projected") or {}).get("sources") or []:
            if ((source or {}).get("secret") or {}).get("name"):
                refs.append((source["secret"]["name"], f"volume {v.get('name')}"))
    for s in pod_spec.get("imagePullSecrets") or []:
        if (s or {}).get("name"):
            refs.append((s["name"], "imagePullSecrets"))
    return refs


def secret_opted_in(labels: dict[str, str] | None, policy: FleetPolicy) -> bool:
    return not policy.secret_label or (labels or {}).get(policy.secret_label) == "true"


def opt_in_hint(namespace: str, name: str, policy: FleetPolicy) -> str:
    return f"kubectl -n {namespace} label secret {name} {policy.secret_label}=true"
