"""bench/detection_selection.py at a tiny size: its metrics by hand, and the shape of what it writes
(the figures themselves are in docs/benchmarks.md; no timing or ranking is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_rare_recall_and_class_coverage_by_hand() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from detection_selection import CLASSES, RARE, metrics
    finally:
        sys.path.remove(str(BENCH))
    bus, dog, car = CLASSES.index("bus"), CLASSES.index("dog"), CLASSES.index("car")
    assert set(RARE) == {"bus", "dog"}
    truth = [[bus, car], [dog], [car, car]]
    # image 0 holds 1 of the 2 rare objects; its classes are bus and car: 2 of 6
    assert metrics([0], truth) == pytest.approx((0.5, 2 / 6))
    assert metrics([0, 1, 2], truth) == pytest.approx((1.0, 3 / 6))
    assert metrics([], truth) == (0.0, 0.0)


def test_the_benchmark_writes_a_table_a_plot_and_every_strategy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, str(BENCH / "detection_selection.py"), "--images", "24", "--seeds", "2"]
    cmd += ["--budgets", "0.25", "0.5", "--random-draws", "2", "--workers", "0", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "results.json").read_text())
    assert summary["budgets"] == [0.25, 0.5] and summary["config"]["seeds"] == 2
    labels = list(summary["results"])
    assert labels[0] == "random" and {"BALANCE", "WEIGHTS", "DIVERSITY", "BALANCE+DIVERSITY+WEIGHTS"} <= set(labels)
    for r in summary["results"].values():
        for key in ("recall", "coverage"):
            assert len(r[key]["mean"]) == len(r[key]["std"]) == 2
            assert all(0.0 <= v <= 1.0 for v in r[key]["mean"])
    table = (out / "table.md").read_text().splitlines()
    assert len(table) == 2 + len(labels) and table[0].count("|") == 6
    assert (out / "detection_selection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
