"""Test helpers for a real control plane (:mod:`lightly_devkit.envtest`); no pytest dependency.

* :class:`Kube` -- one namespace of a :class:`~lightly_devkit.envtest.ControlPlane`: kubectl, raw reads and
  status patches over HTTPS (resources named like ``"pods"`` or ``"lightlyworkers.lightly.ai"``), events,
  wait helpers that print what they saw on timeout, and :meth:`Kube.operator` (an :class:`OperatorThread`).
* :class:`OperatorThread` -- ``kopf.operator(...)`` in its own thread and event loop, connected through a
  pre-filled credentials vault (CA-verified, admin token), or through kopf's login handlers (``login=True``:
  the operator's own ``@kopf.on.login``, which reads ``$KUBECONFIG``).
* :func:`fast_settings` -- kopf settings with test-friendly delays.
* Playing the kubelet (there is none): :func:`pod_running`, :func:`pod_unschedulable`, :func:`pod_waiting`
  build ``pods/status`` bodies for :meth:`Kube.set_pod_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self, TypeVar

import httpx
import yaml
from lightly_devkit.envtest import ControlPlane
from lightly_devkit.pods import pod_running as pod_running  # re-exported: tests play the kubelet with it

T = TypeVar("T")
MERGE = {"Content-Type": "application/merge-patch+json"}


# ---------------------------------------------------------------------------- kopf in a thread


def fast_settings(settings: Any = None) -> Any:
    """kopf settings with test-friendly delays (an operator's own ``on.startup`` may override them)."""
    import kopf

    settings = settings if settings is not None else kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1.0]
    settings.networking.request_timeout = 30
    settings.queueing.error_delays = [0.1, 0.2, 0.5, 1.0]
    settings.watching.reconnect_backoff = 0.1
    settings.background.cancellation_polling = 0.2
    settings.background.instant_exit_timeout = 0.5
    settings.queueing.exit_timeout = 1.0
    return settings


class OperatorThread:
    """``kopf.operator(...)`` in its own thread and event loop.

    A context manager: entering waits for kopf's ready flag; exiting raises the stop flag, joins the thread
    and re-raises what the operator raised. Handlers come from ``registry`` (default: kopf's global registry).
    Credentials: ``connection`` (a ``kopf.ConnectionInfo``) pre-fills kopf's vault, so login handlers are not
    consulted; with ``login=True`` kopf runs the registry's login handlers instead.
    """

    def __init__(
        self,
        connection: Any = None,
        *,
        registry: Any = None,
        settings: Any = None,
        namespaces: Collection[str] = (),
        clusterwide: bool | None = None,
        standalone: bool = True,
        memo: object | None = None,
        fast: bool = True,
        login: bool = False,
        startup_timeout: float = 30.0,
        stop_timeout: float = 20.0,
    ) -> None:
        if connection is None and not login:
            raise ValueError("pass a kopf.ConnectionInfo, or login=True")
        self.connection = connection
        self.registry = registry
        self.settings = fast_settings(settings) if fast else settings
        self.namespaces = tuple(namespaces)
        self.clusterwide = (not self.namespaces) if clusterwide is None else clusterwide
        self.standalone = standalone
        self.memo = memo
        self.login = login
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._main, name=f"kopf-operator-{id(self):x}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.ready_flag.wait(0.02):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop_flag.set()
                raise RuntimeError(f"the kopf operator did not get ready: {self.error!r}") from self.error
        return self

    def _main(self) -> None:
        import kopf

        async def main() -> None:
            vault = None
            if not self.login:
                from kopf._cogs.structs.credentials import Vault  # kopf does not export it

                vault = Vault({"envtest": self.connection})
            await kopf.operator(
                registry=self.registry,
                settings=self.settings,
                standalone=self.standalone,
                clusterwide=self.clusterwide,
                namespaces=self.namespaces,
                memo=self.memo,
                vault=vault,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
            )

        try:
            asyncio.run(main())
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.stop_flag.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the kopf operator did not stop within {self.stop_timeout}s")
        if self.error is not None:
            raise RuntimeError(f"the kopf operator failed: {self.error!r}") from self.error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(Exception):  # do not mask the test's own failure
                self.stop()


# ---------------------------------------------------------------------------- playing the kubelet


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_unschedulable(message: str = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.") -> dict[str, Any]:
    """``pods/status`` the scheduler writes when no node fits: PodScheduled=False, reason Unschedulable."""
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": _now(),
            }
        ],
    }


def pod_waiting(reason: str = "ImagePullBackOff", message: str = "", container: str = "worker") -> dict[str, Any]:
    """``pods/status`` of a scheduled pod whose container waits (``ImagePullBackOff``, ``CrashLoopBackOff``...)."""
    now = _now()
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": container,
                "ready": False,
                "restartCount": 0,
                "image": "worker",
                "imageID": "",
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


# ---------------------------------------------------------------------------- one namespace


