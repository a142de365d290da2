"""Fixtures of real object stores (devkit/stores.py) and of a server that reaches them.

``stores`` starts moto's S3 server (any keys; presigned URLs unchecked), a second moto with IAM checks
(the wrong-key cases, reached as an OBS datasource, which carries its own endpoint), gcp-storage-emulator
and Azurite, each on a free loopback port. A store that is not installed is recorded with the reason:
``need(kind)`` skips the test with it, or fails it under ``CI=true`` (.ci/run installs them all).
``server`` (overriding conftest's) runs the real server with the stores' endpoints in its environment,
the way an operator points it at on-prem stores: ``AWS_ENDPOINT_URL`` (S3, STS), ``STORAGE_EMULATOR_HOST``
(GCS) and ``LIGHTLY_SERVER_AZURE_BLOB_ENDPOINT``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import Backend
from lightly_devkit.servers import ServerProcess, loopback_env, start_server
from lightly_devkit.stores import StoreMissing, StoreProcess, start_azurite, start_gcs, start_s3

SECRET_KEY = "bucket-tests-secret-key-0123456789abcdef"


@dataclass
class Stores:
    running: dict[str, StoreProcess] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def need(self, kind: str) -> StoreProcess:
        if kind in self.running:
            return self.running[kind]
        reason = self.missing.get(kind, f"no {kind} store")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (under CI=true every store is required; scripts/setup installs them)")
        pytest.skip(reason)

    def server_env(self) -> dict[str, str]:
        env = loopback_env()
        for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS", "STORAGE_EMULATOR_HOST"):
            env.pop(var, None)
        env.update(
            LIGHTLY_SERVER_SECRET_KEY=SECRET_KEY,
            LIGHTLY_SERVER_BUCKET_TIMEOUT_SECONDS="3",
            # the server's own AWS credentials: what S3DelegatedAccess assumes roles with
            AWS_ACCESS_KEY_ID="server-own-key",
            AWS_SECRET_ACCESS_KEY="server-own-secret",
        )
        if "s3" in self.running:
            env["AWS_ENDPOINT_URL"] = self.running["s3"].url
        if "gcs" in self.running:
            env["STORAGE_EMULATOR_HOST"] = self.running["gcs"].url
        if "azure" in self.running:
            env["LIGHTLY_SERVER_AZURE_BLOB_ENDPOINT"] = self.running["azure"].extra["endpoint"]
        return env


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    tmp = tmp_path_factory.mktemp("stores")
    out = Stores()
    starters: dict[str, Any] = {
        "s3": lambda: start_s3(tmp / "moto.log"),
        "s3auth": lambda: start_s3(tmp / "moto-auth.log", auth=True),
        "gcs": lambda: start_gcs(tmp / "gcs.log"),
        "azure": lambda: start_azurite(tmp / "azurite.log"),
    }
    try:
        for kind, start in starters.items():
            try:
                out.running[kind] = start()
            except StoreMissing as exc:
                out.missing[kind] = str(exc)
        yield out
    finally:
        for store in out.running.values():
            with contextlib.suppress(Exception):
                store.stop()


@pytest.fixture(scope="module")
def server(db_backend: Backend, stores: Stores) -> ServerProcess:
    port_server = start_server(
        db_backend.database_url,
        db_backend.tmp / f"bucket-server-{os.getpid()}.log",
        artifacts_dir=db_backend.artifacts_dir,
        env=stores.server_env(),
        log_level="info",
    )
    db_backend.servers.append(port_server)
    return port_server


def server_log(db_backend: Backend) -> str:
    return "\n".join(Path(s.log_path).read_text(errors="replace") for s in db_backend.servers)
