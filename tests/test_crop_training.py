"""Training the embedding model on object crops (``docker.training.task_name`` with ``enable_training``):
the crop training items are the padded boxes of the task's objects (checked on images whose objects are
solid colours), the errors name the task, and a whole run scheduled with the unmodified lightly client
trains on the crops, writes the checkpoint and selects with the trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightly_protocol.models import WorkerConfigV4
from lightly_protocol.validation import config_problems
from lightly_worker.crop_training import crop_dataset, load_crop
from lightly_worker.crops import CropError, crop_box
from lightly_worker.embed import TrainConfig, load_simclr_checkpoint
from lightly_worker.job import JobError, JobOptions, JobPaths, NullReporter
from lightly_worker.pipeline import run_job
from lightly_worker.selection import list_objects, load_predictions
from lightly_worker.stages import lightly_files_needed
from PIL import Image
from test_crops import COLOURS, scene
from test_worker_e2e import api_backend, client, completed_artifacts, local_dataset_of, server, start_worker  # noqa: F401 (fixtures)

GREY = (128, 128, 128)
#: no geometric randomness that could leave the crop: whole-crop views (min_scale 1), no flips/rotations
WHOLE = {"input_size": 16, "min_scale": 1.0, "hf_prob": 0.0, "seed": 3}


def _views_colour(views: Any) -> set[tuple[int, ...]]:
    """The distinct pixel colours of an item's two views (2 x 3 x S x S uint8)."""
    arr = np.asarray(views).transpose(0, 2, 3, 1).reshape(-1, 3)
    return {tuple(int(v) for v in row) for row in np.unique(arr, axis=0)}


def test_the_crop_dataset_yields_the_padded_box_of_each_object(tmp_path: Path) -> None:
    """Item i is object i: with padding 0 every pixel of both views is its object's colour; with Lightly's
    10 % padding the crop is the padded box (object colour inside, the grey background at its border)."""
    files, _ = scene(tmp_path)
    objects = list_objects(files, "det", load_predictions(tmp_path, files, "det"), "png")
    assert [(files[o.image], o.category) for o in objects] == [("a.png", "car"), ("a.png", "bus"), ("sub/b.png", "car")]
    unpadded = crop_dataset(tmp_path, files, objects, TrainConfig(**WHOLE), padding=0.0)  # type: ignore[arg-type]
    assert len(unpadded) == 3
    for i, obj in enumerate(objects):
        views = unpadded[i]
        assert tuple(views.shape) == (2, 3, 16, 16)
        assert _views_colour(views) == {COLOURS[obj.category]}, (i, obj)
    padded = crop_dataset(tmp_path, files, objects, TrainConfig(**WHOLE))  # type: ignore[arg-type]
    bus = padded.load_item(1)  # 20 x 20 at (30, 10), padded by 10 %: [29, 51] x [9, 31]
    assert bus.size == (22, 22) and bus.getpixel((11, 11)) == COLOURS["bus"] and bus.getpixel((0, 0)) == GREY
    corner = padded.load_item(2)  # 8 x 6 at (0, 0): clipped at the image's corner
    assert corner.size == (9, 7) and corner.getpixel((2, 2)) == COLOURS["car"] and corner.getpixel((8, 6)) == GREY


