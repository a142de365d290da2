"""Pure functions that build the Kubernetes objects of a fleet. Unit-tested without a cluster."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

from lightly_protocol.pod_contract import (
    CA_DIR,
    CA_FILE,
    ENV_CA_CERTS,
    ENV_SERVER_LOCATION,
    ENV_TOKEN_FILE,
    INPUT_MOUNT,
    KEY_METRICS_PORT,
    KEY_SHUTDOWN_GRACE,
    KEY_WORKER_ID,
    LIGHTLY_MOUNT,
    OUTPUT_DIR,
    TOKEN_DIR,
    TOKEN_FILE,
    arg,
)

from .podmerge import merge_pod_spec
from .settings import OperatorSettings
from .spec import GROUP, KIND, VERSION, LightlyWorkerSpec

MANAGED_BY = "lightly-operator"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_FLEET = "lightly.ai/fleet"
LABEL_INDEX = "lightly.ai/worker-index"
ANN_CHECKSUM = "lightly.ai/spec-checksum"
ANN_WORKER_ID = "lightly.ai/worker-id"
ANN_SKIP_DEREGISTRATION = "lightly.ai/skip-deregistration"
# Where the pod mounts the token (TOKEN_DIR, TOKEN_FILE), the output, input and lightly volumes, and the CA
# that signed the API's certificate (the operator's LIGHTLY_CA_CERTS, when it has one: in the operator-owned
# Secret <fleet>-api-ca, mounted at CA_DIR, named to the worker by LIGHTLY_CA_CERTS) come from the pod
# contract (lightly_protocol.pod_contract), which the worker's settings read too.
DEFAULT_RESOURCES = {"limits": {"nvidia.com/gpu": "1"}}
#: requests added for cpu and memory when spec.resources names neither a request nor a limit for them: a
#: floor that keeps worker pods out of the BestEffort class (evicted first) and in the scheduler's sums
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "512Mi"}
#: sizeLimits of the operator's emptyDirs (the kubelet evicts a pod that writes more, instead of filling
#: the node's disk): the default output folder (a volume in spec.output has its own size) and /tmp (caches)
OUTPUT_SIZE_LIMIT = "20Gi"
TMP_SIZE_LIMIT = "4Gi"
#: fields of the spec that do not change what a pod looks like
# updateStrategy is pod-relevant: it sets how a worker shuts down (see worker_args)
NON_POD_FIELDS = ("replicas", "autoscaling", "deregistration")


def selector_labels(name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_FLEET: name}


def selector_string(name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(name).items())


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pull_secret_name(name: str) -> str:
    return f"{name}-registry"[:253]


def ca_secret_name(name: str) -> str:
    return f"{name}-api-ca"[:253]


def spec_checksum(
    raw_spec: dict[str, Any], token_fingerprint: str, settings: OperatorSettings, api_url: str, ca_pem: str = ""
) -> str:
    """What the pods depend on: the pod-relevant spec, the token Secret's content, operator defaults, the
    API's CA (a worker reads it at start: a new CA rolls the fleet).

    The token enters only as a fingerprint (a hash), never as itself.
    """
    relevant = {k: v for k, v in raw_spec.items() if k not in NON_POD_FIELDS}
    depends: dict[str, Any] = {"spec": relevant, "token": token_fingerprint, "image": settings.worker_image}
    depends["api"] = api_url
    if ca_pem:  # absent without a CA: fleets keep their checksum when the operator has none
        depends["ca"] = hashlib.sha256(ca_pem.encode()).hexdigest()
    payload = json.dumps(depends, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def token_fingerprint(secret_data: dict[str, str], key: str) -> str:
    """A hash of the token's value (base64 as stored), so a rotated token rolls the fleet."""
    return hashlib.sha256(f"{key}:{secret_data.get(key, '')}".encode()).hexdigest()[:16]


