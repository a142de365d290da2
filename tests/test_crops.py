"""Object-level selection (crops of a prediction task's objects): the padding rule, crop files, every
strategy on objects, and a whole worker run scheduled with the unmodified lightly client."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.crop_embed import _draft_size, cut_crops, embed_crops
from lightly_worker.crops import CropError, crop_box, output_format, write_crops
from lightly_worker.embed import EmbedConfig, embed_samples, embedding_model_from_config
from lightly_worker.selection import (
    SelectionError,
    SelectionInputs,
    list_objects,
    load_lightly_inputs,
    object_inputs,
    object_level_task,
    select,
)
from lightly_worker.selection.objects import crop_name
from PIL import Image
from test_worker_e2e import api_backend, client, completed_artifacts, local_dataset_of, server, start_worker  # noqa: F401 (fixtures)

COLOURS = {"car": (255, 0, 0), "bus": (0, 0, 255)}


def cfg(*strategies: tuple[dict[str, Any], dict[str, Any]], **kw: Any) -> SelectionConfigV4:
    kw.setdefault("n_samples", -1)
    return SelectionConfigV4.model_validate({"strategies": [{"input": i, "strategy": s} for i, s in strategies], **kw})


def test_crop_box_padding_rule() -> None:
    # centre (20, 25); width 20 * 1.1 = 22, height 10 * 1.1 = 11 -> [9, 31] x [19.5, 30.5] -> whole pixels
    assert crop_box((10, 20, 20, 10), (100, 100)) == (9, 19, 31, 31)
    assert crop_box((10, 20, 20, 10), (100, 100), padding=0.0) == (10, 20, 30, 30)
    assert crop_box((95, 95, 10, 10), (100, 100)) == (94, 94, 100, 100)  # clipped to the image
    assert crop_box((5, 5, 0, 0), (100, 100)) == (5, 5, 6, 6)  # at least one pixel
    assert crop_box((200, 10, 5, 5), (100, 100)) is None
    assert crop_name("sub/img.jpg", 2, "traffic light", "png") == "sub/img/2_traffic_light.png"
    assert output_format(None) == "png" and output_format("JPEG") == "jpg"
    with pytest.raises(CropError, match=r"output_image_format 'tiff' is not supported; use one of"):
        output_format("tiff")


def scene(root: Path, lightly: Path | None = None) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Three 64x48 grey images with coloured boxes under ``root``; predictions of task 'det' for each in
    ``lightly`` (default ``root``)/.lightly/predictions."""
    boxes = {
        "a.png": [("car", [4, 4, 10, 10], 0.9), ("bus", [30, 10, 20, 20], 0.4)],
        "sub/b.png": [("car", [0, 0, 8, 6], 0.7)],
        "c.png": [],
    }
    preds: dict[str, list[dict[str, Any]]] = {}
    for name, objs in boxes.items():
        arr = np.full((48, 64, 3), 128, np.uint8)
        for cat, (x, y, w, h), _ in objs:
            arr[y : y + h, x : x + w] = COLOURS[cat]
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / name)
        preds[name] = [{"category_id": list(COLOURS).index(cat), "bbox": box, "score": s} for cat, box, s in objs]
    pr = (lightly or root) / ".lightly" / "predictions"
    (pr / "det").mkdir(parents=True)
    (pr / "tasks.json").write_text(json.dumps(["det"]))
    cats = [{"id": i, "name": c} for i, c in enumerate(COLOURS)]
    (pr / "det" / "schema.json").write_text(json.dumps({"task_type": "object-detection", "categories": cats}))
    for name, p in preds.items():
        path = pr / "det" / (name.rsplit(".", 1)[0] + ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"file_name": name, "predictions": p}))
    return list(boxes), preds


