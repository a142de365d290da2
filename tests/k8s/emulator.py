"""An in-memory Kubernetes API server good enough for kopf, ``kubectl`` and the ``kubernetes`` client.

:class:`K8sEmulator` subclasses kmock 0.8's ``KubernetesEmulator`` but serves every request itself
(``__call__`` is replaced): kmock's own URL parser, object store and request recording are bypassed,
because they lack what kopf and kubectl need (see /work/shared/kopf_testing_facts.md).

Emulated: discovery (``/api``, ``/apis``, group/version resource lists incl. ``status``/``scale``
subresources, short names) for a backbone of built-in resources plus every POSTed
CustomResourceDefinition; create (uid, resourceVersion, creationTimestamp, generation, namespace from the
URL, ``generateName``), get, list (``<Kind>List`` with a real resourceVersion), watch (resume from a
resourceVersion without lost events, ``sendInitialEvents`` bookmark, ``timeoutSeconds``, 410 when too old),
PUT, merge/JSON/strategic(as merge) PATCH with 409 on a stale resourceVersion and 422 on a failed ``test``,
generation bump on non-metadata/status changes, status subresource semantics, ``/scale`` (GET/PATCH/PUT),
finalizers and deletionTimestamp, ownerReference garbage collection (background; ``Orphan`` honoured),
namespace deletion cascading, delete-collection, label selectors (``=``, ``==``, ``!=``, ``in``,
``notin``, exists, ``!``exists) and field selectors (``=``, ``!=`` on any dotted path) on list and watch.

Not emulated: admission/validation/defaulting/pruning (CRD schemas are ignored), RBAC/authn, server-side
apply, strategic-merge of lists, Table output, ``/openapi`` (use ``kubectl --validate=false``),
pagination (``limit`` is ignored, everything is returned), foreground deletion, bookmarks on idle
streams, and controllers (pods never run; tests set ``status`` themselves through ``/status``).

All state lives in one event loop (the one serving HTTP); every mutation is synchronous inside that loop,
so list snapshots, watch registration and event emission are atomic with respect to each other. Stored
objects are never mutated in place, so reading them from another thread (:meth:`get_object`,
:meth:`list_objects`) is safe.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import json
import logging
import random
import re
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp.web
import attrs
from kmock import KubernetesEmulator

logger = logging.getLogger(__name__)

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NS_KEY = ("", "namespaces")
_END = object()  # wakes a watcher up to finish its stream


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}


@dataclass
class ResourceInfo:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status: bool = False  # has the status subresource
    scale: dict[str, str] | None = None  # specReplicasPath, statusReplicasPath, labelSelectorPath

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# (group, version, plural, kind, namespaced, status, scale, short names)
_SCALE = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
BACKBONE: list[tuple[str, str, str, str, bool, bool, bool, str]] = [
    ("", "v1", "namespaces", "Namespace", False, True, False, "ns"),
    ("", "v1", "nodes", "Node", False, True, False, "no"),
    ("", "v1", "persistentvolumes", "PersistentVolume", False, True, False, "pv"),
    ("", "v1", "pods", "Pod", True, True, False, "po"),
    ("", "v1", "services", "Service", True, True, False, "svc"),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True, False, "pvc"),
    ("", "v1", "configmaps", "ConfigMap", True, False, False, "cm"),
    ("", "v1", "secrets", "Secret", True, False, False, ""),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False, False, "sa"),
    ("", "v1", "endpoints", "Endpoints", True, False, False, "ep"),
    ("", "v1", "events", "Event", True, False, False, "ev"),
    ("events.k8s.io", "v1", "events", "Event", True, False, False, "ev"),
    ("apps", "v1", "deployments", "Deployment", True, True, True, "deploy"),
    ("apps", "v1", "statefulsets", "StatefulSet", True, True, True, "sts"),
    ("apps", "v1", "replicasets", "ReplicaSet", True, True, True, "rs"),
    ("apps", "v1", "daemonsets", "DaemonSet", True, True, False, "ds"),
    ("batch", "v1", "jobs", "Job", True, True, False, ""),
    ("batch", "v1", "cronjobs", "CronJob", True, True, False, "cj"),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False, False, ""),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True, False, "pdb"),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, False, False, ""),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, False, False, ""),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, False, False, ""),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, False, False, ""),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True, False, "crd"),
]


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- patches & paths ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value; ``target`` is untouched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _strip_directives(patch: Any) -> Any:
    """Drop strategic-merge ``$patch``/``$setElementOrder/...`` keys so the rest can be merge-patched."""
    if isinstance(patch, dict):
        return {k: _strip_directives(v) for k, v in patch.items() if not k.startswith("$")}
    return patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise ApiError(422, "Invalid", f"JSON-patch path not found: /{'/'.join(parts)}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch; a failed ``test`` or a bad path raises a 422."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if kind == "test":
            if _resolve(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", f"JSON-patch test failed at {op.get('path')}: {op!r}")
            continue
        if kind in ("move", "copy"):
            value = copy.deepcopy(_resolve(doc, _pointer(op["from"])))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            kind, op = "add", {**op, "value": value}
        if not parts:
            if kind == "remove":
                raise ApiError(422, "Invalid", "cannot remove the whole document")
            doc = copy.deepcopy(op.get("value"))
            continue
        parent, last = _resolve(doc, parts[:-1]), parts[-1]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
            if not 0 <= index <= len(parent) - (kind != "add"):
                raise ApiError(422, "Invalid", f"JSON-patch index out of range: {op.get('path')}")
            if kind == "add":
                parent.insert(index, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                del parent[index]
            elif kind == "replace":
                parent[index] = copy.deepcopy(op.get("value"))
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON-patch op {kind!r}")
        elif isinstance(parent, dict):
            if kind in ("remove", "replace") and last not in parent:
                raise ApiError(422, "Invalid", f"JSON-patch path not found: {op.get('path')}")
            if kind == "remove":
                del parent[last]
            elif kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op.get("value"))
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON-patch op {kind!r}")
        else:
            raise ApiError(422, "Invalid", f"JSON-patch path not found: {op.get('path')}")
    return doc


def dig(obj: Any, path: str) -> Any:
    """Value at a dotted path (``.spec.replicas`` or ``metadata.name``), None if absent."""
    for part in path.strip(".").split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.strip(".").split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[last] = value


# --- selectors ---------------------------------------------------------------------------------------


def parse_label_selector(text: str | None) -> list[tuple[str, str, frozenset[str]]]:
    """``a=b,c!=d,e in (x,y),f notin (z),g,!h`` into (key, op, values) requirements."""
    reqs: list[tuple[str, str, frozenset[str]]] = []
    for part in re.split(r",(?![^()]*\))", text or ""):
        part = part.strip()
        if not part:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!exists", frozenset()))
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", part):
            reqs.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif re.fullmatch(r"[^=!\s()]+", part):
            reqs.append((part, "exists", frozenset()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
    return reqs


def labels_match(reqs: list[tuple[str, str, frozenset[str]]], labels: dict[str, str] | None) -> bool:
    labels = labels or {}
    for key, op, values in reqs:
        present, value = key in labels, labels.get(key)
        ok = {
            "=": present and value in values,
            "in": present and value in values,
            "!=": not present or value not in values,
            "notin": not present or value not in values,
            "exists": present,
            "!exists": not present,
        }[op]
        if not ok:
            return False
    return True


def parse_field_selector(text: str | None) -> list[tuple[str, bool, str]]:
    reqs = []
    for part in (text or "").split(","):
        if part.strip():
            m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
            if not m:
                raise ApiError(400, "BadRequest", f"invalid field selector: {part!r}")
            reqs.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return reqs


def fields_match(reqs: list[tuple[str, bool, str]], obj: dict[str, Any]) -> bool:
    for path, positive, value in reqs:
        actual = dig(obj, path)
        actual = "" if actual is None else str(actual).lower() if isinstance(actual, bool) else str(actual)
        if (actual == value) != positive:
            return False
    return True


# --- watches -----------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Watcher:
    namespace: str | None
    labels: list[tuple[str, str, frozenset[str]]]
    fields: list[tuple[str, bool, str]]
    api_version: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def event(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
        """Translate a store change into what this (filtered) watcher sees, as the real API does."""
        was, now = self.matches(old), self.matches(new)
        if kind == "MODIFIED" and was != now:
            kind = "ADDED" if now else "DELETED"
        elif not (now or (kind == "DELETED" and was)):
            return None
        return {"type": kind, "object": {**new, "apiVersion": self.api_version}}


@attrs.define(kw_only=True)
class K8sEmulator(KubernetesEmulator):
    """The fixed emulator; serve it with :func:`tests.k8s.harness.serve` or any aiohttp low-level server."""

    history_limit: int = 10_000  # watch events kept per resource for resuming watches
    request_log_limit: int = 2_000  # recent (method, path, status) kept for debugging; constant cost

    _infos: dict[tuple[str, str, str], ResourceInfo] = attrs.field(factory=dict, init=False)
    _store: dict[tuple[str, str], dict[tuple[str | None, str], dict[str, Any]]] = attrs.field(
        factory=lambda: collections.defaultdict(dict), init=False
    )
    _uids: dict[str, tuple[tuple[str, str], str | None, str]] = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1, init=False)
    _history: dict[tuple[str, str], collections.deque[Any]] = attrs.field(factory=dict, init=False)
    _history_floor: dict[tuple[str, str], int] = attrs.field(factory=dict, init=False)
    _watchers: dict[tuple[str, str], set[_Watcher]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False
    )
    _closing: bool = attrs.field(default=False, init=False)
    request_log: collections.deque[tuple[str, str, int]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.request_log = collections.deque(maxlen=self.request_log_limit)
        for group, version, plural, kind, namespaced, status, scale, short in BACKBONE:
            self.register(
                ResourceInfo(
                    group, version, plural, kind, namespaced, kind.lower(), [short] if short else [],
                    status=status, scale=dict(_SCALE) if scale else None,
                )
            )  # fmt: skip
        for ns in ("default", "kube-system", "kube-public"):
            self._create(self._infos["", "v1", "namespaces"], None, {"metadata": {"name": ns}})

    # --- public helpers (safe from any thread: stored dicts are never mutated in place) ---

    def register(self, info: ResourceInfo) -> None:
        self._infos[info.group, info.version, info.plural] = info

    def resources(self) -> list[ResourceInfo]:
        return list(self._infos.values())

    def get_object(self, group: str, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self._store.get((group, plural), {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, group: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        bucket = dict(self._store.get((group, plural), {}))
        return [copy.deepcopy(o) for (ns, _), o in sorted(bucket.items()) if namespace in (None, ns)]

    def watch_count(self, group: str, plural: str) -> int:
        """How many watch streams are open for the resource (e.g. to wait until kopf watches)."""
        return len(self._watchers.get((group, plural), ()))

    def close_watches(self) -> None:
        """End all watch streams (so that the HTTP server can shut down promptly)."""
        self._closing = True
        for watchers in self._watchers.values():
            for watcher in watchers:
                watcher.queue.put_nowait(_END)

    # --- HTTP entry point ---

    async def __call__(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        status = 500
        try:
            response = await self._dispatch(request)
            status = response.status
            return response
        except ApiError as e:
            status = e.code
            return self._status(e)
        except Exception as e:
            logger.exception("emulator failure on %s %s", request.method, request.path_qs)
            return self._status(ApiError(500, "InternalError", repr(e)))
        finally:
            self.request_log.append((request.method, request.path_qs, status))

    @staticmethod
    def _status(e: ApiError) -> aiohttp.web.Response:
        body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": e.code}
        body.update(reason=e.reason, message=e.message, details=e.details)
        return aiohttp.web.json_response(body, status=e.code)

    async def _dispatch(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        method, query = request.method, request.query
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return aiohttp.web.json_response(self._non_resource(method, parts))
        watch = query.get("watch") in ("true", "1")
        if rest[:1] == ["watch"]:
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3 and not (group == "" and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            if method != "GET":
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
            return aiohttp.web.json_response(self._resource_list(group, version))
        info = self._infos.get((group, version, rest[0]))
        if info is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name, sub = (rest[1:2] or [None])[0], (rest[2:3] or [None])[0]
        if sub not in (None, "status", "scale") or (sub == "status" and not info.status) or (sub and not name):
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if sub == "scale" and not info.scale:
            raise ApiError(404, "NotFound", "the resource has no scale subresource")

        body: Any = None
        if request.can_read_body and "protobuf" in (request.content_type or ""):
            raise ApiError(415, "UnsupportedMediaType", "the emulator speaks JSON only, not protobuf")
        if method in ("POST", "PUT", "PATCH", "DELETE") and request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError as e:
                    raise ApiError(400, "BadRequest", f"cannot parse the body as JSON: {e}") from e

        if method == "GET" and watch:
            fields = query.get("fieldSelector", "")
            if name:
                fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
            return await self._watch(request, info, namespace, query.get("labelSelector"), fields)
        if method == "GET" and name is None:
            return self._json(self._list(info, namespace, query.get("labelSelector"), query.get("fieldSelector")))
        if method == "GET" and sub == "scale":
            return self._json(self._scale_view(info, self._get(info, namespace, name)))
        if method == "GET":
            return self._json(self._out(info, self._get(info, namespace, name)))
        if method == "POST" and name is None:
            return self._json(self._out(info, self._create(info, namespace, body)), 201)
        if method == "DELETE" and name is None:
            return self._json(self._delete_collection(info, namespace, query, body))
        if method == "DELETE" and sub is None:
            return self._json(self._out(info, self._delete(info, namespace, name, query, body)))
        if method in ("PUT", "PATCH") and name is not None:
            if method == "PATCH":
                ctype = request.content_type
                if ctype == "application/json-patch+json":
                    body = ("json", body)
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    body = ("merge", _strip_directives(body))
                else:
                    raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
            if not isinstance(body, (dict, tuple)):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            obj = self._update(info, namespace, name, sub, body)
            return self._json(self._scale_view(info, obj) if sub == "scale" else self._out(info, obj))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")

    @staticmethod
    def _json(data: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.json_response(data, status=status)

    @staticmethod
    def _out(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        return obj if obj.get("apiVersion") == info.api_version else {**obj, "apiVersion": info.api_version}

    # --- discovery ---

    def _non_resource(self, method: str, parts: list[str]) -> Any:
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")
        groups: dict[str, list[str]] = {}
        for g, v, _ in self._infos:
            if g and v not in groups.setdefault(g, []):
                groups[g].append(v)
        group_docs = {
            g: {
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
            }
            for g, vs in sorted(groups.items())
        }
        if parts == []:
            paths = ["/api", "/api/v1", "/apis", "/version", "/healthz", "/livez", "/readyz"]
            return {"paths": paths + [f"/apis/{g}" for g in group_docs]}
        if parts == ["version"]:
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-emulated", "platform": "linux/amd64"}
        if parts == ["api"]:
            cidrs = [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": cidrs}
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(group_docs.values())}
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in group_docs:
            return {"kind": "APIGroup", "apiVersion": "v1", **group_docs[parts[1]]}
        if parts and parts[0] in ("healthz", "livez", "readyz"):
            return "ok"
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        infos = [i for i in self._infos.values() if (i.group, i.version) == (group, version)]
        if not infos:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for i in infos:
            common = {"namespaced": i.namespaced, "singularName": i.singular, "kind": i.kind}
            resources.append(
                {"name": i.plural, **common, "verbs": VERBS, "shortNames": i.short_names, "categories": i.categories}
            )
            if i.status:
                resources.append({"name": f"{i.plural}/status", **common, "verbs": ["get", "patch", "update"]})
            if i.scale:
                scale = {"group": "autoscaling", "version": "v1", "kind": "Scale", "singularName": ""}
                resources.append(
                    {
                        "name": f"{i.plural}/scale",
                        "namespaced": i.namespaced,
                        **scale,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    # --- reading ---

    def _get(self, info: ResourceInfo, namespace: str | None, name: str | None) -> dict[str, Any]:
        ns = (namespace or "default") if info.namespaced else None
        obj = self._store[info.key].get((ns, name or ""))
        if obj is None:
            what = f"{info.plural}.{info.group}" if info.group else info.plural
            details = {"name": name, "group": info.group, "kind": info.plural}
            raise ApiError(404, "NotFound", f'{what} "{name}" not found', details)
        return obj

    def _list(self, info: ResourceInfo, namespace: str | None, labels: str | None, fields: str | None) -> Any:
        watcher = _Watcher(namespace, parse_label_selector(labels), parse_field_selector(fields), info.api_version)
        items = [self._out(info, o) for _, o in sorted(self._store[info.key].items(), key=lambda kv: kv[0])]
        return {
            "apiVersion": info.api_version,
            "kind": f"{info.kind}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [o for o in items if watcher.matches(o)],
        }

    async def _watch(
        self, request: aiohttp.web.BaseRequest, info: ResourceInfo, namespace: str | None, labels: Any, fields: Any
    ) -> aiohttp.web.StreamResponse:
        query = request.query
        watcher = _Watcher(namespace, parse_label_selector(labels), parse_field_selector(fields), info.api_version)
        since = query.get("resourceVersion", "")
        initial: list[dict[str, Any]] = []
        # Everything up to the registration is synchronous: no event can slip between the snapshot and the stream.
        if since in ("", "0") or query.get("sendInitialEvents") == "true":
            for _, obj in sorted(self._store[info.key].items(), key=lambda kv: kv[0]):
                if ev := watcher.event("ADDED", None, obj):
                    initial.append(ev)
            if query.get("sendInitialEvents") == "true":
                meta = {"resourceVersion": str(self._rv), "annotations": {"k8s.io/initial-events-end": "true"}}
                initial.append(
                    {
                        "type": "BOOKMARK",
                        "object": {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta},
                    }
                )
        else:
            if not since.isdigit():
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}")
            if int(since) < self._history_floor.get(info.key, 0):
                gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired"}
                initial.append({"type": "ERROR", "object": {**gone, "message": f"too old resource version: {since}"}})
                watcher.queue.put_nowait(_END)
            else:
                for rv, kind, old, new in self._history.get(info.key, ()):
                    if rv > int(since) and (ev := watcher.event(kind, old, new)):
                        initial.append(ev)
        self._watchers[info.key].add(watcher)
        try:
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)  # type: ignore[arg-type]
            for ev in initial:
                await response.write(json.dumps(ev).encode() + b"\n")
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while not self._closing:
                wait = 1.0 if deadline is None else min(1.0, deadline - loop.time())
                if wait <= 0 or request.transport is None or request.transport.is_closing():
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    continue
                if ev is _END:
                    break
                await response.write(json.dumps(ev).encode() + b"\n")
            await response.write_eof()
            return response
        except ConnectionError:
            return aiohttp.web.Response(status=499)
        finally:
            self._watchers[info.key].discard(watcher)

    # --- writing ---

    def _commit(
        self, info: ResourceInfo, old: dict[str, Any] | None, new: dict[str, Any], *, remove: bool = False
    ) -> dict[str, Any]:
        """Store the new state (or remove the object with it as the last state), bump the RV, notify watchers."""
        self._rv += 1
        final = copy.deepcopy(new)
        meta = final["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key, uid = (meta.get("namespace"), meta["name"]), meta["uid"]
        if remove:
            self._store[info.key].pop(key, None)
            self._uids.pop(uid, None)
            kind, old = "DELETED", final
        else:
            self._store[info.key][key] = final
            self._uids[uid] = (info.key, *key)
            kind = "ADDED" if old is None else "MODIFIED"
        history = self._history.setdefault(info.key, collections.deque(maxlen=self.history_limit))
        if len(history) == history.maxlen:
            self._history_floor[info.key] = history[0][0]
        history.append((self._rv, kind, old, final))
        for watcher in list(self._watchers.get(info.key, ())):
            if ev := watcher.event(kind, old, final):
                watcher.queue.put_nowait(ev)
        if remove:
            self._after_removal(info, final)
        elif info.key == CRD_KEY:
            self._register_crd(final)
        return final

    def _create(self, info: ResourceInfo, namespace: str | None, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            if namespace and meta.get("namespace") not in (None, namespace):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the URL")
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        bucket = self._store[info.key]
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(422, "Invalid", "metadata.name or metadata.generateName is required")
            while True:
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if (meta.get("namespace"), meta["generateName"] + suffix) not in bucket:
                    meta["name"] = meta["generateName"] + suffix
                    break
        if (meta.get("namespace"), meta["name"]) in bucket:
            what = f"{info.plural}.{info.group}" if info.group else info.plural
            details = {"name": meta["name"], "group": info.group, "kind": info.plural}
            raise ApiError(409, "AlreadyExists", f'{what} "{meta["name"]}" already exists', details)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
        obj.update(apiVersion=info.api_version, kind=info.kind)
        if info.status:
            obj.pop("status", None)
        if info.key == NS_KEY:
            obj["status"] = {"phase": "Active"}
        elif info.key == CRD_KEY:
            self._check_crd(obj)
        return self._commit(info, None, obj)

    def _update(self, info: ResourceInfo, namespace: str | None, name: str, sub: str | None, body: Any) -> dict:
        old = self._get(info, namespace, name)
        source = self._scale_view(info, old) if sub == "scale" else old
        if isinstance(body, tuple):
            kind, patch = body
            new = json_patch(source, patch) if kind == "json" else merge_patch(source, patch)
        else:
            new = copy.deepcopy(body)
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the result is not an object")
        new_meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
        if new_meta.get("resourceVersion") not in (None, "", old["metadata"]["resourceVersion"]):
            details = {"name": name, "group": info.group, "kind": info.plural}
            msg = (
                f'Operation cannot be fulfilled on {info.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
            raise ApiError(409, "Conflict", msg, details)
        if new_meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        if sub == "scale":
            replicas = (new.get("spec") or {}).get("replicas")
            new = copy.deepcopy(old)
            assert info.scale is not None
            _set_path(new, info.scale["specReplicasPath"], replicas)
        elif sub == "status":
            status, new = new.get("status"), copy.deepcopy(old)
            new.pop("status", None) if status is None else new.update(status=status)
        elif info.status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(422, "Invalid", "metadata must be an object")
        for k in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(k, None)
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        meta["generation"] = old["metadata"].get("generation", 1)
        new.update(apiVersion=old["apiVersion"], kind=old["kind"])
        if old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise ApiError(
                    422, "Invalid", f"no new finalizers can be added if the object is being deleted: {added}"
                )

        def spec(o: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in o.items() if k not in ("metadata", "status", "apiVersion", "kind")}

        if spec(new) != spec(old):
            meta["generation"] += 1
        if new == old:
            return old  # a no-op: no new resourceVersion, no event (as in the real API)
        if info.key == CRD_KEY:
            self._check_crd(new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._commit(info, old, new, remove=True)
        return self._commit(info, old, new)

    def _delete(self, info: ResourceInfo, namespace: str | None, name: str, query: Any, body: Any) -> dict:
        obj = self._get(info, namespace, name)
        opts = body if isinstance(body, dict) else {}
        pre = opts.get("preconditions") or {}
        for k in ("uid", "resourceVersion"):
            if pre.get(k) not in (None, obj["metadata"].get(k)):
                raise ApiError(409, "Conflict", f"precondition failed: {k} mismatch")
        orphan = (opts.get("propagationPolicy") or query.get("propagationPolicy")) == "Orphan"
        return self._delete_obj(info, obj, orphan=orphan)

    def _delete_obj(self, info: ResourceInfo, obj: dict[str, Any], *, orphan: bool = False) -> dict[str, Any]:
        if obj["metadata"].get("finalizers"):
            if obj["metadata"].get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"].update(deletionTimestamp=now_iso(), deletionGracePeriodSeconds=0)
            return self._commit(info, obj, new)
        if orphan:
            self._orphan(obj["metadata"]["uid"])
        return self._commit(info, obj, obj, remove=True)

    def _delete_collection(self, info: ResourceInfo, namespace: str | None, query: Any, body: Any) -> dict:
        listing = self._list(info, namespace, query.get("labelSelector"), query.get("fieldSelector"))
        for obj in listing["items"]:
            meta = obj["metadata"]
            if (current := self._store[info.key].get((meta.get("namespace"), meta["name"]))) is not None:
                self._delete_obj(info, current)
        return {**listing, "metadata": {"resourceVersion": str(self._rv)}}

    def _info_for(self, key: tuple[str, str]) -> ResourceInfo | None:
        return next((i for i in self._infos.values() if i.key == key), None)

    def _after_removal(self, info: ResourceInfo, obj: dict[str, Any]) -> None:
        """Garbage-collect dependents, cascade namespaces, unregister CRDs."""
        uid = obj["metadata"]["uid"]
        for key, bucket in list(self._store.items()):
            dep_info = self._info_for(key)
            for dep in list(bucket.values()):
                owners = [r.get("uid") for r in dep["metadata"].get("ownerReferences") or []]
                cascade = uid in owners and not any(o in self._uids for o in owners)
                in_ns = info.key == NS_KEY and dep["metadata"].get("namespace") == obj["metadata"]["name"]
                if dep_info and (cascade or in_ns):
                    current = bucket.get((dep["metadata"].get("namespace"), dep["metadata"]["name"]))
                    if current is not None:
                        self._delete_obj(dep_info, current)
        if info.key == CRD_KEY:
            group, plural = obj["spec"]["group"], obj["spec"]["names"]["plural"]
            crd_info = self._info_for((group, plural))
            for dep in list(self._store.get((group, plural), {}).values()):
                if crd_info is not None:
                    self._commit(crd_info, dep, dep, remove=True)
            for k in [k for k in self._infos if (k[0], k[2]) == (group, plural)]:
                del self._infos[k]

    def _orphan(self, uid: str) -> None:
        for key, bucket in list(self._store.items()):
            dep_info = self._info_for(key)
            for dep in list(bucket.values()):
                refs = dep["metadata"].get("ownerReferences") or []
                if dep_info and any(r.get("uid") == uid for r in refs):
                    new = copy.deepcopy(dep)
                    new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                    self._commit(dep_info, dep, new)

    # --- CRDs & scale ---

    @staticmethod
    def _check_crd(obj: dict[str, Any]) -> None:
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        if not spec.get("group") or not names.get("plural") or not names.get("kind") or not spec.get("versions"):
            raise ApiError(422, "Invalid", "a CRD needs spec.group, spec.names.plural/kind and spec.versions")
        if obj["metadata"]["name"] != f"{names['plural']}.{spec['group']}":
            raise ApiError(422, "Invalid", "a CRD's name must be <plural>.<group>")

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec, names = crd["spec"], crd["spec"]["names"]
        for k in [k for k in self._infos if (k[0], k[2]) == (spec["group"], names["plural"])]:
            del self._infos[k]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            subs = version.get("subresources") or spec.get("subresources") or {}
            self.register(
                ResourceInfo(
                    spec["group"], version["name"], names["plural"], names["kind"],
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    singular=names.get("singular") or names["kind"].lower(),
                    short_names=list(names.get("shortNames") or []),
                    categories=list(names.get("categories") or []),
                    status="status" in subs,
                    scale=dict(subs["scale"]) if "scale" in subs else None,
                )
            )  # fmt: skip
        if not crd.get("status", {}).get("acceptedNames"):
            conditions = [
                {"type": t, "status": "True", "reason": r, "message": "emulated", "lastTransitionTime": now_iso()}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ]
            new = {**crd, "status": {"acceptedNames": names, "conditions": conditions, "storedVersions": []}}
            self._commit(self._infos[CRD_KEY[0], "v1", CRD_KEY[1]], crd, new)

    @staticmethod
    def _scale_view(info: ResourceInfo, obj: dict[str, Any]) -> dict[str, Any]:
        assert info.scale is not None
        meta = {k: v for k, v in obj["metadata"].items() if k in ("name", "namespace", "uid", "resourceVersion")}
        meta["creationTimestamp"] = obj["metadata"].get("creationTimestamp")
        status: dict[str, Any] = {"replicas": dig(obj, info.scale["statusReplicasPath"]) or 0}
        if info.scale.get("labelSelectorPath") and dig(obj, info.scale["labelSelectorPath"]) is not None:
            status["selector"] = dig(obj, info.scale["labelSelectorPath"])
        replicas = dig(obj, info.scale["specReplicasPath"]) or 0
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": meta,
            "spec": {"replicas": replicas},
            "status": status,
        }