def namespace_name(hint: str) -> str:
    """A fresh DNS-label namespace name from a test name: ``t-<hint>-<hex>``."""
    slug = re.sub(r"[^a-z0-9-]+", "-", hint.lower().removeprefix("test_")).strip("-")[:40].strip("-")
    return f"t-{slug or 'x'}-{secrets.token_hex(3)}"


class Kube:
    """One test's view of the control plane: its ``namespace`` (the default for every call) and helpers.

    ``kubectl(...)`` runs with a kubeconfig whose default namespace is ``namespace``; ``get``/``list`` read over
    HTTPS (no kubectl start-up per poll); ``wait_for`` prints the namespace's objects and events on timeout.
    """

    def __init__(self, cp: ControlPlane, namespace: str, show: Iterable[str] = ()) -> None:
        self.cp = cp
        self.namespace = namespace
        self.kubeconfig = cp.kubeconfig_for(namespace=namespace, name=namespace)
        self.show = tuple(show) or ("pods",)
        self._http: httpx.Client | None = None
        self._discovery: dict[str, dict[str, tuple[str, bool]]] = {}
        self._operators: list[OperatorThread] = []

    # -- plumbing

    @property
    def http(self) -> httpx.Client:
        """An ``httpx.Client`` for raw API calls (``base_url`` the apiserver, admin token, CA-verified)."""
        if self._http is None:
            self._http = httpx.Client(
                base_url=self.cp.url,
                verify=ssl.create_default_context(cafile=str(self.cp.ca_file)),
                headers={"Authorization": f"Bearer {self.cp.token}"},
                timeout=30,
                trust_env=False,
            )
        return self._http

    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` (admin), no global configuration touched."""
        return self.cp.api_client(self.kubeconfig)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> Any:  # subprocess.CompletedProcess[str]
        """``kubectl --kubeconfig <this namespace's> ...``; raises with stderr shown when it fails and ``check``."""
        return self.cp.kubectl(*args, kubeconfig=self.kubeconfig, input=input, check=check, timeout=timeout)

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]] | str | Path, *, check: bool = True) -> Any:
        """``kubectl apply -f`` a dict, a list of dicts, YAML text or a file (server-side schema checks apply)."""
        if isinstance(manifest, Path):
            return self.kubectl("apply", "-f", str(manifest), check=check)
        if isinstance(manifest, dict):
            text = yaml.safe_dump(manifest)
        elif isinstance(manifest, list):
            text = yaml.safe_dump_all(manifest)
        else:
            text = manifest
        return self.kubectl("apply", "-f", "-", input=text, check=check)

    def _resources(self, group_version: str) -> dict[str, tuple[str, bool]]:
        if group_version not in self._discovery:
            path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
            r = self.http.get(path)
            r.raise_for_status()
            found = {
                res["name"]: (group_version, bool(res["namespaced"]))
                for res in r.json()["resources"]
                if "/" not in res["name"]
            }
            self._discovery[group_version] = found
        return self._discovery[group_version]

    def resource_path(self, resource: str, name: str | None = None, namespace: str | None = None) -> str:
        """URL path of ``"pods"``, ``"deployments.apps"``, ``"lightlyworkers.lightly.ai"`` (optionally one object)."""
        plural, _, group = resource.partition(".")
        if group:
            r = self.http.get(f"/apis/{group}")
            if r.status_code == 404:
                raise LookupError(f"the API server serves no group {group!r} (is the CRD applied?)")
            r.raise_for_status()
            gv = r.json()["preferredVersion"]["groupVersion"]
        else:
            gv = "v1"
        info = self._resources(gv).get(plural)
        if info is None:
            self._discovery.pop(gv, None)
            info = self._resources(gv).get(plural)
        if info is None:
            raise LookupError(f"the API server serves no resource {resource!r}")
        prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        ns = namespace if namespace is not None else self.namespace
        path = f"{prefix}/namespaces/{ns}/{plural}" if info[1] and ns else f"{prefix}/{plural}"
        return f"{path}/{name}" if name else path

    # -- reads and writes

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        r = self.http.get(self.resource_path(resource, name, namespace))
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def list(
        self, resource: str, namespace: str | None = None, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects in ``namespace`` (default: this test's; ``""``: all namespaces) matching the selectors."""
        params = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        r = self.http.get(self.resource_path(resource, namespace=namespace), params=params)
        r.raise_for_status()
        return r.json()["items"]

    def delete(self, resource: str, name: str, namespace: str | None = None) -> None:
        r = self.http.delete(self.resource_path(resource, name, namespace))
        if r.status_code != 404:
            r.raise_for_status()

    def patch_status(
        self, resource: str, name: str, status: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the ``status`` subresource."""
        r = self.http.patch(
            self.resource_path(resource, name, namespace) + "/status", json={"status": status}, headers=MERGE
        )
        assert r.status_code == 200, f"PATCH {resource}/{name}/status: {r.status_code} {r.text}"
        return r.json()

    def set_pod_status(self, pod: dict[str, Any] | str, status: dict[str, Any]) -> dict[str, Any]:
        """Play the kubelet/scheduler: merge-patch ``pods/status`` (see :func:`pod_running` and friends)."""
        name = pod if isinstance(pod, str) else pod["metadata"]["name"]
        return self.patch_status("pods", name, status)

    def events(self, reason: str | None = None, namespace: str | None = None) -> list[dict[str, Any]]:
        """Core v1 Events of the namespace, optionally only those with ``reason``."""
        items = self.list("events", namespace=namespace)
        return [e for e in items if reason is None or e.get("reason") == reason]

    # -- waiting

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 20.0,
        what: str = "the condition",
        *,
        step: float = 0.05,
        show: Iterable[str] | None = None,
    ) -> T:
        """Poll until ``predicate()`` is truthy and return it; on timeout raise with what the namespace holds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
            except (httpx.HTTPError, LookupError) as exc:  # e.g. a CRD not served yet
                last = exc
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what} (last: {last!r})\n{self.describe(show)}"
                )
            time.sleep(step)

    def wait_deleted(self, resource: str, name: str, timeout: float = 30.0, namespace: str | None = None) -> None:
        self.wait_for(lambda: self.get(resource, name, namespace) is None, timeout, f"{resource}/{name} to be gone")

    def describe(self, show: Iterable[str] | None = None) -> str:
        """A short dump of the namespace: the objects of ``show`` (default: this helper's) and all events."""
        out: list[str] = [f"=== namespace {self.namespace}"]
        for resource in (*(show if show is not None else self.show), "events"):
            try:
                items = self.list(resource)
            except Exception as exc:
                out.append(f"--- {resource}: cannot list: {exc}")
                continue
            out.append(f"--- {resource} ({len(items)})")
            for obj in items:
                out.append(_summary(resource, obj))
        return "\n".join(out)

    def wait_default_service_account(self, timeout: float = 30.0) -> None:
        """The controller-manager creates ``default`` in each new namespace; pods need it (ServiceAccount admission)."""
        if self.cp.has_controller_manager:
            self.wait_for(
                lambda: self.get("serviceaccounts", "default"), timeout, "the default ServiceAccount", show=()
            )

    # -- operators

    def operator(self, **kwargs: Any) -> OperatorThread:
        """An :class:`OperatorThread` for this control plane; default: watching only this namespace."""
        kwargs.setdefault("namespaces", (self.namespace,))
        if not kwargs.get("login"):
            kwargs.setdefault("connection", self.cp.connection_info())
        op = OperatorThread(**kwargs)
        self._operators.append(op)
        return op

    # -- lifecycle (the fixture calls these)

    def create_namespace(self) -> None:
        r = self.http.post("/api/v1/namespaces", json={"metadata": {"name": self.namespace}})
        assert r.status_code == 201, r.text
        self.wait_default_service_account()

    def close(self, delete_namespace: bool = True) -> None:
        for op in self._operators:
            op.stop_flag.set()
        for op in self._operators:
            if op._thread is not None:
                op._thread.join(op.stop_timeout)
        if delete_namespace:
            with contextlib.suppress(Exception):
                self._release_finalizers()
            with contextlib.suppress(Exception):
                self.http.delete(f"/api/v1/namespaces/{self.namespace}")
        if self._http is not None:
            self._http.close()

    def _release_finalizers(self) -> None:
        """No operator runs any more: drop finalizers of custom objects so the namespace can go."""
        r = self.http.get("/apis")
        for group in r.json()["groups"]:
            gv = group["preferredVersion"]["groupVersion"]
            if group["name"].endswith(".k8s.io") or "." not in group["name"]:
                continue
            for plural, (_, namespaced) in self._resources(gv).items():
                if not namespaced:
                    continue
                for obj in self.http.get(f"/apis/{gv}/namespaces/{self.namespace}/{plural}").json().get("items", []):
                    if obj["metadata"].get("finalizers"):
                        self.http.patch(
                            f"/apis/{gv}/namespaces/{self.namespace}/{plural}/{obj['metadata']['name']}",
                            json={"metadata": {"finalizers": None}},
                            headers=MERGE,
                        )


def _summary(resource: str, obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    if resource == "events":
        inv = obj.get("involvedObject", {})
        return f"  {obj.get('type')} {obj.get('reason')} {inv.get('kind')}/{inv.get('name')}: {obj.get('message')}"
    status = obj.get("status") or {}
    head = f"  {meta.get('name')}" + (" (deleting)" if meta.get("deletionTimestamp") else "")
    if resource == "pods":
        conds = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return f"{head} phase={status.get('phase')} conditions={conds} labels={meta.get('labels')}"
    return f"{head} spec={json.dumps(obj.get('spec'), default=str)} status={json.dumps(status, default=str)}"
