"""Real ``lightly-server`` processes for tests, benchmarks and the demo.

``create_token`` makes a token the way an admin does (the CLI's ``create-token``); ``start_server``
runs ``serve`` on a free loopback port without proxy variables and waits until ``/healthz``
answers; ``ServerProcess.stop`` ends it. Nothing here fakes the server: it is the real CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from .net import PROXY_VARS, free_port
from .processes import stop_process

__all__ = ["SERVER_CLI", "ServerProcess", "create_token", "loopback_env", "start_server", "wait_healthy"]

#: how to run the server's CLI from this interpreter
SERVER_CLI: tuple[str, ...] = (sys.executable, "-m", "lightly_server.cli")


def loopback_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: this process's) without the proxy variables that would send loopback
    HTTP through a proxy."""
    return {k: v for k, v in (os.environ if environ is None else environ).items() if k not in PROXY_VARS}


def create_token(
    database_url: str,
    user: str,
    *,
    env: Mapping[str, str] | None = None,
    cli: Sequence[str] = SERVER_CLI,
    timeout: float | None = 60,
) -> str:
    """A token for ``user`` (created if new) on ``database_url``, from the CLI."""
    out = subprocess.run(
        [*cli, "create-token", "--database", database_url, "--user", user],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
    )
    return out.stdout.strip()


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_healthy(
    url: str,
    proc: subprocess.Popen,
    *,
    timeout: float = 30,
    log_path: Path | None = None,
    error: type[Exception] = RuntimeError,
) -> None:
    """Return when ``url/healthz`` answers 200; raise ``error`` (with the log) when the process
    exits first or ``timeout`` passes."""

    def log() -> str:
        return log_path.read_text(errors="replace") if log_path is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise error(f"server exited with {proc.returncode}:\n{log()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise error(f"server did not become healthy:\n{log()}")


def start_server(
    database_url: str,
    log_path: Path,
    *extra: str,
    port: int | None = None,
    artifacts_dir: Path | None = None,
    lease_seconds: float | None = None,
    log_level: str | None = "warning",
    env: Mapping[str, str] | None = None,
    cli: Sequence[str] = SERVER_CLI,
    timeout: float = 30,
    append_log: bool = False,
) -> ServerProcess:
    """``serve`` on 127.0.0.1 (``port``, default a free one), healthy when this returns; its output
    goes to ``log_path``. On failure the process is stopped and ``RuntimeError`` carries its log."""
    port = port or free_port()
    cmd = [*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--database", database_url]
    if artifacts_dir is not None:
        cmd += ["--artifacts-dir", str(artifacts_dir)]
    if lease_seconds is not None:
        cmd += ["--lease-seconds", str(lease_seconds)]
    if log_level is not None:
        cmd += ["--log-level", log_level]
    cmd += extra
    with open(log_path, "ab" if append_log else "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=loopback_env() if env is None else dict(env)
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_healthy(server.url, proc, timeout=timeout, log_path=log_path)
    except RuntimeError:
        server.stop()
        raise
    return server
