"""pytest fixtures for testing kopf operators, ``kubectl`` and ``kubernetes``-client code against the emulator.

Use them from a test module with::

    pytest_plugins = ("k8s.fixtures",)      # tests/ is on sys.path, so the package is ``k8s``

    def test_something(k8s):
        k8s.kubectl("apply", "--validate=false", "-f", "crds/lightlyworker.yaml")
        with k8s.operator():                  # runs kopf.operator() with kopf's global registry
            k8s.wait_watching("lightlyworkers.lightly.ai")
            k8s.kubectl("apply", "--validate=false", "-f", "-", input=MANIFEST)
            pod = k8s.wait_for(lambda: k8s.list("pods", labels="app=worker"), what="a worker pod")
            ...

``k8s`` (function-scoped: a fresh emulator per test) is a :class:`K8s`:

* ``url``, ``kubeconfig`` (a file in ``tmp_path``), ``emulator`` (the :class:`K8sEmulator`), ``server``.
* ``http`` -- an ``httpx.Client`` with ``base_url=url`` for raw API calls (closed at teardown).
* ``api_client()`` -- a ``kubernetes.client.ApiClient`` configured explicitly from the kubeconfig
  (no global state): ``kubernetes.client.CoreV1Api(k8s.api_client())``.
* ``kubectl(*args, input=None, check=True)`` -- ``/usr/bin/kubectl --kubeconfig ... --cache-dir ...``
  returning ``subprocess.CompletedProcess[str]``; raises with stderr shown if it fails and ``check``.
  ``akubectl(...)`` is the same for async tests (runs in a thread). Pass ``--validate=false`` to
  ``apply``/``create``/``replace``: the emulator has no ``/openapi``.
* ``operator(**kwargs)`` -- an :class:`~tests.k8s.harness.OperatorThread` (a context manager) that runs
  ``kopf.operator(...)`` against this emulator; kwargs: ``registry``, ``settings``, ``namespaces``,
  ``clusterwide``, ``standalone`` (default True), ``memo``, ``fast`` (test-friendly delays), ``login``.
* ``wait_watching("plural.group")`` -- block until a watch stream on that resource is open (after
  ``operator()`` is entered and before creating objects the operator must react to).
* ``get(resource, name, namespace="default")`` / ``list(resource, namespace=None, labels=None)`` -- read
  the emulator's store directly (``resource`` is ``"pods"``, ``"deployments.apps"``, ``"widgets.example.com"``).
* ``wait_for(predicate, timeout=10, what=...)`` -- poll until the predicate returns something truthy.

The fixture also points ``$KUBECONFIG`` and ``kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION``
(which the client froze at import time) at the emulator for the test's duration, so code that calls
``kubernetes.config.load_kube_config()`` without arguments, and kopf's default ``login_via_client``,
also reach the emulator. To be testable, an operator should therefore either talk to the API through
kopf (handlers' return values, patches, ``kopf.adopt``, kopf's credentials) or build its own clients at
call time (inside handlers / ``on.startup``), never at import time. A custom ``@kopf.on.login`` is not
consulted by ``k8s.operator()`` (its vault is pre-filled) unless ``login=True`` is passed.

Tests with these fixtures are plain sync tests: the emulator and the operator each run in their own
thread and event loop, so blocking calls in the test are fine. In ``async`` tests, do not block the
loop needlessly; the emulator is unaffected either way.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from .emulator import K8sEmulator, fields_match, labels_match, parse_field_selector, parse_label_selector
from .harness import EmulatorServer, OperatorThread, wait_until, write_kubeconfig

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
PROXY_VARS = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy")
T = TypeVar("T")


def split_resource(resource: str) -> tuple[str, str]:
    """``"widgets.example.com"`` -> ``("example.com", "widgets")``; ``"pods"`` -> ``("", "pods")``."""
    plural, _, group = resource.partition(".")
    return group, plural


class K8s:
    """What the ``k8s`` fixture gives a test; see the module docstring."""

    def __init__(self, server: EmulatorServer, kubeconfig: Path, cache_dir: Path) -> None:
        self.server = server
        self.kubeconfig = kubeconfig
        self.cache_dir = cache_dir
        self._http: httpx.Client | None = None
        self._operators: list[OperatorThread] = []

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def emulator(self) -> K8sEmulator:
        return self.server.emulator

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        return self._http

    def api_client(self) -> Any:
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env.update(KUBECONFIG=str(self.kubeconfig), NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=self.kubectl_env(), check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    async def akubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.kubectl, *args, **kwargs)

    def operator(self, **kwargs: Any) -> OperatorThread:
        op = OperatorThread(self.url, **kwargs)
        self._operators.append(op)
        return op

    def wait_watching(self, resource: str, *, count: int = 1, timeout: float = 10.0) -> None:
        self.server.wait_watching(*split_resource(resource), count=count, timeout=timeout)

    def get(self, resource: str, name: str, namespace: str | None = "default") -> dict[str, Any] | None:
        group, plural = split_resource(resource)
        info = next((i for i in self.emulator.resources() if (i.group, i.plural) == (group, plural)), None)
        return self.emulator.get_object(group, plural, namespace if info is None or info.namespaced else None, name)

    def list(
        self, resource: str, namespace: str | None = None, labels: str | None = None, fields: str | None = None
    ) -> list[dict[str, Any]]:
        lsel, fsel = parse_label_selector(labels), parse_field_selector(fields)
        return [
            obj
            for obj in self.emulator.list_objects(*split_resource(resource), namespace)
            if labels_match(lsel, obj["metadata"].get("labels")) and fields_match(fsel, obj)
        ]

    @staticmethod
    def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "the condition") -> T:
        return wait_until(predicate, timeout, what)

    def close(self) -> None:
        for op in self._operators:
            op.stop_flag.set()
        for op in self._operators:
            if op._thread is not None:
                op._thread.join(op.stop_timeout)
        if self._http is not None:
            self._http.close()


@pytest.fixture()
def k8s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[K8s]:
    """A fresh emulator served over http, a kubeconfig for it, and helpers (see :class:`K8s`)."""
    with EmulatorServer() as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        try:
            import kubernetes.config.kube_config as kube_config
        except ImportError:  # pragma: no cover
            pass
        else:
            monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        helper = K8s(server, kubeconfig, tmp_path / "kubectl-cache")
        try:
            yield helper
        finally:
            helper.close()
