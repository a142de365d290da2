"""report.html shows what was chosen: thumbnails of the selection, the scatter, the strategies' contributions.

The browser test renders the real report of a real (small, CPU) run in headless Chromium (Debian's
``chromium``): it needs the binary and skips without it, except under CI=true where it fails.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lightly_protocol.models import WorkerConfigV4
from lightly_worker.pipeline import JobOptions, JobPaths, NullReporter, run_job
from lightly_worker.report import THUMB_SIDE, THUMBNAILS_KEY, make_thumbnails
from PIL import Image

#: saturated colours far from the report's own (greys, the plots' blue/orange) and from each other
COLOURS = [
    (230, 20, 20), (20, 200, 20), (20, 20, 230), (230, 230, 20), (230, 20, 230), (20, 220, 220),
    (120, 0, 60), (0, 90, 40), (255, 140, 200), (140, 255, 120), (90, 40, 160), (250, 110, 0),
]  # fmt: skip
N_SELECT = 5


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (DIVERSITY + TYPICALITY) on 12 solid-colour images; returns its output folder."""
    root = tmp_path_factory.mktemp("report")
    (root / "input").mkdir()
    for i, c in enumerate(COLOURS):
        Image.new("RGB", (80 + 10 * i, 60), c).save(root / "input" / f"img_{i:02d}.png")
    config = WorkerConfigV4.model_validate(
        {
            "worker_type": "FULL",
            "selection": {
                "n_samples": N_SELECT,
                "strategies": [
                    {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}},
                    {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "TYPICALITY", "num_nearest_neighbors": 3}},
                ],
            },
        }
    )
    paths = JobPaths(root / "input", None, root / "out")
    run_job(config, paths, NullReporter(), JobOptions("cpu", "resnet-tiny", 16))
    return root / "out"


def _selected(out: Path) -> list[str]:
    return (out / "filenames" / "selected_filenames.txt").read_text().split()


def test_report_embeds_thumbnails_of_the_selection_in_pick_order(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    grid = page[page.index('id="thumbnails"') :]
    srcs = re.findall(r'<img alt="([^"]+)"[^>]*src="data:image/jpeg;base64,([^"]+)"', grid)
    selected = _selected(report_dir)
    assert [name for name, _ in srcs] == selected and len(selected) == N_SELECT
    for name, b64 in srcs:
        im = Image.open(io.BytesIO(base64.b64decode(b64)))
        assert im.format == "JPEG" and max(im.size) <= THUMB_SIDE
        want = COLOURS[int(name[4:6])]
        got = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
        assert np.abs(got - want).max() < 12, (name, got, want)  # the thumbnail is of that very file


def test_report_json_keeps_the_details_but_not_the_images(report_dir: Path) -> None:
    report = json.loads((report_dir / "report.json").read_text())
    assert THUMBNAILS_KEY not in report and "jpeg_base64" not in (report_dir / "report.json").read_text()
    rows = {r["strategy"].split()[0]: r for r in report["selection_details"]["contributions"]}
    assert set(rows) == {"DIVERSITY", "TYPICALITY"}
    for r in rows.values():
        assert 0 < r["objective_at_picks"] <= 1 and 0 < r["objective_of_candidates"] <= 1
    page = (report_dir / "report.html").read_text()
    assert "How the strategies chose" in page and "TYPICALITY (selection.strategies[1])" in page
    assert not any(p.suffix == ".jpg" for p in report_dir.rglob("*"))  # nothing extra to upload


def test_thumbnails_are_capped_and_unreadable_inputs_do_not_break_the_report(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (900, 1600, 3), dtype=np.uint8)).save(tmp_path / "big.jpg", quality=95)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    names = ["big.jpg", "broken.jpg", "gone.jpg", "big.jpg"]
    thumbs = make_thumbnails(tmp_path, names, max_count=3)
    assert [t["filename"] for t in thumbs] == names[:3]
    assert (thumbs[0]["width"], thumbs[0]["height"]) == (THUMB_SIDE, 54)  # aspect kept, longest side capped
    assert "error" in thumbs[1] and "error" in thumbs[2]


def _chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def _run_chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_thumbnails_render_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    binary = _chromium()
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium; install it (apt-get)")
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    # the same page, plus a script that records each thumbnail's decoded size into the DOM
    probe = (
        "<script>window.addEventListener('load',()=>{for(const i of document.querySelectorAll('#thumbnails img'))"
        "i.setAttribute('data-natural',i.naturalWidth+'x'+i.naturalHeight)})</script></body>"
    )
    page = (report_dir / "report.html").read_text().replace("</body>", probe)
    html_path = tmp_path / "report.html"
    html_path.write_text(page)
    dom = _run_chromium(binary, "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri())
    decoded = re.findall(r'data-natural="(\d+)x(\d+)"', dom.stdout)
    assert len(decoded) == N_SELECT, f"rc={dom.returncode} stderr={dom.stderr[-2000:]} dom={dom.stdout[:500]}"
    assert all(int(w) > 0 and int(h) > 0 for w, h in decoded), decoded

    shot = tmp_path / "shot.png"
    url = (report_dir / "report.html").as_uri()
    res = _run_chromium(binary, "--window-size=1200,2400", f"--screenshot={shot}", url)
    assert shot.is_file(), f"no screenshot: rc={res.returncode} stderr={res.stderr[-2000:]}"
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=int)
    seen = {}
    for name in _selected(report_dir):
        colour = np.array(COLOURS[int(name[4:6])])
        seen[name] = int((np.abs(px - colour).max(2) < 25).sum())
    # each thumbnail is drawn 96 px wide (>= 3,000 of its pixels on screen), nothing of that colour elsewhere
    assert all(v >= 3000 for v in seen.values()), f"pixels of each selected image's colour on screen: {seen}"
