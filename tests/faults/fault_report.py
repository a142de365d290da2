"""pytest plugin of the fault suite: its figures in the terminal summary (and in $LIGHTLY_FAULTS_REPORT)."""

from __future__ import annotations

import json
import os

from .fault_kit import TOTALS


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if not TOTALS["runs_tried"]:
        return
    figures = {**TOTALS, "wall_seconds": round(TOTALS["wall_seconds"], 1)}
    terminalreporter.write_sep("-", "fault suite")
    terminalreporter.write_line(
        "runs tried {runs_tried}, completed {runs_completed}, failed with a reason {runs_failed}, "
        "lost {runs_lost}, 5xx seen {5xx}; wall time of the cases {wall_seconds} s".format(**figures)
    )
    target = os.environ.get("LIGHTLY_FAULTS_REPORT")
    if target:
        with open(target, "w") as fh:
            json.dump(figures, fh)
