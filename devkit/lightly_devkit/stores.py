"""Real object-store servers for tests and benchmarks, each a subprocess on a free loopback port.

* ``start_s3`` -- moto's S3 server (``moto[server]``). ``auth=False`` (default): any keys are accepted and
  presigned URLs are served without checking their signature or expiry (moto does not check them).
  ``auth=True``: moto's IAM checks every request's keys (``INITIAL_NO_AUTH_ACTION_COUNT``), so wrong keys get
  ``403 SignatureDoesNotMatch`` or ``InvalidAccessKeyId``; moto then answers presigned URLs with a 500, so
  tests use it only for the wrong-key cases.
* ``start_gcs`` -- gcp-storage-emulator (PyPI). It accepts any credentials and does not check signed URLs.
* ``start_azurite`` -- Azurite's blob service (npm ``azurite``, installed by scripts/setup into ``.tools/``).
  It checks shared keys and SAS signatures and expiry like Azure.

Each ``start_*`` raises ``StoreMissing`` (with what to install) when the server is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .net import PROXY_VARS, free_port
from .processes import stop_process

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_BIN",
    "AZURITE_KEY",
    "StoreMissing",
    "StoreProcess",
    "gcs_service_account",
    "start_azurite",
    "start_gcs",
    "start_s3",
]

ROOT = Path(__file__).resolve().parents[2]
#: where scripts/setup installs Azurite (npm, project-local)
AZURITE_BIN = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's well-known development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class StoreMissing(RuntimeError):
    """The store server is not installed (the message says how to install it)."""


@dataclass
class StoreProcess:
    kind: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    #: keys that work (S3 with auth: an IAM user's; Azurite: the development account's)
    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key"
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        stop_process(self.proc)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra or {})
    return env


def _start(kind: str, argv: Sequence[str], url: str, log_path: Path, ready: str, env: dict[str, str]) -> StoreProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    store = StoreProcess(kind, url, proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}:\n{store.log_tail()}")
        try:
            httpx.get(url + ready, timeout=1, trust_env=False)
            return store
        except httpx.HTTPError:
            time.sleep(0.1)
    store.stop()
    raise RuntimeError(f"{kind} server did not answer at {url} within 60 s:\n{store.log_tail()}")


def start_s3(log_path: Path, *, auth: bool = False) -> StoreProcess:
    """moto's S3 (and STS, IAM) server; with ``auth`` an IAM user whose keys are ``access_key``/``secret_key``."""
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        raise StoreMissing(f"moto[server] is not installed (pip install -e '.[test]'): {exc}") from None
    port = free_port()
    env = _env({"MOTO_PORT": str(port)})
    env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
    if auth:  # the first three requests (creating the IAM user) go unchecked, every later one is checked
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    url = f"http://127.0.0.1:{port}"
    store = _start(
        "s3",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        url,
        log_path,
        "/moto-api/",
        env,
    )
    if auth:
        import boto3

        iam = boto3.client(
            "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="lightly-tests")
        key = iam.create_access_key(UserName="lightly-tests")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="lightly-tests", PolicyName="all", PolicyDocument=json.dumps(policy))
        store.access_key, store.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    return store


def start_gcs(log_path: Path) -> StoreProcess:
    exe = shutil.which("gcp-storage-emulator", path=str(Path(sys.executable).parent)) or shutil.which(
        "gcp-storage-emulator"
    )
    if exe is None:
        raise StoreMissing("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [exe, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    return _start("gcs", argv, url, log_path, "/storage/v1/b", _env())


def gcs_service_account(project: str = "lightly-tests") -> str:
    """A service account key (JSON) with a fresh RSA key: what ``set_gcs_config`` takes; signs V4 URLs."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": project,
            "private_key_id": base64.b16encode(os.urandom(8)).decode().lower(),
            "private_key": pem,
            "client_email": f"tests@{project}.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def start_azurite(log_path: Path) -> StoreProcess:
    if not AZURITE_BIN.exists():
        raise StoreMissing(f"Azurite is not installed at {AZURITE_BIN} (scripts/setup installs it with npm)")
    if shutil.which("node") is None:
        raise StoreMissing("Azurite needs node (>= 18) on PATH")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(AZURITE_BIN),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
    ]
    store = _start("azure", argv, url, log_path, "/", _env())
    store.access_key, store.secret_key = AZURITE_ACCOUNT, AZURITE_KEY
    store.extra["endpoint"] = f"{url}/{{account}}"
    return store