def test_a_large_jpeg_crop_is_decoded_downscaled_only_as_far_as_the_training_needs(tmp_path: Path) -> None:
    arr = np.full((1200, 1600, 3), 128, np.uint8)
    arr[300:600, 400:800] = (0, 200, 0)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=95)
    box = (400.0, 300.0, 400.0, 300.0)
    full = crop_box(box, (1600, 1200))
    assert full is not None and (full[2] - full[0], full[3] - full[1]) == (440, 330)
    crop = load_crop(tmp_path / "big.jpg", box, 0.1, 64, "big.jpg: prediction 0")
    # 1/4 scale keeps the shorter side (330 / 4 = 82.5) >= 64, 1/8 would not
    assert abs(crop.width - 110) <= 1 and abs(crop.height - 83) <= 1
    centre = np.asarray(crop)[crop.height // 2, crop.width // 2].astype(int)
    assert np.abs(centre - (0, 200, 0)).max() < 12
    assert load_crop(tmp_path / "big.jpg", box, 0.1, 400, "x").size == (440, 330)  # full resolution needed
    with pytest.raises(CropError, match=r"big\.jpg: prediction 0: box \[2000\.0, 0\.0, 5\.0, 5\.0\] lies outside"):
        load_crop(tmp_path / "big.jpg", (2000.0, 0.0, 5.0, 5.0), 0.1, 64, "big.jpg: prediction 0")


def _config(task: str, *, training: bool = True) -> WorkerConfigV4:
    return WorkerConfigV4.model_validate(
        {
            "workerType": "FULL",
            "docker": {"enableTraining": training, "training": {"taskName": task}},
            "lightly": {"trainer": {"maxEpochs": 1}, "loader": {"batchSize": 4}, "collate": {"inputSize": 32}},
            "selection": {
                "nSamples": 1,
                "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
            },
        }
    )


def test_a_task_without_predictions_or_objects_fails_the_run_naming_the_task(tmp_path: Path) -> None:
    files, _ = scene(tmp_path / "input", tmp_path / "lightly")
    paths = JobPaths(tmp_path / "input", tmp_path / "lightly", tmp_path / "out")
    options = JobOptions("cpu", "resnet-tiny", 16)
    with pytest.raises(JobError, match=r"training\.task_name 'nope': prediction task 'nope' is not listed in .*tasks"):
        run_job(_config("nope"), paths, NullReporter(), options)
    with pytest.raises(JobError, match=r"training\.task_name 'det': .*LIGHTLY datasource"):
        run_job(_config("det"), JobPaths(tmp_path / "input", None, tmp_path / "out"), NullReporter(), options)
    predictions = tmp_path / "lightly" / ".lightly" / "predictions"
    for name in files:  # the task's files, all empty: no object to train on
        (predictions / "det" / (name.rsplit(".", 1)[0] + ".json")).write_text(json.dumps({"predictions": []}))
    with pytest.raises(JobError) as info:
        run_job(_config("det"), paths, NullReporter(), options)
    assert str(info.value) == (
        "training.task_name 'det': the task has 0 object(s) in the 3 images, SimCLR needs at least 2 crops; add "
        "predictions with a bbox to .lightly/predictions/det/, or leave training.task_name out to train on the "
        "whole images"
    )
    assert not (tmp_path / "out" / "lightly_epoch_last.ckpt").exists()


def test_a_box_outside_its_image_fails_the_run_naming_file_and_prediction(tmp_path: Path) -> None:
    """Raised in a DataLoader process: the message is the crop's own, without that process's traceback."""
    scene(tmp_path / "input", tmp_path / "lightly")
    path = tmp_path / "lightly" / ".lightly" / "predictions" / "det" / "a.json"
    data = json.loads(path.read_text())
    data["predictions"][1]["bbox"] = [500, 500, 4, 4]
    path.write_text(json.dumps(data))
    config = _config("det")
    assert config.lightly is not None and config.lightly.loader is not None
    config.lightly.loader.num_workers = 2
    paths = JobPaths(tmp_path / "input", tmp_path / "lightly", tmp_path / "out")
    with pytest.raises(JobError) as info:
        run_job(config, paths, NullReporter(), JobOptions("cpu", "resnet-tiny", 16))
    assert str(info.value) == (
        "training.task_name 'det': a.png: prediction 1: box [500.0, 500.0, 4.0, 4.0] lies outside the 64x48 "
        "image; fix the prediction file"
    )


def test_a_tiling_auto_task_trains_on_its_tiles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A TILING auto task of the selection as training.task_name: its tiles (2 x 2 per image, unpadded) are
    the crops, with no prediction files and no LIGHTLY datasource; the run selects tiles with that model."""
    scene(tmp_path / "input", tmp_path / "lightly")
    config = WorkerConfigV4.model_validate(
        {
            **_config("tiles").model_dump(by_alias=True, exclude_none=True),
            "selection": {
                "nSamples": 2,
                "strategies": [{"input": {"type": "EMBEDDINGS", "task": "tiles"}, "strategy": {"type": "DIVERSITY"}}],
                "autoTasks": [{"type": "TILING", "name": "tiles", "numRows": 2, "numCols": 2}],
            },
        }
    )
    paths = JobPaths(tmp_path / "input", None, tmp_path / "out")
    with caplog.at_level("INFO", logger="lightly_worker.run"):
        result = run_job(config, paths, NullReporter(), JobOptions("cpu", "resnet-tiny", 16))
    assert "12 crops of task 'tiles' (in 3 images), 1 epochs x 3 steps, batch 4" in caplog.text
    assert (tmp_path / "out" / "lightly_epoch_last.ckpt").is_file()
    crops = (result.output_dir / "filenames" / "selected_crop_filenames.txt").read_text().split()
    assert len(crops) == 2 and all(c.endswith("_tile.png") for c in crops)


def test_task_name_needs_enable_training_and_brings_the_predictions_into_a_bucket_mirror() -> None:
    (problem,) = config_problems(_config("det", training=False))
    assert problem.startswith("docker.training.task_name without docker.enable_training is not supported")
    assert "set docker.enable_training=True, or leave training.task_name out" in problem
    assert config_problems(_config("", training=False)) == []  # Lightly's default "": not set
    assert ".lightly/predictions/" in lightly_files_needed(_config("det"))
    assert ".lightly/predictions/" not in lightly_files_needed(_config(""))


def test_a_run_scheduled_with_the_client_trains_on_the_crops_of_the_task(
    client,  # noqa: F811 (the fixture)
    start_worker,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    """enable_training + training.task_name through the unmodified client: the log says SimCLR trained on
    the task's 3 crops, the checkpoint is the CHECKPOINT artifact, and the object-level selection embeds
    its crops with the trained model (its num_ftrs, not the pretrained embedder's 1280)."""
    c, token = client
    scene(tmp_path / "input", tmp_path / "lightly")
    worker = start_worker(token, "e2e-crop-training", tmp_path)
    local_dataset_of(c, "e2e-crop-training")
    sid = c.schedule_compute_worker_run(
        worker_config={"enable_training": True, "training": {"task_name": "det"}},
        lightly_config={
            "trainer": {"max_epochs": 1},
            "loader": {"batch_size": 4},
            "collate": {"input_size": 32},
            "model": {"num_ftrs": 16},
        },
        selection_config={
            "n_samples": 2,
            "strategies": [{"input": {"type": "EMBEDDINGS", "task": "det"}, "strategy": {"type": "DIVERSITY"}}],
        },
        runs_on=["cpu"],
    )
    out = tmp_path / "artifacts"
    run = completed_artifacts(c, sid, worker, out, timeout=400)
    log = (out / "log.txt").read_text()
    assert "self-supervised training (SimCLR) on 3 crops of task det, 1 epochs" in log, log
    assert "3 crops of task 'det' (in 2 images), 1 epochs x 1 steps, batch 3, input 32 px" in log, log
    ckpt = tmp_path / "downloaded.ckpt"
    c.download_compute_worker_run_checkpoint(run=run, output_path=str(ckpt))
    assert load_simclr_checkpoint(ckpt).dim == 16
    header = (out / "data" / "crop_embeddings.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "filenames" and len([h for h in header if h.startswith("embedding_")]) == 16
    assert len((out / "filenames" / "selected_crop_filenames.txt").read_text().split()) == 2