def pod_name(name: str, index: int, checksum: str) -> str:
    suffix = f"-{index}-{checksum[:6]}"
    return f"{name[: 63 - len(suffix)]}{suffix}"


def quantities(resources: dict[str, Any]) -> dict[str, Any]:
    """Resource quantities as strings, their canonical form (YAML makes ``nvidia.com/gpu: 1`` an int)."""
    out = copy.deepcopy(resources)
    for section in ("limits", "requests"):
        if isinstance(out.get(section), dict):
            out[section] = {k: str(v) for k, v in out[section].items()}
    return out


WORKER_METRICS_PORT = 9100
WORKER_UID = 10001  # the user of Dockerfile.worker (USER 10001:10001); override with podTemplate.spec.securityContext


def worker_args(worker_id: str, spec: LightlyWorkerSpec) -> list[str]:
    """The worker's id, its metrics port, then ``workerConfig`` (later keys win, so it may override).

    ``Recreate`` fleets do not wait for runs: their workers hand a run back at once on SIGTERM
    (``worker.shutdown_grace_seconds=0``), so a replaced busy worker's run goes to a new pod. Under
    ``WhenIdle`` a busy worker whose pod is deleted anyway (drain, eviction) finishes within the
    worker's grace first.
    """

    strategy = [arg(KEY_SHUTDOWN_GRACE, 0)] if spec.update_strategy.type == "Recreate" else []
    return [
        arg(KEY_WORKER_ID, worker_id),
        arg(KEY_METRICS_PORT, WORKER_METRICS_PORT),
        *strategy,
        *(arg(k, v) for k, v in sorted(spec.worker_config.items())),
    ]


def _metrics_port(spec: LightlyWorkerSpec) -> int:
    try:
        return int(spec.worker_config.get(KEY_METRICS_PORT, WORKER_METRICS_PORT))
    except (TypeError, ValueError):
        return WORKER_METRICS_PORT


def worker_resources(spec: LightlyWorkerSpec) -> dict[str, Any]:
    """spec.resources (default: one GPU), with ``DEFAULT_REQUESTS`` for cpu and memory where it names
    neither a request nor a limit for them."""
    res = quantities(spec.resources if spec.resources is not None else DEFAULT_RESOURCES)
    limits, requests = res.get("limits") or {}, dict(res.get("requests") or {})
    for name, value in DEFAULT_REQUESTS.items():
        if name not in limits and name not in requests:
            requests[name] = value
    return {**res, "requests": requests}


