"""pytest fixtures of the end-to-end suites on a real cluster (see tests/cluster.py).

``stack`` (session): the Helm chart applied with kubectl into a fresh namespace, the bundled API server
reached through a port-forward, a token from the chart's bootstrap, and the unmodified ``lightly``
client with a dataset of generated images (also mounted into worker pods from a ConfigMap).
Without ``LIGHTLY_E2E_KUBECONFIG`` or a container engine these skip with the reason, except under
``CI=true``, where they fail. Use with ``pytest_plugins = ("e2e_fixtures",)``.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cluster import (
    CHART,
    FULLNAME,
    INPUT_CONFIGMAP,
    OPERATOR_SELECTOR,
    RELEASE,
    Kube,
    Stack,
    image_values,
    input_configmap,
    load_images,
    missing_reason,
    render_chart,
    require,
)
from lightly_devkit.net import PROXY_VARS, free_port


@pytest.fixture(scope="session")
def e2e_kube() -> Kube:
    require(missing_reason())
    k = Kube(os.environ["LIGHTLY_E2E_KUBECONFIG"])
    k.run("version")
    return k


@pytest.fixture(scope="session")
def e2e_images() -> dict[str, str]:
    from lightly_devkit import engine

    require(engine.unavailable_reason())
    try:
        results = engine.build_images()
    except engine.BuildError as exc:  # no registry for the base image: skip outside CI, with the engine's message
        verdict, why = engine.build_failure_verdict(str(exc), engine.is_ci())
        if verdict == "skip":
            pytest.skip(why)
        raise
    for r in results.values():
        print(r.describe())
    tags = {name: r.tag for name, r in results.items()}
    print(load_images(list(tags.values())))
    return tags


def e2e_policy(worker_repository: str, registry: str | None) -> dict[str, Any]:
    if not registry:
        return {}
    return {"allowedImages": [f"{worker_repository}:*", f"{registry}/*"], "allowedRegistries": [registry]}


#: the address of this machine that the cluster's pods reach (the single-node kit's host address; with kind,
#: the docker network's gateway): the e2e S3 server listens there
HOST_ADDRESS_ENV = "LIGHTLY_E2E_HOST_ADDRESS"
KIT_HOST_ADDRESS = "10.199.0.1"


@dataclass
class E2eS3:
    """moto's S3 server on this machine where pods reach it (``url``), or why there is none (``missing``)."""

    url: str = ""
    missing: str | None = None


@pytest.fixture(scope="session")
def e2e_s3() -> Iterator[E2eS3]:
    """moto's S3 server bound to ``$LIGHTLY_E2E_HOST_ADDRESS`` (default the kit's 10.199.0.1): the bundled
    server gets it as ``AWS_ENDPOINT_URL`` (its presigned URLs then point there, for the worker pods). When it
    cannot start, the bucket tests skip (fail under CI) with ``missing``; the other e2e tests do not need it."""
    host = os.environ.get(HOST_ADDRESS_ENV, KIT_HOST_ADDRESS)
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        yield E2eS3(missing=f"moto[server] is not installed (the [test] extra): {exc}")
        return
    try:
        with socket.socket() as probe:
            probe.bind((host, 0))  # the address exists on this machine (the kit's node adds it while it runs)
    except OSError as exc:
        yield E2eS3(
            missing=f"cannot listen on {host} ({exc}); set {HOST_ADDRESS_ENV} to this machine's address "
            "that the cluster's pods reach"
        )
        return
    server = ThreadedMotoServer(ip_address=host, port=free_port(host), verbose=False)
    server.start()
    try:
        yield E2eS3(url="http://{}:{}".format(*server.get_host_and_port()))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def stack(e2e_kube: Kube, e2e_images: dict[str, str], e2e_s3: E2eS3) -> Iterator[Stack]:
    kube, images = e2e_kube, e2e_images
    ns = f"lightly-e2e-{os.getpid()}"
    kube.run("create", "namespace", ns)
    values: dict[str, Any] = {
        "image": image_values(images["operator"]),
        "workerImage": {"repository": images["worker"].rpartition(":")[0], "tag": "dev"},
        "settings": {"resyncSeconds": 2, "sweepSeconds": 30},
        # what the platform team allows: the dev worker image, and the private registry's images (test_e2e_registry)
        "policy": e2e_policy(images["worker"].rpartition(":")[0], os.environ.get("LIGHTLY_E2E_REGISTRY")),
        "server": {
            "enabled": True,
            "image": image_values(images["server"]),
            "persistence": {"enabled": False},
            "leaseSeconds": 20,
            # S3 datasources are read from the e2e S3 server (the AWS SDKs' variable, honoured by the server)
            "extraEnv": [{"name": "AWS_ENDPOINT_URL", "value": e2e_s3.url}] if e2e_s3.url else [],
        },
    }
    try:
        kube.run("apply", "-f", str(CHART / "crds"))
        kube.apply(render_chart(values, RELEASE, ns))
        server = f"{FULLNAME}-server"
        kube.wait_condition(ns, f"deploy/{server}", "condition=Available", 240, operator_selector=OPERATOR_SELECTOR)
        # clusters without DNS (the single-node kit) cannot resolve Service names: point the operator
        # (and through it the workers) at the server's ClusterIP, as `helm upgrade --set apiUrl=...` would
        ip = kube.json("-n", ns, "get", "svc", server)["spec"]["clusterIP"]
        values["apiUrl"] = f"http://{ip}:8080"
        kube.apply(render_chart(values, RELEASE, ns))
        kube.run("-n", ns, "rollout", "status", f"deploy/{FULLNAME}", "--timeout=240s", timeout=270)
        token = kube.wait_for(
            lambda: kube.get(ns, "secret", "lightly-token"), what="the bootstrapped token Secret", timeout=60, ns=ns
        )
        token = base64.b64decode(token["data"]["token"]).decode()
        kube.apply([input_configmap(INPUT_CONFIGMAP)], ns=ns)
        with kube.port_forward(ns, f"svc/{server}", 8080) as port:
            saved = {
                k: os.environ.get(k) for k in ("LIGHTLY_SERVER_LOCATION", "LIGHTLY_DID_VERSION_CHECK", *PROXY_VARS)
            }
            os.environ.update(LIGHTLY_SERVER_LOCATION=f"http://127.0.0.1:{port}", LIGHTLY_DID_VERSION_CHECK="True")
            for var in PROXY_VARS:
                os.environ.pop(var, None)
            try:
                yield Stack(kube, ns, port, token)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    finally:
        kube.run("delete", "namespace", ns, "--wait=false", check=False)
