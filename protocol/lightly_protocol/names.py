"""API names of Kubernetes-managed workers, shared by the operator (which makes them) and the server
(which renames names of the old scheme that it stored before it enforced the protocol's patterns).

Lightly restricts worker names to ``^[a-zA-Z0-9][a-zA-Z0-9 _-]+$`` (no dots), so one replica of a
``LightlyWorker`` is named::

    k8s_<cluster>_<namespace>_<name>_<index>          e.g. k8s_prod_ml_gpu-fleet__v2_0

* ``_`` separates the fields: it never occurs in Kubernetes names.
* every ``.`` of the resource name (a DNS subdomain ``[a-z0-9.-]``) is written ``__``; DNS labels
  are never empty, so ``__`` can only be an encoded dot and decoding is unambiguous.
* the cluster name is a DNS label of at most ``MAX_CLUSTER_NAME`` characters, the namespace a DNS
  label (at most 63).
* the protocol declares no maximum length (only ``min_length=3``); we keep names at most
  ``MAX_WORKER_NAME`` (128) characters. A longer one is shortened deterministically: the encoded
  resource name is cut and ``-H<10 hex of sha256(namespace/name)>`` appended, e.g.
  ``k8s_prod_ml_very-long-na-H0123456789_0``. Namespace, index and the readable head stay; the
  resource name itself is no longer recoverable from such a name: ``parse_k8s_worker_name`` then
  answers ``name=None`` unless a candidate (namespace, name) pair the caller knows reproduces it.

The old scheme ``k8s.<cluster>.<namespace>.<name>.<index>`` is still recognised
(``parse_legacy_k8s_worker_name``) so that such registrations are replaced or removed, never leaked;
so is ``<current name>-<6 hex>``, what the server's start-up migration names an old-scheme worker
whose current name was registered already (``parse_renamed_k8s_worker_name``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import NamedTuple

#: the protocol's worker name pattern (DockerWorkerRegistryEntryData.name)
WORKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9 _-]+$")

PREFIX = "k8s"
MAX_WORKER_NAME = 128
MAX_CLUSTER_NAME = 40
MAX_NAMESPACE = 63
MAX_RESOURCE_NAME = 253
HASH_LEN = 10

_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
DNS_LABEL_RE = re.compile(rf"^{_LABEL}$")
DNS_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_INDEX_RE = re.compile(r"^(?:0|[1-9][0-9]{0,8})$")
_PLAIN_PART_RE = re.compile(rf"^{_LABEL}(?:__{_LABEL})*$")
_SHORT_PART_RE = re.compile(rf"^[a-z0-9_-]*-H[0-9a-f]{{{HASH_LEN}}}$")


class K8sWorkerName(NamedTuple):
    """What a worker name says: ``name`` is None when it was shortened and no candidate matched."""

    cluster: str
    namespace: str
    name: str | None
    index: int  # type: ignore[assignment]  # a field named like tuple.index: it shadows the method, as meant
    legacy: bool = False


def cluster_name_problem(cluster: str) -> str | None:
    """Why ``cluster`` cannot be part of worker names, or None."""
    if not isinstance(cluster, str) or not cluster:
        return "the cluster name is empty"
    if len(cluster) > MAX_CLUSTER_NAME or not DNS_LABEL_RE.match(cluster):
        return (
            f"cluster name {cluster!r} is not usable: it must be a DNS label of at most {MAX_CLUSTER_NAME} "
            "characters (lowercase letters, digits and '-', starting and ending with a letter or digit; no dots "
            "or underscores), because it becomes part of every API worker name and Lightly allows only "
            f"{WORKER_NAME_RE.pattern} there"
        )
    return None


def _name_problem(namespace: str, name: str, index: int) -> str | None:
    if not (isinstance(namespace, str) and len(namespace) <= MAX_NAMESPACE and DNS_LABEL_RE.match(namespace)):
        return f"namespace {namespace!r} is not a DNS label"
    if not (isinstance(name, str) and len(name) <= MAX_RESOURCE_NAME and DNS_SUBDOMAIN_RE.match(name)):
        return f"name {name!r} is not a DNS subdomain"
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        return f"index {index!r} is not a non-negative integer"
    return None


def name_hash(namespace: str, name: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:HASH_LEN]


def k8s_worker_name(cluster: str, namespace: str, name: str, index: int) -> str:
    """The API name of replica ``index`` of LightlyWorker ``namespace/name`` (deterministic, injective)."""
    problem = cluster_name_problem(cluster) or _name_problem(namespace, name, index)
    if problem:
        raise ValueError(problem)
    head = f"{PREFIX}_{cluster}_{namespace}_"
    tail = f"_{index}"
    part = name.replace(".", "__")
    if len(head) + len(part) + len(tail) <= MAX_WORKER_NAME:
        return head + part + tail
    suffix = f"-H{name_hash(namespace, name)}"
    room = max(0, MAX_WORKER_NAME - len(head) - len(tail) - len(suffix))
    # a cut may end inside an encoded dot ('_') or on '-': drop those so the head reads cleanly
    short = part[:room].rstrip("_-")
    return head + short + suffix + tail


def _split(worker_name: str, cluster: str) -> tuple[str, str, int] | None:
    """(namespace, encoded name part, index) of a current-scheme name of ``cluster``, else None."""
    prefix = f"{PREFIX}_{cluster}_"
    if not isinstance(worker_name, str) or not worker_name.startswith(prefix):
        return None
    if len(worker_name) > MAX_WORKER_NAME + 12:  # +12: indices beyond 6 digits may exceed the budget
        return None
    rest = worker_name[len(prefix) :]
    namespace, sep, rest = rest.partition("_")
    part, sep2, index = rest.rpartition("_")
    if not (sep and sep2 and part and _INDEX_RE.match(index)):
        return None
    if len(namespace) > MAX_NAMESPACE or not DNS_LABEL_RE.match(namespace):
        return None
    return namespace, part, int(index)


def parse_k8s_worker_name(
    worker_name: str, cluster: str, candidates: Iterable[tuple[str, str]] = ()
) -> K8sWorkerName | None:
    """The replica a current-scheme name of ``cluster`` stands for, else None.

    ``candidates``: (namespace, name) pairs the caller knows; they resolve shortened names.
    Only names this module can produce are recognised (they round-trip exactly).
    """
    split = _split(worker_name, cluster)
    if split is None:
        return None
    namespace, part, index = split
    if _PLAIN_PART_RE.match(part):
        name = part.replace("__", ".")
        if len(name) <= MAX_RESOURCE_NAME and k8s_worker_name(cluster, namespace, name, index) == worker_name:
            return K8sWorkerName(cluster, namespace, name, index)
        return None
    if _SHORT_PART_RE.match(part):
        for ns, name in candidates:
            if ns != namespace or _name_problem(ns, name, index):
                continue
            if k8s_worker_name(cluster, ns, name, index) == worker_name:
                return K8sWorkerName(cluster, namespace, name, index)
        return K8sWorkerName(cluster, namespace, None, index)
    return None


def legacy_k8s_worker_name(cluster: str, namespace: str, name: str, index: int) -> str:
    """The name the operator gave replicas before 2026-12 (dots: rejected by the real API)."""
    return f"{PREFIX}.{cluster}.{namespace}.{name}.{index}"


def parse_legacy_k8s_worker_name(worker_name: str, cluster: str | None = None) -> K8sWorkerName | None:
    """The replica an old-scheme name ``k8s.<cluster>.<namespace>.<name>.<index>`` stands for, else None.

    ``cluster=None`` (the server, which does not know cluster names) takes the first field as the cluster;
    that is exact for every cluster name the current operator accepts (no dots).
    """
    if not isinstance(worker_name, str) or len(worker_name) > 1000:
        return None
    if cluster is None:
        fields = worker_name.split(".")
        if len(fields) < 5 or fields[0] != PREFIX:
            return None
        cluster, parts = fields[1], fields[2:]
    else:
        prefix = f"{PREFIX}.{cluster}."
        if not worker_name.startswith(prefix):
            return None
        parts = worker_name[len(prefix) :].split(".")
    if len(parts) < 3 or not _INDEX_RE.match(parts[-1]):
        return None
    namespace, name, index = parts[0], ".".join(parts[1:-1]), int(parts[-1])
    if _name_problem(namespace, name, index):
        return None
    return K8sWorkerName(cluster, namespace, name, index, legacy=True)


_RENAMED_RE = re.compile(r"^(?P<base>.+_(?:0|[1-9][0-9]{0,8}))-(?P<id>[0-9a-f]{6})$")


def renamed_duplicate_name(name: str, object_id: str) -> str:
    """What the server's migration names an object whose migrated name is already taken."""
    return f"{name}-{object_id[-6:]}"


def parse_renamed_k8s_worker_name(
    worker_name: str, cluster: str, candidates: Iterable[tuple[str, str]] = ()
) -> K8sWorkerName | None:
    """An old-scheme registration the server renamed to ``<current name>-<6 hex>`` because the current
    name was taken (the operator had re-registered the replica already): reported as legacy."""
    if not isinstance(worker_name, str) or len(worker_name) > MAX_WORKER_NAME + 20:
        return None
    m = _RENAMED_RE.match(worker_name)
    ref = parse_k8s_worker_name(m.group("base"), cluster, candidates) if m else None
    return ref._replace(legacy=True) if ref else None


def migrated_worker_name(old: str) -> str | None:
    """The current-scheme name for an old-scheme operator name (server migration), else None."""
    parsed = parse_legacy_k8s_worker_name(old)
    if parsed is None or parsed.name is None or cluster_name_problem(parsed.cluster):
        return None
    return k8s_worker_name(parsed.cluster, parsed.namespace, parsed.name, parsed.index)
