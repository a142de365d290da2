"""The chart's PrometheusRule checked and unit-tested by the real promtool (Debian's ``prometheus`` package).

The rule groups come from the chart rendered by the Helm engine (``render`` of tests/test_helm.py,
"monitoring" values); ``promtool check rules`` validates them and ``promtool test rules`` runs
tests/prometheus/alerts_test.yaml against them (every alert firing and not firing).

promtool comes from ``PROMTOOL`` (a path) or PATH. Without it the tests skip with the reason, except
under ``CI=true``, where they fail.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_helm import one, render

TESTS = Path(__file__).resolve().parent / "prometheus" / "alerts_test.yaml"


def promtool() -> str:
    wanted = os.environ.get("PROMTOOL") or "promtool"
    path = shutil.which(wanted)
    if path is None:
        reason = (
            f"promtool not found ({'PROMTOOL=' + wanted if os.environ.get('PROMTOOL') else 'not on PATH'}); "
            "install Debian's prometheus package (apt-get install prometheus) or set PROMTOOL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (required under CI=true)")
        pytest.skip(reason)
    return path


def rule_groups() -> list[dict[str, Any]]:
    return one(render("monitoring"), "PrometheusRule")["spec"]["groups"]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}


def completed_tests(alert_rules: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The test file with each expected alert's unnamed rule labels and template-free annotations filled in."""
    doc = yaml.safe_load(TESTS.read_text())
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            rule = alert_rules[case["alertname"]]
            for exp in case.get("exp_alerts") or []:
                labels = exp.setdefault("exp_labels", {})
                for k, v in rule.get("labels", {}).items():
                    labels.setdefault(k, v)
                annotations = exp.setdefault("exp_annotations", {})
                for k, v in rule.get("annotations", {}).items():
                    if "{{" not in v:
                        annotations.setdefault(k, v)
    return doc


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    return tmp_path


def test_promtool_check_rules(rules_dir: Path) -> None:
    res = run(promtool(), "check", "rules", str(rules_dir / "rules.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in res.stdout + res.stderr


def test_promtool_test_rules(rules_dir: Path) -> None:
    tool = promtool()
    (rules_dir / "alerts_test.yaml").write_text(yaml.safe_dump(completed_tests(alerts()), sort_keys=False))
    res = run(tool, "test", "rules", str(rules_dir / "alerts_test.yaml"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_every_alert_has_a_firing_and_a_quiet_test() -> None:
    doc = yaml.safe_load(TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert set(alerts()) == firing, f"alerts without a firing test: {set(alerts()) - firing}"
    assert set(alerts()) == quiet, f"alerts without a not-firing test: {set(alerts()) - quiet}"
    assert doc["rule_files"] == ["rules.yaml"]


def test_the_unit_tests_catch_a_broken_rule(rules_dir: Path) -> None:
    """The tests are not vacuous: an alert whose threshold is off makes promtool fail."""
    tool = promtool()
    groups = copy.deepcopy(rule_groups())
    for g in groups:
        for r in g["rules"]:
            if r.get("alert") == "LightlyFleetDegraded":
                r["expr"] = r["expr"].replace("> 0", "> 1")
    (rules_dir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    (rules_dir / "alerts_test.yaml").write_text(yaml.safe_dump(completed_tests(alerts()), sort_keys=False))
    res = run(tool, "test", "rules", str(rules_dir / "alerts_test.yaml"))
    assert res.returncode != 0
    assert "LightlyFleetDegraded" in res.stdout + res.stderr
