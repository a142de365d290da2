"""TILING auto tasks: the tile geometry by hand, and a whole run scheduled with the unmodified lightly
client that selects tiles (object-level selection on the tiles' crops)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lightly_protocol.models import AutoTaskTiling, SelectionConfigV4
from lightly_worker.tiling import tile_boxes, tiling_task, without_tiling
from PIL import Image
from test_worker_e2e import api_backend, client, completed_artifacts, local_dataset_of, server, start_worker  # noqa: F401 (fixtures)


def tiling(rows: int, cols: int, overlap: float | None = None) -> AutoTaskTiling:
    return AutoTaskTiling.model_validate(
        {"type": "TILING", "name": "tiles", "num_rows": rows, "num_cols": cols, "overlap": overlap}
    )


def test_tile_geometry_by_hand() -> None:
    # no overlap: a 100 x 60 image in 2 columns and 3 rows -> 50 x 20 tiles, row-major
    assert tile_boxes(100, 60, tiling(3, 2)) == [
        (0, 0, 50, 20),
        (50, 0, 50, 20),
        (0, 20, 50, 20),
        (50, 20, 50, 20),
        (0, 40, 50, 20),
        (50, 40, 50, 20),
    ]
    # overlap 0.2 of the tile size: 2 tiles over 90 px -> T = 90 / 1.8 = 50, the second starts at 40
    # (neighbours share 10 px = 0.2 * 50) and ends at 90
    boxes = tile_boxes(90, 30, tiling(1, 2, 0.2))
    assert boxes == [pytest.approx((0, 0, 50, 30)), pytest.approx((40, 0, 50, 30))]
    assert tile_boxes(80, 80, tiling(1, 3, 1.0)) == [(0, 0, 80, 80)] * 3  # full overlap: the whole image
    task = tiling_task(tiling(1, 2), [(100, 60), (40, 40)])
    assert task.categories == ["tile"] and task.task_type == "object-detection"
    assert [[o.bbox for o in objs] for objs in task.objects] == [
        [(0, 0, 50, 60), (50, 0, 50, 60)],
        [(0, 0, 20, 40), (20, 0, 20, 40)],
    ]
    conf = SelectionConfigV4.model_validate(
        {
            "strategies": [
                {"input": {"type": "EMBEDDINGS", "task": "tiles"}, "strategy": {"type": "DIVERSITY"}},
                {"input": {"type": "METADATA", "key": "weather"}, "strategy": {"type": "BALANCE"}},
            ],
            "auto_tasks": [{"type": "TILING", "name": "tiles", "num_rows": 1, "num_cols": 2}],
        }
    )
    assert [e.input.type for e in without_tiling(conf).strategies] == ["METADATA"]


def test_a_tiling_run_scheduled_with_the_lightly_client(client, start_worker, tmp_path: Path) -> None:  # noqa: F811
    """Lightly's documented example (a grid of tiles with overlap, DIVERSITY across the tiles) on a LOCAL
    dataset with no predictions at all: the run writes the selected tiles, unpadded, as crops."""
    c, token = client
    root = tmp_path / "input"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).save(root / f"img{i}.png")
    worker = start_worker(token, "e2e-tiles", tmp_path)
    local_dataset_of(c, "e2e-tiles")
    selection = {
        "n_samples": 4,
        "strategies": [{"input": {"type": "EMBEDDINGS", "task": "tiling-task-1"}, "strategy": {"type": "DIVERSITY"}}],
        "auto_tasks": [{"type": "TILING", "name": "tiling-task-1", "num_rows": 2, "num_cols": 3, "overlap": 0.2}],
    }
    sid = c.schedule_compute_worker_run(selection_config=selection, runs_on=["cpu"])
    out = tmp_path / "artifacts"
    run = completed_artifacts(c, sid, worker, out)
    crops = (out / "filenames" / "selected_crop_filenames.txt").read_text().split()
    assert len(crops) == 4 and all(n.endswith("_tile.png") for n in crops)
    assert (out / "data" / "crop_embeddings.csv").read_text().count("\n") == 1 + 3 * 6  # every tile embedded
    # 3 columns over 60 px with overlap 0.2: T = 60 / 2.6 = 23.08 -> 24 px wide at most (whole pixels);
    # 2 rows over 40 px: T = 40 / 1.8 = 22.2
    for name in crops:
        with Image.open(out / "crops" / "tiling-task-1" / name) as im:
            assert 23 <= im.size[0] <= 24 and 22 <= im.size[1] <= 23, (name, im.size)
    picked = json.loads((out / "data" / "selected_objects.json").read_text())
    assert picked["task"] == "tiling-task-1" and {o["category"] for o in picked["objects"]} == {"tile"}
    (tag,) = c.get_compute_worker_run_tags(run.id)
    assert set(c.export_filenames_by_tag_name(tag.name).splitlines()) == {o["file_name"] for o in picked["objects"]}
