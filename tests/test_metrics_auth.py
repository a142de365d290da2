"""``/metrics`` of the server and of the operator behind an optional bearer token (``--metrics-token-file``).

Real HTTP: the server CLI on SQLite, the operator's metrics endpoint (aiohttp) with its real registry.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from lightly_devkit.net import free_port
from lightly_devkit.servers import SERVER_CLI, loopback_env, start_server


def _token_file(folder: Path) -> tuple[Path, str]:
    token = secrets.token_urlsafe(24)
    path = folder / "metrics-token"
    path.write_text(token + "\n")
    return path, token


def test_server_metrics_need_the_bearer_token(tmp_path: Path) -> None:
    path, token = _token_file(tmp_path)
    server = start_server(
        f"sqlite:///{tmp_path / 'm.sqlite3'}", tmp_path / "server.log", "--metrics-token-file", str(path)
    )
    try:
        url = f"{server.url}/metrics"
        r = httpx.get(url, trust_env=False)
        assert r.status_code == 401 and "Authorization: Bearer" in r.text
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(url, headers={"Authorization": "Bearer wrong"}, trust_env=False).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Basic {token}"}, trust_env=False).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert ok.status_code == 200 and "lightly_" in ok.text
        # read at every scrape: a rotated Secret works without a restart
        path.write_text("rotated-token\n")
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, trust_env=False).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer rotated-token"}, trust_env=False).status_code == 200
        # the rest of the API is untouched
        assert httpx.get(f"{server.url}/healthz", trust_env=False).status_code == 200
        assert token not in server.log()
    finally:
        server.stop()


def test_server_refuses_to_start_with_an_unreadable_token_file(tmp_path: Path) -> None:
    for content, message in ((None, "cannot be read"), ("", "not empty")):
        path = tmp_path / "token"
        if content is not None:
            path.write_text(content)
        out = subprocess.run(
            [
                *SERVER_CLI,
                "serve",
                "--port",
                str(free_port()),
                "--database",
                f"sqlite:///{tmp_path / 'x.sqlite3'}",
                "--metrics-token-file",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=loopback_env(),
        )
        assert out.returncode == 2 and message in out.stderr, out.stderr


def test_operator_metrics_need_the_bearer_token(tmp_path: Path) -> None:
    from lightly_operator.cli import build_parser
    from lightly_operator.metrics import OperatorMetrics
    from lightly_operator.metrics_http import MetricsEndpoint
    from lightly_operator.settings import SettingsError

    path, token = _token_file(tmp_path)
    args = build_parser().parse_args(["--metrics-token-file", str(path)])
    metrics = OperatorMetrics()

    async def scrape() -> list[httpx.Response]:
        port = free_port()
        runner = await MetricsEndpoint(metrics.registry, args.metrics_token_file).serve(port, host="127.0.0.1")
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                url = f"http://127.0.0.1:{port}/metrics"
                return [
                    await http.get(url),
                    await http.get(url, headers={"Authorization": "Bearer nope"}),
                    await http.get(url, headers={"Authorization": f"Bearer {token}"}),
                ]
        finally:
            await runner.cleanup()

    missing, wrong, ok = asyncio.run(scrape())
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.text
    assert wrong.status_code == 401
    assert ok.status_code == 200 and "lightly_operator_" in ok.text
    with pytest.raises(SettingsError, match="cannot be read"):
        MetricsEndpoint(metrics.registry, tmp_path / "missing")


def test_operator_metrics_stay_open_without_a_token_file() -> None:
    from lightly_operator.metrics import OperatorMetrics
    from lightly_operator.metrics_http import MetricsEndpoint

    async def scrape() -> httpx.Response:
        port = free_port()
        runner = await MetricsEndpoint(OperatorMetrics().registry).serve(port, host="127.0.0.1")
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                return await http.get(f"http://127.0.0.1:{port}/metrics")
        finally:
            await runner.cleanup()

    assert asyncio.run(scrape()).status_code == 200
