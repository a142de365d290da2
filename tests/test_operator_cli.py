"""The operator's command line: how its arguments become kopf's watch scope and the process's options, and
the docs' table of its flags and variables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lightly_operator.cli import build_parser, main, operator_settings, process_options, watch_scope
from lightly_operator.settings import OperatorSettings, ProcessOptions
from lightly_protocol.options import reference

DOCS = Path(__file__).resolve().parent.parent / "docs" / "operator.md"


def test_default_is_cluster_wide_with_an_empty_namespace_collection() -> None:
    # kopf's namespace observer iterates `namespaces` even cluster-wide: None crashes it
    args = build_parser().parse_args([])
    assert watch_scope(args.namespace) == {"clusterwide": True, "namespaces": ()}


def test_listed_namespaces_are_watched_alone() -> None:
    args = build_parser().parse_args(["--namespace", "a", "-n", "b"])
    assert watch_scope(args.namespace) == {"clusterwide": False, "namespaces": ("a", "b")}


def test_process_options_come_from_flags_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LIGHTLY_OPERATOR_METRICS_PORT", "LIGHTLY_OPERATOR_LOG_LEVEL", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "ops")
    monkeypatch.setenv("LIGHTLY_OPERATOR_HEALTH_PORT", "9")
    p = process_options(build_parser().parse_args(["-n", "ml", "--metrics-port", "0", "--health-port", "7"]))
    assert (p.namespace, p.metrics_port, p.health_port, p.lease_namespace) == (("ml",), 0, 7, "ops")
    assert (p.metrics_token_file, p.log_level, p.leader_election, p.elects_leader()) == (None, "INFO", "auto", False)
    assert operator_settings(build_parser().parse_args(["-n", "ml"])).namespaces == ("ml",)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert process_options(build_parser().parse_args([])).elects_leader()
    assert not process_options(build_parser().parse_args(["--leader-election", "off"])).elects_leader()


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--leader-election", "maybe"], {}, "--leader-election='maybe': use auto, on, off"),
        (["--metrics-port", "eighty"], {}, "--metrics-port='eighty': use a whole number"),
        ([], {"LIGHTLY_OPERATOR_HEALTH_PORT": "x"}, "LIGHTLY_OPERATOR_HEALTH_PORT='x': use a whole number"),
        ([], {"LIGHTLY_OPERATOR_RESYNC_SECONDS": "soon"}, "LIGHTLY_OPERATOR_RESYNC_SECONDS='soon': use a number"),
        ([], {"LIGHTLY_CLUSTER_NAME": "a.b"}, "LIGHTLY_CLUSTER_NAME: "),
    ],
)
def test_a_bad_setting_stops_the_operator_with_exit_code_2(
    argv: list[str],
    env: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")  # never reaches a cluster, should a setting pass
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def _table() -> str:
    """The flag / env table of docs/operator.md's "Install and run"."""
    section = DOCS.read_text().split("## Install and run", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `"))


def test_the_docs_table_lists_every_flag_and_variable_and_no_other() -> None:
    table = _table().replace("..._", "LIGHTLY_OPERATOR_")  # `..._ORPHAN_GRACE_SECONDS` after its sibling
    rows = reference(ProcessOptions) + reference(OperatorSettings)
    flags = {flag for flag, _, _, _ in rows if flag}
    variables = {env for _, env, _, _ in rows if env}
    assert set(re.findall(r"--[a-z][a-z-]*", table)) == flags
    assert set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", table)) == variables
