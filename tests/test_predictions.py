"""Predictions of every Lightly task type (lightly_worker.selection.predictions) and their active-learning
scorers (lightly_worker.selection.scores): real files in a ``.lightly/`` folder, values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lightly_protocol.models import SelectionConfigV4
from lightly_worker.selection import SelectionError, SelectionInputs, load_lightly_inputs, load_predictions, select


def write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def task(root: Path, name: str, task_type: str, cats: list[str], files: dict[str, list[dict[str, Any]]]) -> None:
    pr = root / ".lightly" / "predictions"
    listed = json.loads((pr / "tasks.json").read_text()) if (pr / "tasks.json").is_file() else []
    write(pr / "tasks.json", [*listed, name])
    write(
        pr / name / "schema.json",
        {"task_type": task_type, "categories": [{"id": i, "name": c} for i, c in enumerate(cats)]},
    )
    for fn, preds in files.items():
        write(pr / name / (fn.rsplit(".", 1)[0] + ".json"), {"file_name": fn, "predictions": preds})


def cfg(*strategies: tuple[dict[str, Any], dict[str, Any]], **kw: Any) -> SelectionConfigV4:
    kw.setdefault("n_samples", -1)
    return SelectionConfigV4.model_validate({"strategies": [{"input": i, "strategy": s} for i, s in strategies], **kw})


def ent2(p: float) -> float:
    """Entropy of [p, 1 - p] divided by log(2)."""
    return -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)


DETECTIONS = {
    "a.png": [
        {"category_id": 0, "bbox": [0, 0, 4, 4], "score": 0.9},
        {"category_id": 0, "bbox": [1, 1, 2, 2], "score": 0.8},
        {"category_id": 1, "bbox": [2, 0, 3, 5], "score": 0.6, "probabilities": [0.3, 0.7]},
    ],
    "b.png": [],
    "sub/c.png": [{"category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5}],
}


def test_object_detection_scorers(tmp_path: Path) -> None:
    task(tmp_path, "det", "object-detection", ["car", "bus"], DETECTIONS)
    files = list(DETECTIONS)
    det = load_predictions(tmp_path, files, "det")
    # objectness_least_confidence = 1 - mean(score); 0 without objects
    assert det.score("objectness_least_confidence") == pytest.approx([1 - (0.9 + 0.8 + 0.6) / 3, 0.0, 0.5])
    # object_frequency: car 1 + 0.25, bus 1 -> 2.25; 0; 1 -> mapped from [0, 2.25] to [0.9, 1]
    assert det.score("object_frequency") == pytest.approx([1.0, 0.9, 0.9 + 0.1 / 2.25])
    # per object probabilities [0.9, 0.1], [0.8, 0.2], [0.3, 0.7]: maximum over the objects
    assert det.score("uncertainty_least_confidence") == pytest.approx([0.6, 0.0, 1.0])
    assert det.score("uncertainty_margin") == pytest.approx([0.6, 0.0, 1.0])
    assert det.score("uncertainty_entropy") == pytest.approx([ent2(0.3), 0.0, 1.0])
    assert det.category_counts is not None and det.category_counts.tolist() == [[2, 1], [0, 0], [1, 0]]
    assert det.probabilities[0] == pytest.approx([0.9 + 0.8 + 0.3, 0.1 + 0.2 + 0.7])
    assert [o.bbox for o in det.objects[0]] == [(0, 0, 4, 4), (1, 1, 2, 2), (2, 0, 3, 5)]
    conf = cfg(
        ({"type": "SCORES", "task": "det", "score": "objectness_least_confidence"}, {"type": "WEIGHTS"}), n_samples=2
    )
    got = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
    assert select(conf, got).selected == [2, 0]


def test_keypoint_semantic_and_instance_scorers(tmp_path: Path) -> None:
    kps = {
        "a.png": [
            {"category_id": 0, "keypoints": [10, 10, 0.9, 20, 20, 0.7], "score": 0.9},
            {"category_id": 0, "keypoints": [5, 5, 0.4, 6, 6, 0.6, 7, 7, 0.2], "score": 0.5, "bbox": [4, 4, 4, 4]},
        ],
        "b.png": [],
    }
    task(tmp_path, "kp", "keypoint-detection", ["person"], kps)
    kp = load_predictions(tmp_path, list(kps), "kp")
    # 1 - mean over instances of the mean keypoint confidence: 1 - mean(0.8, 0.4)
    assert kp.score("mean_uncertainty") == pytest.approx([0.4, 0.0])
    assert [o.bbox for o in kp.objects[0]] == [(10, 10, 10, 10), (4, 4, 4, 4)]
    seg = {
        "a.png": [
            {"category_id": 0, "segmentation": [2, 3, 1, 1], "score": 0.8, "probabilities": [0.8, 0.2]},
            {"category_id": 1, "segmentation": [0, 2, 6], "score": 0.6},
        ],
        "b.png": [],
    }
    task(tmp_path, "seg", "semantic-segmentation", ["road", "sky"], seg)
    sem = load_predictions(tmp_path, list(seg), "seg")
    # areas 4 and 2 pixels; per segment 0.4 and 0.8 -> (0.4 * 4 + 0.8 * 2) / 6
    assert sem.score("uncertainty_least_confidence") == pytest.approx([3.2 / 6, 0.0])
    assert sem.score("uncertainty_margin") == pytest.approx([3.2 / 6, 0.0])
    assert sem.score("uncertainty_entropy") == pytest.approx([(ent2(0.8) * 4 + ent2(0.6) * 2) / 6, 0.0])
    inst = {"a.png": [{"category_id": 1, "segmentation": [1, 2], "bbox": [0, 0, 3, 1], "score": 0.7}], "b.png": []}
    task(tmp_path, "inst", "instance-segmentation", ["road", "car"], inst)
    ins = load_predictions(tmp_path, list(inst), "inst")
    assert ins.score("objectness_least_confidence") == pytest.approx([0.3, 0.0])
    assert ins.objects[0][0].area == 2 and ins.objects[0][0].bbox == (0, 0, 3, 1)


def test_unknown_score_lists_the_task_types_scorers(tmp_path: Path) -> None:
    task(tmp_path, "kp", "keypoint-detection", ["person"], {"a.png": []})
    task(tmp_path, "det", "object-detection", ["car", "bus"], {"a.png": []})
    files = ["a.png"]
    for name, listed in (("kp", "['mean_uncertainty']"), ("det", "'objectness_least_confidence'")):
        conf = cfg(({"type": "SCORES", "task": name, "score": "objectness"}, {"type": "WEIGHTS"}))
        got = SelectionInputs(files, **load_lightly_inputs(tmp_path, files, conf))
        with pytest.raises(
            SelectionError, match=rf"'objectness' is not available for a .* task; available: .*{listed}"
        ):
            select(conf, got)


@pytest.mark.parametrize(
    ("task_type", "pred", "message"),
    [
        ("object-detection", {"category_id": 0, "bbox": [0, 0, 1], "score": 0.5}, r"\.bbox must be"),
        ("object-detection", {"category_id": 0, "bbox": [0, 0, 1, 1]}, r"\.score must be"),
        ("object-detection", {"category_id": 0, "bbox": [0, 0, 1, 1], "score": 1.5}, r"\.score must be a number in"),
        ("object-detection", {"category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5}, r"\.category_id 9 is not in"),
        (
            "object-detection",
            {"category_id": 0, "bbox": [0, 0, 1, 1], "score": 0.5, "probabilities": [0.2, 0.2]},
            r"\.probabilities must be values in \[0, 1\] that sum to 1",
        ),
        ("keypoint-detection", {"category_id": 0, "keypoints": [1, 2, 0.5, 3], "score": 0.5}, r"\.keypoints must be"),
        (
            "keypoint-detection",
            {"category_id": 0, "keypoints": [1, 2, 1.5], "score": 0.5},
            r"\.keypoints: the confidences .* in \[0, 1\]",
        ),
        ("semantic-segmentation", {"category_id": 0, "segmentation": [2, -1], "score": 0.5}, r"\.segmentation must be"),
        ("semantic-segmentation", {"category_id": 0, "segmentation": [2.5], "score": 0.5}, r"\.segmentation must be"),
        ("instance-segmentation", {"category_id": 0, "segmentation": [2, 1], "score": 0.5}, r"\.bbox must be"),
        ("classification", "car", r" must be a JSON object"),
    ],
)
def test_prediction_errors_name_file_and_field(tmp_path: Path, task_type: str, pred: Any, message: str) -> None:
    task(tmp_path, "t", task_type, ["a", "b"], {"x/a.png": [pred]})
    with pytest.raises(SelectionError, match=r"t/x/a\.json: predictions\[0\]" + message):
        load_predictions(tmp_path, ["x/a.png"], "t")


def test_schema_and_file_errors(tmp_path: Path) -> None:
    task(tmp_path, "depth", "depth-estimation", ["a"], {"a.png": []})
    with pytest.raises(SelectionError, match=r"schema\.json: task_type 'depth-estimation' is not one of"):
        load_predictions(tmp_path, ["a.png"], "depth")
    task(tmp_path, "clf", "classification", ["a", "b"], {"a.png": [{"category_id": 0}, {"category_id": 1}]})
    with pytest.raises(SelectionError, match="a classification file needs exactly one prediction, got 2"):
        load_predictions(tmp_path, ["a.png"], "clf")
    write(tmp_path / ".lightly" / "predictions" / "clf" / "a.json", {"file_name": "a.png", "predictions": {}})
    with pytest.raises(SelectionError, match=r"clf/a\.json: 'predictions' must be a list"):
        load_predictions(tmp_path, ["a.png"], "clf")
    write(
        tmp_path / ".lightly" / "predictions" / "clf" / "a.json",
        {"file_name": "a.png", "predictions": [{"category_id": 1}]},
    )
    clf = load_predictions(tmp_path, ["a.png"], "clf")
    assert clf.probabilities.tolist() == [[0.0, 1.0]] and clf.score("uncertainty_margin").tolist() == [0.0]
    assert np.asarray(clf.category_counts).tolist() == [[0.0, 1.0]]
