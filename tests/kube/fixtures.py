"""pytest fixtures for tests against a real control plane (etcd + kube-apiserver + kube-controller-manager).

Use them from a test module with::

    pytest_plugins = ("kube.fixtures",)     # tests/ is on sys.path, so the package is ``kube``

    def test_something(kube, lightly_crd):
        kube.apply(MANIFEST)                  # real kubectl apply: the apiserver validates it
        with kube.operator(login=True):       # kopf.operator() with kopf's global registry, this namespace only
            pod = kube.wait_for(lambda: kube.list("pods", labels="app=worker"), what="a worker pod")
            kube.set_pod_status(pod[0], pod_running())      # play the kubelet

* ``control_plane`` (session): one :class:`lightly_devkit.envtest.ControlPlane` for the whole run, from
  ``$KUBEBUILDER_ASSETS``. Without it the tests skip with the reason; under ``CI=true`` they fail.
* ``kube`` (function): a :class:`~kube.harness.Kube` for a fresh namespace (its ``default`` ServiceAccount
  exists when the controller-manager runs); ``$KUBECONFIG`` (and the ``kubernetes`` client's frozen default
  path) point at a kubeconfig whose default namespace is that one, so ``kubectl get lw`` and the operator's
  own ``load_client()`` / ``@kopf.on.login`` reach it. At teardown: operators stop, custom objects' finalizers
  are dropped, the namespace is deleted (not awaited).
* ``lightly_crd`` (session): the LightlyWorker CRD applied with kubectl (no ``--validate=false``) and Established.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lightly_devkit.envtest import ControlPlane, assets_missing_reason

from .harness import Kube, namespace_name

ROOT = Path(__file__).resolve().parents[2]
LIGHTLY_CRD = ROOT / "crds" / "lightlyworkers.lightly.ai.yaml"


def require_control_plane() -> None:
    """Skip (fail under ``CI=true``) when there are no control plane binaries."""
    reason = assets_missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (under CI=true the real control plane is required)", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    require_control_plane()
    cp = ControlPlane(work_dir=tmp_path_factory.mktemp("control-plane"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def lightly_crd(control_plane: ControlPlane) -> Path:
    control_plane.kubectl("apply", "-f", str(LIGHTLY_CRD))
    control_plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/lightlyworkers.lightly.ai", timeout=40
    )
    return LIGHTLY_CRD


@pytest.fixture
def kube(
    control_plane: ControlPlane, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Kube]:
    if not control_plane.alive():
        pytest.fail(f"the control plane died:\n{control_plane.logs_tail()}", pytrace=False)
    helper = Kube(control_plane, namespace_name(request.node.name), show=("lightlyworkers.lightly.ai", "pods"))
    helper.create_namespace()
    monkeypatch.setenv("KUBECONFIG", str(helper.kubeconfig))
    try:
        import kubernetes.config.kube_config as kube_config
    except ImportError:  # pragma: no cover
        pass
    else:
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(helper.kubeconfig))
    try:
        yield helper
    finally:
        helper.close()
