"""report_v2.json: the report's values in the groups Lightly's documentation describes for its
``report_v2.json`` (docs.lightly.ai: "Report", "Report - Embedding Analysis", "Report - Selection Results
Dashboard"): the dataset counts (available, corrupt, duplicate, selected), the embedding diversity of the
input, the selection and a random subset of the same size (mean/min/max nearest-neighbour distance), the
coverage of the selection and of the random subset (1 / (1 + mean distance from each input sample to its
nearest chosen one)), the selection's strategies and the run's configuration. Lightly publishes no key
names, so the keys here are ours; ``version`` is 2.
"""

from __future__ import annotations

from typing import Any

VERSION = 2


def report_v2(report: dict[str, Any]) -> dict[str, Any]:
    summary = report.get("summary", {})
    stats = report.get("distance_statistics", {})
    details = report.get("selection_details", {})
    return {
        "version": VERSION,
        "run": {
            "run_id": report.get("run_id"),
            "dataset_id": report.get("dataset_id"),
            "worker_version": report.get("worker_version"),
            "duration_seconds": summary.get("duration_seconds"),
            "stage_seconds": report.get("stage_seconds", {}),
            "device": summary.get("device"),
        },
        "dataset": {
            "n_input": summary.get("n_input_files"),
            "n_corrupt": summary.get("n_corrupt"),
            "n_duplicates": summary.get("n_duplicates"),
            "n_datapool": summary.get("n_datapool"),
            "n_candidates": summary.get("n_candidates"),
            "n_removed_by_threshold": summary.get("n_removed_by_threshold"),
            "n_selected": summary.get("n_selected"),
        },
        "embedding": {"model": summary.get("embedding_model"), "dimension": summary.get("embedding_dim")},
        "embedding_analysis": {
            "diversity": {
                "input": stats.get("nn_distance_before"),
                "selected": stats.get("nn_distance_after"),
                "random": stats.get("nn_distance_random"),
            },
            "coverage": {"selected": stats.get("coverage_selected"), "random": stats.get("coverage_random")},
        },
        "selection": {
            "stop_reason": summary.get("stop_reason"),
            "strategies": details.get("contributions") or [],
            "coverage_ext": details.get("coverage"),
            "selected_filenames_preview": report.get("selected_filenames_preview", []),
        },
        "config": report.get("config", {}),
    }
