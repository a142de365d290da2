"""The worker's settings (``lightly_worker.settings``, the one settings idiom): docs/worker.md's tables are
tested against ``reference(WorkerSettings)``, and the environment reaches the worker through them only."""

from __future__ import annotations

import re
from pathlib import Path

from lightly_protocol.options import reference
from lightly_worker.config import DOCKER_KEYS, KNOWN_KEYS, parse_args
from lightly_worker.settings import KEYS, WorkerSettings, load_settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "worker.md"


def _tables() -> list[list[list[str]]]:
    """The tables of the section "Options" of docs/worker.md, each as rows of cells (header dropped)."""
    text = DOC.read_text()
    section = text.split("## Options", 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = []
                tables.append(current)
                continue  # the header
            if not set(cells[0]) <= set("-: "):
                current.append(cells)
        else:
            current = None
    return tables


def _ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_the_option_table_lists_every_key_and_only_keys_the_worker_takes() -> None:
    options, _environment = _tables()
    in_table = [key for row in options for key in _ticked(row[0])]
    keys = [flag for flag, _env, _default, _help in reference(WorkerSettings) if flag]
    assert set(keys) == set(KEYS)
    assert [k for k in keys if k not in in_table] == [], "options missing from docs/worker.md's table"
    docker_spelling = {f"docker.{k}" for k in DOCKER_KEYS}
    unknown = [k for k in in_table if k not in KNOWN_KEYS and k not in docker_spelling]
    assert unknown == [], f"docs/worker.md names keys the worker does not take: {unknown}"


def test_the_environment_table_is_the_settings_environment_variables_with_their_defaults() -> None:
    _options, environment = _tables()
    documented = {_ticked(row[0])[0]: row[1] for row in environment}
    declared = {env: default for _flag, env, default, _help in reference(WorkerSettings) if env}
    assert set(documented) == set(declared)
    for env, default in declared.items():
        assert documented[env] == ("\N{EN DASH}" if default is None else f"`{default}`"), env


def test_the_environment_is_read_through_the_settings() -> None:
    env = {
        "LIGHTLY_SERVER_LOCATION": "http://server:8080",
        "LIGHTLY_TOKEN_FILE": "/t/token",
        "LIGHTLY_TOKEN": "s3cret",
        "LIGHTLY_CA_CERTS": "/ca/ca.crt",
    }
    s = load_settings(env)
    assert (s.server_location, s.token_file, s.env_token, s.ca_certs) == tuple(env.values())
    assert load_settings({}) == WorkerSettings()
    assert "s3cret" not in repr(s) and "s3cret" not in repr(parse_args(["token=s3cret"], {}))
    args = parse_args(["worker.worker_id=abc", "metrics.port=9100", "worker.labels=gpu"], env)
    assert (args.settings.worker_id, args["metrics.port"], args["worker.labels"]) == ("abc", 9100, ["gpu"])
    assert args.settings.server_location == "http://server:8080"
    assert parse_args([], {"LIGHTLY_TOKEN": "tok"}).token() == "tok"
    # Lightly's docs start a specific worker with -e LIGHTLY_WORKER_ID; the key, when given too, wins
    assert parse_args([], {"LIGHTLY_WORKER_ID": "from-env"}).settings.worker_id == "from-env"
    assert parse_args(["worker.worker_id=from-key"], {"LIGHTLY_WORKER_ID": "from-env"}).settings.worker_id == "from-key"
