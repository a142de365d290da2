"""No token in any log line: the redaction every component installs (``lightly_protocol.logsafe``),
and each component's own command line and HTTP client with it, over real HTTP."""

from __future__ import annotations

import asyncio
import logging
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Backend, ServerProcess
from lightly_devkit.servers import loopback_env
from lightly_protocol.logsafe import REDACTED, install_log_redaction, redact

TOKEN = "tok_" + secrets.token_hex(16)


@pytest.mark.parametrize(
    "text",
    [
        f"HTTP Request: GET http://server:8080/v1/docker/worker?token={TOKEN} 200 OK",
        f"GET /v1/x?state=OPEN&token={TOKEN}&labels=gpu",
        f"url='http://h/v1?token={TOKEN}'",
        f'{{"url": "http://h/v1?TOKEN={TOKEN}"}}',
        f"access_token={TOKEN}; more",
    ],
)
def test_redact_removes_the_value_of_every_token_parameter(text: str) -> None:
    clean = redact(text)
    assert TOKEN not in clean and REDACTED in clean
    assert redact(clean) == clean  # idempotent


def test_redact_leaves_other_text_alone() -> None:
    for text in ["spec.api.tokenSecretRef names no Secret", "state=OPEN&labels=gpu", "token: <see Secret>"]:
        assert redact(text) == text


@pytest.fixture
def redacting() -> Iterator[None]:
    before = logging.getLogRecordFactory()
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    install_log_redaction()
    try:
        yield
    finally:
        logging.setLogRecordFactory(before)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def test_every_record_is_redacted_before_any_handler_sees_it(redacting: None, caplog: pytest.LogCaptureFixture) -> None:
    install_log_redaction()  # a second install changes nothing (no double wrapping)
    log = logging.getLogger("some.library")
    with caplog.at_level(logging.INFO):
        log.info("calling %s", f"http://h/v1/docker/worker?token={TOKEN}")
        try:
            raise RuntimeError(f"Client error '404 Not Found' for url 'http://h/v1?token={TOKEN}'")
        except RuntimeError:
            log.exception("failed")
    assert TOKEN not in caplog.text, caplog.text
    assert f"token={REDACTED}" in caplog.text and "404 Not Found" in caplog.text


def test_the_operator_client_logs_no_token_at_debug(
    redacting: None, server: ServerProcess, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's ``LightlyApi`` over real HTTP, with every logger at DEBUG: httpx's request lines
    are silenced and no record carries the token, a failed call's included."""
    from lightly_operator.lightly_api import LightlyApi, TokenRejected

    async def calls() -> None:
        async with httpx.AsyncClient() as http:
            assert await LightlyApi(server.url, token, 10, http).workers() == []
            with pytest.raises(TokenRejected) as rejected:
                await LightlyApi(server.url, TOKEN, 10, http).workers()
            logging.getLogger("lightly_operator").warning("reconcile failed: %s", rejected.value)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(calls())
    assert token not in caplog.text and TOKEN not in caplog.text, caplog.text
    assert "rejected the token" in caplog.text


def test_the_worker_client_logs_no_token_at_debug(
    redacting: None, server: ServerProcess, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    from lightly_worker.api import ApiError, WorkerApi

    api = WorkerApi(server.url, token, timeout=10)
    bad = WorkerApi(server.url, TOKEN, timeout=10)
    try:
        with caplog.at_level(logging.DEBUG):
            api.register("redaction-check", [], "1.0")
            with pytest.raises(ApiError) as refused:
                bad.register("redaction-check", [], "1.0")
            logging.getLogger("lightly_worker").error("giving up: %s", refused.value)
    finally:
        api.close()
        bad.close()
    assert token not in caplog.text and TOKEN not in caplog.text, caplog.text
    assert "giving up" in caplog.text


def test_the_worker_command_logs_no_token_at_debug(server: ServerProcess, token: str, tmp_path: Path) -> None:
    """``lightly-worker`` in waiting mode at DEBUG, as a fleet pod runs it (token from a file): it registers,
    polls a few times and is stopped; with a token the server refuses it gives up. The token appears in
    neither output."""
    (tmp_path / "token").write_text(token)
    environ = {**loopback_env(), "LIGHTLY_SERVER_LOCATION": server.url, "LIGHTLY_TOKEN_FILE": str(tmp_path / "token")}
    name = f"redact-{secrets.token_hex(3)}"
    argv = [sys.executable, "-m", "lightly_worker.cli", f"worker.name={name}", "log_level=DEBUG"]
    argv += ["worker.poll_wait_seconds=0.5", "worker.poll_interval_seconds=0.2", f"output_dir={tmp_path / 'out'}"]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            names: list[str] = []
            while time.monotonic() < deadline and proc.poll() is None:
                r = httpx.get(f"{server.url}/v1/docker/worker", params={"token": token}, timeout=10, trust_env=False)
                names = [w["name"] for w in r.json()]
                if name in names:
                    break
                time.sleep(0.3)
            assert name in names, f"the worker did not register (saw {names}):\n{log_path.read_text()[-3000:]}"
            time.sleep(2)  # a few polls
        finally:
            proc.terminate()
            proc.wait(60)
    text = log_path.read_text(errors="replace")
    assert text.strip(), "the worker logged nothing at DEBUG"
    assert token not in text, [line for line in text.splitlines() if token in line][:5]

    (tmp_path / "token").write_text(TOKEN)
    out = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0, out
    assert TOKEN not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]


def test_the_server_logs_no_token_at_debug(db_backend: Backend, token: str) -> None:
    """The server at DEBUG took requests with tokens in their query strings, rejected and unknown paths
    included: its log holds none of them."""
    server = db_backend.start_server("--log-level", "debug")
    for tok, path in [(token, "/v1/docker/worker"), (TOKEN, "/v1/docker/worker"), (TOKEN, "/v1/no/such/path")]:
        httpx.get(f"{server.url}{path}", params={"token": tok}, timeout=10, trust_env=False)
    log = server.log()
    assert token not in log and TOKEN not in log, log[-3000:]