def test_crops_and_every_strategy_on_objects(tmp_path: Path) -> None:
    files, _ = scene(tmp_path)
    emb_input = {"type": "EMBEDDINGS", "task": "det"}
    conf = cfg(
        (emb_input, {"type": "DIVERSITY"}),
        ({"type": "SCORES", "task": "det", "score": "objectness_least_confidence"}, {"type": "WEIGHTS"}),
        n_samples=2,
    )
    assert object_level_task(conf) == "det"
    image_inputs = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
    objects = list_objects(files, "det", image_inputs.predictions["det"], "png")
    assert [(o.image, o.index, o.category, o.name) for o in objects] == [
        (0, 0, "car", "a/0_car.png"),
        (0, 1, "bus", "a/1_bus.png"),
        (1, 0, "car", "sub/b/0_car.png"),
    ]
    write_crops(tmp_path, files, objects, tmp_path / "crops", "png")
    with Image.open(tmp_path / "crops" / "a" / "1_bus.png") as im:
        assert im.size == (22, 22)  # 20 x 20 padded by 10 %: [29, 51] x [9, 31]
        assert im.getpixel((11, 11)) == COLOURS["bus"] and im.getpixel((0, 0)) == (128, 128, 128)
    with Image.open(tmp_path / "crops" / "sub" / "b" / "0_car.png") as im:
        assert im.size == (9, 7)  # clipped at the image's corner
    # embeddings of the crops: the two cars close together, the bus far away
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]], np.float32)
    inputs = object_inputs(image_inputs, "det", objects, emb)
    assert inputs.filenames == [o.name for o in objects]
    # objectness_least_confidence per object: 1 - score = 0.1, 0.6, 0.3
    assert inputs.predictions["det"].score("objectness_least_confidence") == pytest.approx([0.1, 0.6, 0.3])
    assert select(conf, inputs).selected == [1, 2]
    weights = cfg(({"type": "SCORES", "task": "det", "score": "objectness_least_confidence"}, {"type": "WEIGHTS"}))
    assert select(weights, inputs).selected == [1, 2, 0]
    threshold = cfg(
        (emb_input, {"type": "TYPICALITY"}),
        (
            {"type": "SCORES", "task": "det", "score": "objectness_least_confidence"},
            {"type": "THRESHOLD", "threshold": 0.2, "operation": "BIGGER"},
        ),
    )
    res = select(threshold, inputs)
    assert res.removed_by_threshold == [0] and sorted(res.selected) == [1, 2]
    balance = cfg(
        (
            {"type": "PREDICTIONS", "task": "det", "name": "CLASS_DISTRIBUTION"},
            {"type": "BALANCE", "target": {"bus": 1.0}},
        ),
        n_samples=1,
    )
    assert select(balance, inputs).selected == [1]
    inputs.query_embeddings["cars"] = np.array([[1.0, 0.05]], np.float32)
    similar = cfg(({**emb_input, "tag_name": "cars"}, {"type": "SIMILARITY"}), n_samples=1)
    assert select(similar, inputs).selected == [0]


def test_object_level_inputs_must_agree(tmp_path: Path) -> None:
    mixed = cfg(
        ({"type": "EMBEDDINGS", "task": "det"}, {"type": "DIVERSITY"}), ({"type": "EMBEDDINGS"}, {"type": "TYPICALITY"})
    )
    with pytest.raises(
        SelectionError, match=r"strategies\[1\]: EMBEDDINGS without 'task' in an object-level selection"
    ):
        object_level_task(mixed)
    two = cfg(
        ({"type": "EMBEDDINGS", "task": "a"}, {"type": "DIVERSITY"}),
        ({"type": "EMBEDDINGS", "task": "b"}, {"type": "TYPICALITY"}),
    )
    with pytest.raises(SelectionError, match=r"several tasks \['a', 'b'\]"):
        object_level_task(two)
    files, _ = scene(tmp_path)
    conf = cfg(({"type": "EMBEDDINGS", "task": "det"}, {"type": "DIVERSITY"}))
    image_level = SelectionInputs(
        files, embeddings=np.eye(3, dtype=np.float32), **load_lightly_inputs(tmp_path, files, conf)
    )
    with pytest.raises(SelectionError, match=r"EMBEDDINGS of objects of task 'det', but the candidates are images"):
        select(conf, image_level)
    objects = list_objects(files, "det", image_level.predictions["det"], "png")
    objects[1] = type(objects[1])(
        0, 1, "bus", objects[1].prediction.__class__(1, 0.5, np.array([0.5, 0.5]), (500, 500, 4, 4)), "a/1_bus.png"
    )
    with pytest.raises(CropError, match=r"a\.png: prediction 1 box \[500, 500, 4, 4\] lies outside the 64x48 image"):
        write_crops(tmp_path, files, objects, tmp_path / "crops")