def build_volumes(spec: LightlyWorkerSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, container volumeMounts): token file, shm, output, optional input and lightly mounts."""
    token_ref = spec.api.token_secret_ref
    volumes: list[dict[str, Any]] = [
        {
            "name": "lightly-token",
            "secret": {
                "secretName": token_ref.name,
                "items": [{"key": token_ref.key, "path": "token"}],
                "defaultMode": 0o440,
            },
        },
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
        {"name": "output", **(spec.output or {"emptyDir": {"sizeLimit": OUTPUT_SIZE_LIMIT}})},
        # the root filesystem is read-only: caches (matplotlib, numba, torch) and temp files go here
        {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "lightly-token", "mountPath": TOKEN_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "output", "mountPath": OUTPUT_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if spec.input:
        volumes.append({"name": "input", **spec.input})
        mounts.append({"name": "input", "mountPath": INPUT_MOUNT, "readOnly": True})
    if spec.lightly:
        volumes.append({"name": "lightly", **spec.lightly})
        mounts.append({"name": "lightly", "mountPath": LIGHTLY_MOUNT})
    return volumes, mounts


def build_pod(
    body: dict[str, Any],
    spec: LightlyWorkerSpec,
    index: int,
    worker_id: str,
    checksum: str,
    settings: OperatorSettings,
    api_url: str,
) -> dict[str, Any]:
    """The pod of replica ``index``: one worker process acting as the registered ``worker_id``."""
    name = body["metadata"]["name"]
    volumes, mounts = build_volumes(spec)
    env = [
        {"name": ENV_SERVER_LOCATION, "value": api_url},
        {"name": ENV_TOKEN_FILE, "value": TOKEN_FILE},
    ]
    if settings.ca_certs:  # the operator trusts a private CA for the API: so do its workers
        volumes.append({"name": "api-ca", "secret": {"secretName": ca_secret_name(name), "defaultMode": 0o444}})
        mounts.append({"name": "api-ca", "mountPath": CA_DIR, "readOnly": True})
        env.append({"name": ENV_CA_CERTS, "value": CA_FILE})
    env += spec.env
    pull_secrets = [dict(s) for s in spec.image_pull_secrets]
    if spec.registry_credentials:
        pull_secrets.append({"name": pull_secret_name(name)})
    container: dict[str, Any] = {
        "name": "worker",
        "image": spec.image or settings.worker_image,
        "args": worker_args(worker_id, spec),
        "env": env,
        "resources": worker_resources(spec),
        "volumeMounts": mounts,
        "ports": [{"name": "metrics", "containerPort": _metrics_port(spec), "protocol": "TCP"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "readOnlyRootFilesystem": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "automountServiceAccountToken": False,
        # The worker image's user. fsGroup makes the token Secret (mode 0440) and the volumes readable by
        # it: without it the file is root:root and the worker cannot read its token.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    optional = {
        "imagePullSecrets": pull_secrets or None,
        "nodeSelector": spec.node_selector or None,
        "tolerations": spec.tolerations or None,
        "affinity": spec.affinity,
        "priorityClassName": spec.priority_class_name,
        "runtimeClassName": spec.runtime_class_name,
        "serviceAccountName": spec.service_account_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v is not None})
    labels = {
        **spec.pod_template.metadata.labels,
        "app.kubernetes.io/name": "lightly-worker",
        "app.kubernetes.io/instance": name,
        **selector_labels(name),
        LABEL_INDEX: str(index),
    }
    annotations = {**spec.pod_template.metadata.annotations, ANN_CHECKSUM: checksum, ANN_WORKER_ID: worker_id}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(name, index, checksum),
            "namespace": body["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(body)],
        },
        "spec": merge_pod_spec(pod_spec, spec.pod_template.spec),
    }


class CredentialsError(ValueError):
    pass


def build_ca_secret(body: dict[str, Any], ca_pem: str) -> dict[str, Any]:
    """The Secret ``<fleet>-api-ca`` with the CA certificates the operator trusts for the API (public
    certificates; a Secret because the operator may already write Secrets and nothing else)."""
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": ca_secret_name(name),
            "namespace": body["metadata"]["namespace"],
            "labels": {**selector_labels(name), "app.kubernetes.io/component": "api-ca"},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {"ca.crt": base64.b64encode(ca_pem.encode()).decode()},
    }


def build_pull_secret(body: dict[str, Any], registry: str, json_key: str) -> dict[str, Any]:
    """A dockerconfigjson Secret from a container-credentials.json key, as
    ``docker login -u _json_key --password-stdin REGISTRY`` would store it."""
    try:
        parsed = json.loads(json_key)
    except ValueError as exc:
        raise CredentialsError(f"the registry credentials are not valid JSON ({exc}); use the key file as is") from None
    if not isinstance(parsed, dict):
        raise CredentialsError("the registry credentials must be a JSON object (a service-account key file)")
    auth = base64.b64encode(f"_json_key:{json_key}".encode()).decode()
    config = {"auths": {registry: {"username": "_json_key", "password": json_key, "auth": auth}}}
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": pull_secret_name(name),
            "namespace": body["metadata"]["namespace"],
            "labels": {**selector_labels(name), "app.kubernetes.io/component": "registry-credentials"},
            "ownerReferences": [owner_reference(body)],
        },
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }
