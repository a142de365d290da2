"""The server's settings (``lightly_server.settings``, the one settings idiom): flags, then the environment,
then the defaults; what ``--processes N`` hands its processes; the docs' table of flags and variables."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from lightly_protocol.options import flag_values, load, reference
from lightly_server.cli import build_parser, main
from lightly_server.crypto import ENV_KEY
from lightly_server.settings import DatabaseSettings, ServeOptions, ServerSettings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "server.md"


def _serve(argv: list[str], environ: dict[str, str]) -> tuple[ServerSettings, ServeOptions]:
    args = build_parser().parse_args(["serve", *argv])
    return (
        load(ServerSettings, environ, flag_values(args, ServerSettings)),
        load(ServeOptions, environ, flag_values(args, ServeOptions)),
    )


def test_flags_then_the_environment_then_the_defaults() -> None:
    settings, serve = _serve([], {})
    assert settings == ServerSettings() and serve == ServeOptions()
    assert settings.database_url == "sqlite:///lightly-server.sqlite3"
    assert (serve.host, serve.port, serve.processes, serve.log_level) == ("127.0.0.1", 8080, 1, "info")
    environ = {
        "LIGHTLY_SERVER_PORT": "9000",
        "LIGHTLY_SERVER_DATABASE": "postgresql://u@h/db",
        "LIGHTLY_SERVER_LEASE_SECONDS": "30",
        "LIGHTLY_SERVER_ARTIFACTS_DIR": "/a",
        "LIGHTLY_SERVER_TLS_CERT": "/c.pem",
    }
    settings, serve = _serve(["--port", "9001", "--max-wait-seconds", "5"], environ)
    assert (serve.port, serve.tls_cert) == (9001, "/c.pem")
    assert (settings.database_url, settings.lease_seconds, settings.artifacts_dir) == (
        "postgresql://u@h/db",
        30.0,
        Path("/a"),
    )
    assert settings.max_wait_seconds == 5.0
    args = build_parser().parse_args(["list-tokens"])
    assert load(DatabaseSettings, environ, flag_values(args, DatabaseSettings)).database_url == "postgresql://u@h/db"


def test_a_bad_value_stops_serve_with_exit_code_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--port", "eighty"]) == 2
    assert "--port='eighty': use a whole number" in capsys.readouterr().err
    monkeypatch.setenv("LIGHTLY_SERVER_LEASE_SECONDS", "soon")
    assert main(["serve"]) == 2
    assert "LIGHTLY_SERVER_LEASE_SECONDS='soon': use a number" in capsys.readouterr().err


def test_the_processes_of_processes_n_start_from_the_same_settings(tmp_path: Path) -> None:
    """``_serve_processes`` writes the settings as JSON; ``process_app`` loads them back by type."""
    settings = ServerSettings(
        database_url="postgresql://u@h/db",
        artifacts_dir=tmp_path / "a",
        secret_key_file=tmp_path / "k",
        metrics_token_file=tmp_path / "m",
        lease_seconds=30.0,
        max_attempts=5,
        public_url="https://x",
    )
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()}
    assert load(ServerSettings, {}, json.loads(json.dumps(values))) == settings
    assert load(ServerSettings, {}, json.loads(json.dumps(dataclasses.asdict(ServerSettings())))) == ServerSettings()


def _table() -> str:
    """The flag / env table of docs/server.md's "Running it"."""
    section = DOCS.read_text().split("## Running it", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `"))


def test_the_docs_table_lists_every_flag_and_variable_and_no_other() -> None:
    table = _table()
    rows = reference(ServeOptions) + reference(ServerSettings)
    flags = {flag for flag, _, _, _ in rows if flag}
    variables = {env for _, env, _, _ in rows if env}
    assert set(re.findall(r"--[a-z][a-z-]*", table)) == flags
    # the secret key itself is read by crypto.load_keys, never kept in settings
    assert set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", table)) == variables | {ENV_KEY}
