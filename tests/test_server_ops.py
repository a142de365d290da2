"""The server as an operator of it sees it: CLI, tokens at rest, OpenAPI, metrics, logs."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import Api, Backend, ServerProcess
from flows import config, dataset, lock, ok, register, run_state, schedule, set_state, start_run


def test_create_token_prints_the_token_alone_and_stores_only_its_hash(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    out = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", f"sqlite:///{db}", "--user", "ann"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    token = out.strip()
    assert out == token + "\n" and re.fullmatch(r"[A-Za-z0-9_-]{40,}", token)
    assert token.encode() not in db.read_bytes()
    rows = sqlite3.connect(db).execute("SELECT token_hash FROM tokens").fetchall()
    assert len(rows) == 1 and len(rows[0][0]) == 64
    second = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", f"sqlite:///{db}", "--user", "ann"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert second != token


def test_serve_rejects_nonsense_settings() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "serve", "--lease-seconds", "0"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--lease-seconds must be > 0" in r.stderr


def test_openapi_document_lists_the_protocol(server: ServerProcess) -> None:
    doc = httpx.get(f"{server.url}/openapi.json").json()
    for path in (
        "/v1/docker/worker",
        "/v1/docker/worker/{workerId}/schedule",
        "/v1/datasets/{datasetId}/docker/worker/schedule",
        "/v1/docker/runs/schedule/{scheduledId}",
        "/v1/docker/runs/{runId}/artifacts/{artifactId}/readurl",
        "/v1/datasets/{datasetId}/tags/{tagId}/export/basic/filenames",
    ):
        assert path in doc["paths"], path


def test_metrics_report_queue_workers_runs_and_latency(api: Api, server: ServerProcess) -> None:
    wid = register(api)
    set_state(api, wid, "IDLE")
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid, priority="HIGH")
    schedule(api, dataset(api), cid, priority="LOW")
    ok(lock(api, ds, wid, sid), 204)
    run_state(api, start_run(api, ds, sid), "COMPLETED")
    text = httpx.get(f"{server.url}/metrics").text

    def value(name: str, **labels: str) -> float:
        sel = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{name}{{{sel}}} not found")

    assert value("lightly_server_scheduled_runs", state="DONE", priority="HIGH") >= 1
    assert value("lightly_server_scheduled_runs", state="OPEN", priority="LOW") >= 1
    assert value("lightly_server_workers", state="IDLE") >= 1
    assert value("lightly_server_run_duration_seconds_count", state="COMPLETED") >= 1
    assert value("lightly_server_claims_total", outcome="locked") >= 1
    assert (
        value("lightly_server_http_request_duration_seconds_count", route="/v1/docker/runs/{runId}", method="PUT") >= 1
    )
    # labels carry route templates, never ids, names or tokens
    assert wid not in text and ds not in text and api.token not in text


def test_tokens_never_reach_the_server_log(db_backend: Backend) -> None:
    srv = db_backend.start_server("--log-level", "debug")
    token = db_backend.token()
    a = Api(srv.url, token)
    register(a)
    a.get("/v1/datasets/" + "0" * 24)
    srv.stop()
    assert token not in srv.log()


def test_bad_database_urls_are_explained() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", "mysql://x", "--user", "a"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "use sqlite:///" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "lightly_server.cli", "serve", "--database", "postgresql://nobody@127.0.0.1:9/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "cannot open the database" in r.stderr and "Traceback" not in r.stderr
