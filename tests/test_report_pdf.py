"""report.pdf and report_v2.json of a real (small, CPU) run, and both as run artifacts through the
unmodified client.

The PDF is checked by rendering its pages with ``pdftoppm`` (Debian's poppler-utils): it needs the binary
and skips without it, except under CI=true where it fails (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from test_client_compat import new_dataset, schedule_simple, worker_pick_up, worker_set_state
from test_report import COLOURS, N_SELECT, _selected, report_dir  # noqa: F401 (the fixture)

if TYPE_CHECKING:
    from conftest import Api


def _pdftoppm() -> str:
    exe = shutil.which("pdftoppm")
    if exe is None:
        reason = "pdftoppm (Debian package poppler-utils) is not installed"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; under CI=true it is required (.ci/run installs it)")
        pytest.skip(reason)
    return exe


def _pages(pdf: Path, out: Path) -> list[np.ndarray]:
    subprocess.run([_pdftoppm(), "-r", "60", "-png", str(pdf), str(out / "page")], check=True, timeout=120)
    return [np.asarray(Image.open(p).convert("RGB"), dtype=int) for p in sorted(out.glob("page-*.png"))]


def _has_colour(page: np.ndarray, colour: tuple[int, int, int], tol: int = 30) -> int:
    return int((np.abs(page - np.array(colour)).max(axis=2) < tol).sum())


def test_report_pdf_renders_the_summary_thumbnails_and_plots(report_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    pdf = report_dir / "report.pdf"
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-")
    print(f"\nreport.pdf: {len(data)} bytes")
    pages = _pages(pdf, tmp_path)
    # summary, thumbnails, 2 pages of plots (3 plots), strategies, filenames, configuration
    assert len(pages) == 7, len(pages)
    for page in pages:
        assert (page < 200).any(axis=2).mean() > 0.002  # every page has ink on it
    selected = _selected(report_dir)
    thumbs = pages[1]
    for name in selected:
        assert _has_colour(thumbs, COLOURS[int(name[4:6])]) > 50, name  # each selected image is shown
    for i in range(len(COLOURS)):
        if f"img_{i:02d}.png" not in selected:
            assert _has_colour(thumbs, COLOURS[i], tol=12) < 20, i  # and none that was not
    plot_ink = [(p < 200).any(axis=2).mean() for p in pages[2:4]]
    assert min(plot_ink) > 0.02, plot_ink  # histograms and the scatter are drawn


def test_report_v2_json_has_lightlys_groups(report_dir: Path) -> None:  # noqa: F811
    v1 = json.loads((report_dir / "report.json").read_text())
    v2 = json.loads((report_dir / "report_v2.json").read_text())
    assert v2["version"] == 2
    assert v2["dataset"]["n_input"] == v1["summary"]["n_input_files"] == len(COLOURS)
    assert v2["dataset"]["n_selected"] == N_SELECT
    div = v2["embedding_analysis"]["diversity"]
    assert set(div) == {"input", "selected", "random"}
    assert div["selected"] == v1["distance_statistics"]["nn_distance_after"]
    assert all(set(d) == {"mean", "min", "max"} for d in div.values())
    cov = v2["embedding_analysis"]["coverage"]
    assert 0 < cov["random"] <= 1 and 0 < cov["selected"] <= 1
    assert {r["strategy"].split()[0] for r in v2["selection"]["strategies"]} == {"DIVERSITY", "TYPICALITY"}
    assert v2["selection"]["selected_filenames_preview"] == _selected(report_dir)
    assert v2["config"] == v1["config"]


def test_report_artifacts_through_the_client(report_dir: Path, client, api: Api, tmp_path: Path) -> None:  # noqa: F811
    """The agent's upload gives report.pdf and report_v2.json their types, so the client's calls find them."""
    from lightly_worker.agent import upload_outputs
    from lightly_worker.api import WorkerApi
    from lightly_worker.pipeline import NullReporter

    new_dataset(client)
    wid = client.register_compute_worker(name="report-worker")
    sid = schedule_simple(client)
    run_id = worker_pick_up(api, wid, sid)
    files = [report_dir / n for n in ("report.pdf", "report_v2.json", "report.json")]
    upload_outputs(WorkerApi(api.base, api.token), run_id, report_dir, files, NullReporter())
    worker_set_state(api, run_id, "COMPLETED")
    run = client.get_compute_worker_run_from_scheduled_run(sid)
    client.download_compute_worker_run_report_pdf(run=run, output_path=str(tmp_path / "r.pdf"))
    assert (tmp_path / "r.pdf").read_bytes() == (report_dir / "report.pdf").read_bytes()
    client.download_compute_worker_run_report_v2_json(run=run, output_path=str(tmp_path / "r2.json"))
    assert (tmp_path / "r2.json").read_bytes() == (report_dir / "report_v2.json").read_bytes()