def test_object_level_run_scheduled_with_the_lightly_client(client, start_worker, tmp_path: Path) -> None:  # noqa: F811
    """A whole run: the unmodified client schedules crop selection on a LOCAL dataset with predictions in
    its LIGHTLY datasource; the run writes the crops (in output_image_format), the selected objects, and
    tags the images they come from."""
    c, token = client
    scene(tmp_path / "input", tmp_path / "lightly")
    worker = start_worker(token, "e2e-crops", tmp_path)
    local_dataset_of(c, "e2e-crops")
    selection = {
        "n_samples": 2,
        "strategies": [
            {"input": {"type": "EMBEDDINGS", "task": "det"}, "strategy": {"type": "DIVERSITY"}},
            {
                "input": {"type": "SCORES", "task": "det", "score": "objectness_least_confidence"},
                "strategy": {"type": "WEIGHTS"},
            },
        ],
    }
    sid = c.schedule_compute_worker_run(
        worker_config={"output_image_format": "jpg"}, selection_config=selection, runs_on=["cpu"]
    )
    out = tmp_path / "artifacts"
    run = completed_artifacts(c, sid, worker, out)
    crops = (out / "filenames" / "selected_crop_filenames.txt").read_text().split()
    assert len(crops) == 2 and all(n.endswith(".jpg") for n in crops)
    assert {p.relative_to(out / "crops" / "det").as_posix() for p in (out / "crops" / "det").rglob("*.jpg")} == set(
        crops
    )
    picked = json.loads((out / "data" / "selected_objects.json").read_text())
    assert picked["task"] == "det" and [o["crop"] for o in picked["objects"]] == crops
    assert (out / "data" / "crop_embeddings.csv").read_text().count("\n") == 1 + 3  # header + every object
    images = list(dict.fromkeys(o["file_name"] for o in picked["objects"]))
    assert set(images) <= {"a.png", "sub/b.png"}
    (tag,) = c.get_compute_worker_run_tags(run.id)
    assert set(c.export_filenames_by_tag_name(tag.name).splitlines()) == set(images)
    assert (out / "filenames" / "selected_filenames.txt").read_text().split() == images


def test_a_bucket_lightly_datasource_mirrors_the_predictions_of_a_crop_selection() -> None:
    from lightly_protocol.models import WorkerConfigV4
    from lightly_worker.stages import lightly_files_needed

    crops = {
        "n_samples": 1,
        "strategies": [{"input": {"type": "EMBEDDINGS", "task": "det"}, "strategy": {"type": "DIVERSITY"}}],
    }
    assert ".lightly/predictions/" in lightly_files_needed(
        WorkerConfigV4.model_validate({"workerType": "FULL", "selection": crops})
    )
    images = {"n_samples": 1, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    assert ".lightly/predictions/" not in lightly_files_needed(
        WorkerConfigV4.model_validate({"workerType": "FULL", "selection": images})
    )


def test_crops_embedded_from_memory_match_the_crop_files(tmp_path: Path) -> None:
    """embed_crops (each image decoded once, crops resized in memory) gives the embeddings of the crop
    files that write_crops makes, in the order of the objects."""
    files, _ = scene(tmp_path)
    conf = cfg(({"type": "EMBEDDINGS", "task": "det"}, {"type": "DIVERSITY"}))
    image_inputs = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
    objects = list_objects(files, "det", image_inputs.predictions["det"], "png")
    ecfg = EmbedConfig(model="resnet-18", input_size=32, batch_size=2, num_workers=0, device="cpu", draft=False)
    torch.manual_seed(0)
    model = embedding_model_from_config("resnet-18", 32)
    from_memory = embed_crops(tmp_path, files, objects, ecfg, model)
    write_crops(tmp_path, files, objects, tmp_path / "crops", "png")
    from_files = embed_samples(tmp_path / "crops", [o.name for o in objects], ecfg, model)
    assert from_memory.shape == (3, from_files.shape[1])
    np.testing.assert_allclose(from_memory, from_files, atol=1e-5)
    assert not (tmp_path / "crops" / "a" / "9_car.png").exists()
    # a box outside its image: the error names the image and the prediction
    objects[1] = type(objects[1])(
        0, 1, "bus", objects[1].prediction.__class__(1, 0.5, np.array([0.5, 0.5]), (500, 500, 4, 4)), "a/1_bus.png"
    )
    with pytest.raises(CropError, match=r"a\.png: prediction 1: box \[500, 500, 4, 4\] lies outside the 64x48 image"):
        embed_crops(tmp_path, files, objects, ecfg, model)


def test_a_jpeg_is_decoded_downscaled_only_as_far_as_every_crop_keeps_the_input_size(tmp_path: Path) -> None:
    # crops of 220 and 400 pixels at input 100: scale >= 100/220 -> 1/2 (a 1/4 decode would leave 55 px)
    assert _draft_size((1600, 1200), [(0, 0, 400, 400), (10, 10, 230, 230)], 100) == (728, 546)
    assert _draft_size((640, 480), [(0, 0, 50, 60)], 100) == (640, 480)  # never upscaled
    rng = np.random.default_rng(0)
    arr = (rng.random((1200, 1600, 3)) * 40 + np.linspace(0, 200, 1600)[None, :, None]).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=95)
    boxes = [(100.0, 100.0, 800.0, 800.0), (900.0, 200.0, 600.0, 900.0)]
    drafted = cut_crops(tmp_path / "big.jpg", boxes, 64, 0.1, True)
    full = cut_crops(tmp_path / "big.jpg", boxes, 64, 0.1, False)
    assert drafted.shape == full.shape == (2, 64, 64, 3)
    assert np.abs(drafted.astype(int) - full.astype(int)).mean() < 3.0  # the same region, barely different pixels


