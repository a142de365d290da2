"""The pod ↔ worker contract (``lightly_protocol.pod_contract``): a pod the operator builds starts a worker
that finds everything where the builder put it.

The pod is built by the operator's ``build_pod``; its volumes are laid out under a temporary folder (each
``mountPath`` becomes a folder, Secret volumes get their files), its container's ``args`` and ``env`` are
rewritten by the same mapping, and the worker's real parsing (``parse_args`` over ``load_settings`` of
that environment) runs on them.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest
from lightly_operator.builders import build_ca_secret, build_pod
from lightly_operator.settings import OperatorSettings
from lightly_operator.spec import parse_spec
from lightly_protocol import pod_contract
from lightly_protocol.options import reference
from lightly_worker.config import WorkerArgs, api_verify, parse_args
from lightly_worker.settings import WorkerSettings

BODY = {"metadata": {"name": "fleet", "namespace": "ml", "uid": "u-1"}}
TOKEN = "s3cret-token"
API = "http://lightly-server.lightly:8080"
CA_PEM = Path(certifi.where()).read_text()  # any bundle of real PEM CA certificates


class PodFiles:
    """The pod's volumes under ``root``: ``mountPath`` → ``root/<volume name>``."""

    def __init__(self, pod: dict[str, Any], root: Path) -> None:
        container = pod["spec"]["containers"][0]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        self.mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        self.folders = {path: root / name for path, name in self.mounts.items()}
        secrets = {"lightly-token": {"token": TOKEN}, "api-ca": _secret_files(build_ca_secret(BODY, CA_PEM))}
        for path, folder in self.folders.items():
            folder.mkdir(parents=True)
            secret = volumes[self.mounts[path]].get("secret")
            if secret:
                data = secrets[self.mounts[path]]
                items = secret.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:  # the token Secret's key is "token" in this spec
                    (folder / item["path"]).write_text(data[item["key"]])

    def where(self, path: str) -> Path:
        """Where the pod's ``path`` is under the root; an error for a path that no volume holds."""
        mount = max(
            (m for m in self.folders if path == m or path.startswith(m.rstrip("/") + "/")), key=len, default=None
        )
        if mount is None:
            raise AssertionError(f"{path} is in no volume of the pod")
        return self.folders[mount] / path[len(mount) :].lstrip("/")

    def volume_of(self, path: str) -> str:
        mount = max((m for m in self.mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len)
        return self.mounts[mount]

    def rewrite(self, value: str) -> str:
        try:
            return str(self.where(value))
        except AssertionError:
            return value  # not a path of the pod (a URL, an id, a number)

    def worker(self, container: dict[str, Any]) -> WorkerArgs:
        """The worker's parsing of the container's arguments and environment, paths rewritten."""
        args = [f"{k}={self.rewrite(v)}" for k, _, v in (a.partition("=") for a in container["args"])]
        env = {e["name"]: self.rewrite(e["value"]) for e in container["env"]}
        return parse_args(args, env)


def _secret_files(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _pod(update: str, ca: bool) -> dict[str, Any]:
    spec = parse_spec(
        {
            "api": {"tokenSecretRef": {"name": "lightly-token"}},
            "updateStrategy": {"type": update},
            "workerConfig": {"worker.labels": "[gpu]", "lightly.loader.batch_size": 16},
            "input": {"persistentVolumeClaim": {"claimName": "in"}},
            "lightly": {"persistentVolumeClaim": {"claimName": "meta"}},
        }
    )
    settings = OperatorSettings(
        api_url=API, worker_image="worker:1", cluster_name="c1", ca_certs=certifi.where() if ca else ""
    )
    return build_pod(BODY, spec, 3, "w" * 24, "0123456789abcdef", settings, API)


@pytest.mark.parametrize(("update", "ca", "grace"), [("Recreate", True, 0.0), ("WhenIdle", False, 240.0)])
def test_a_pod_the_operator_builds_starts_a_worker_that_finds_everything(
    tmp_path: Path, update: str, ca: bool, grace: float
) -> None:
    pod = _pod(update, ca)
    container = pod["spec"]["containers"][0]
    files = PodFiles(pod, tmp_path)
    args = files.worker(container)
    settings = args.settings

    assert args.token() == TOKEN  # found through LIGHTLY_TOKEN_FILE in the token Secret's volume
    assert settings.server_location == API
    assert settings.worker_id == "w" * 24
    assert settings.metrics_port == container["ports"][0]["containerPort"] == 9100
    assert settings.shutdown_grace_seconds == grace
    assert settings.labels == ["gpu"] and args.lightly_overrides() == {"loader": {"batch_size": 16}}
    # the worker's folders are the pod's volumes of the same purpose (the worker keeps its defaults)
    for key, volume in (("input_mount", "input"), ("lightly_mount", "lightly"), ("output_dir", "output")):
        assert files.volume_of(str(args.path(key))) == volume, key
        assert files.where(str(args.path(key))).is_dir()
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["input"].get("readOnly") and not mounts["output"].get("readOnly")
    if ca:
        assert Path(settings.ca_certs or "").read_text() == CA_PEM
        assert isinstance(api_verify(settings.ca_certs), ssl.SSLContext)
    else:
        assert settings.ca_certs is None and api_verify(settings.ca_certs) is True


def test_every_variable_the_builder_sets_is_one_the_worker_reads() -> None:
    declared = {env for _flag, env, _default, _help in reference(WorkerSettings) if env}
    for ca in (True, False):
        container = _pod("Recreate", ca)["spec"]["containers"][0]
        assert {e["name"] for e in container["env"]} <= declared
    assert {pod_contract.ENV_SERVER_LOCATION, pod_contract.ENV_TOKEN_FILE, pod_contract.ENV_CA_CERTS} <= declared


def test_a_bucket_fleet_without_volumes_builds_a_valid_pod_whose_worker_starts(tmp_path: Path) -> None:
    """examples/lightlyworker-s3.yaml: no ``input``, no ``lightly``. The pod mounts only the token, /dev/shm,
    the output and /tmp (nothing that ties it to a node or needs shared storage), passes the Kubernetes
    schema, and the worker's parsing of it finds its token and server; its input_mount and lightly_mount
    are in no volume (a bucket datasource is read through the API's presigned URLs)."""
    import yaml

    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    example = yaml.safe_load((Path(__file__).parent.parent / "examples" / "lightlyworker-s3.yaml").read_text())
    assert "input" not in example["spec"] and "lightly" not in example["spec"]
    spec = parse_spec(example["spec"])
    settings = OperatorSettings(api_url=API, worker_image="worker:1", cluster_name="c1")
    body = {"metadata": {**example["metadata"], "namespace": "ml", "uid": "u-1"}}
    pod = build_pod(body, spec, 0, "w" * 24, "0123456789abcdef", settings, API)
    kubernetes_validate.validate(pod, "1.28", strict=True)

    container = pod["spec"]["containers"][0]
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"lightly-token", "dshm", "output", "tmp"}
    assert not any("persistentVolumeClaim" in v or "hostPath" in v for v in pod["spec"]["volumes"])
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert pod_contract.INPUT_MOUNT not in mounts and pod_contract.LIGHTLY_MOUNT not in mounts
    # the spread over nodes from the template, matching the fleet's pod labels
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    files = PodFiles(pod, tmp_path)
    args = files.worker(container)
    assert args.token() == TOKEN and args.settings.server_location == API
    for key in ("input_mount", "lightly_mount"):
        with pytest.raises(AssertionError, match="in no volume"):
            files.where(str(args.path(key)))
    assert files.volume_of(str(args.path("output_dir"))) == "output"