def test_objects_in_video_frames_are_cropped_from_the_decoded_frames(tmp_path: Path) -> None:
    """Predictions of video frames (one file per frame, named like the frame: ``clip-1-mp4.json``): the
    crops come from the decoded frame at the video's own size, embedded from memory, written as files and
    trained on (training.task_name); a TILING task tiles frames at the video's size."""
    av = pytest.importorskip("av", reason="PyAV (av) decodes the video")
    from lightly_protocol.models import AutoTaskTiling
    from lightly_worker.embed import list_samples
    from lightly_worker.sources import as_source
    from lightly_worker.tiling import image_sizes, tile_boxes

    positions = [(8, 8), (40, 24), (24, 40)]  # a red 16 x 16 square per frame, on grey, in a 96 x 64 video
    with av.open(str(tmp_path / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.bit_rate = 4_000_000
        for x, y in positions:
            arr = np.full((64, 96, 3), 128, np.uint8)
            arr[y : y + 16, x : x + 16] = COLOURS["car"]
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    files = list_samples(tmp_path)
    assert files == ["clip-0-mp4.png", "clip-1-mp4.png", "clip-2-mp4.png"]  # Lightly's frame names
    pr = tmp_path / ".lightly" / "predictions"
    (pr / "det").mkdir(parents=True)
    (pr / "tasks.json").write_text(json.dumps(["det"]))
    cats = [{"id": i, "name": c} for i, c in enumerate(COLOURS)]
    (pr / "det" / "schema.json").write_text(json.dumps({"task_type": "object-detection", "categories": cats}))
    for name, (x, y) in zip(files, positions, strict=True):
        body = {"file_name": name, "predictions": [{"category_id": 0, "bbox": [x, y, 16, 16], "score": 0.8}]}
        (pr / "det" / name.replace(".png", ".json")).write_text(json.dumps(body))
    conf = cfg(({"type": "EMBEDDINGS", "task": "det"}, {"type": "DIVERSITY"}))
    inputs = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
    objects = list_objects(files, "det", inputs.predictions["det"], "png")
    assert [o.name for o in objects] == ["clip-0-mp4/0_car.png", "clip-1-mp4/0_car.png", "clip-2-mp4/0_car.png"]
    ecfg = EmbedConfig(model="resnet-18", input_size=32, batch_size=2, num_workers=0, device="cpu", draft=False)
    model = embedding_model_from_config("resnet-18", 32)
    emb = embed_crops(tmp_path, files, objects, ecfg, model)
    assert emb.shape[0] == 3 and np.isfinite(emb).all()
    write_crops(tmp_path, files, objects, tmp_path / "crops", "png", padding=0.0)
    for obj in objects:
        with Image.open(tmp_path / "crops" / obj.name) as im:
            assert im.size == (16, 16)  # the box, at the video's own resolution
            r, g, b = np.asarray(im.convert("RGB"), dtype=float)[4:12, 4:12].mean(axis=(0, 1))
            assert r > 180 and g < 80 and b < 80, (obj.name, r, g, b)  # the red square of that frame
    assert image_sizes(as_source(tmp_path), files) == [(96, 64)] * 3
    # training on crops (training.task_name) cuts the same crops from the frames
    from lightly_worker.crop_training import crop_dataset
    from lightly_worker.embed import TrainConfig

    train = crop_dataset(tmp_path, files, objects, TrainConfig(input_size=16, min_scale=1.0, seed=3), padding=0.0)
    for i in range(3):
        crop = train.load_item(i)
        assert crop.size == (16, 16)
        r, g, b = np.asarray(crop, dtype=float)[4:12, 4:12].mean(axis=(0, 1))
        assert r > 180 and g < 80 and b < 80, (i, r, g, b)
    assert len(tile_boxes(96, 64, AutoTaskTiling(name="tiles", type="TILING", num_rows=2, num_cols=3))) == 6
