"""Reader of prediction tasks in Lightly's format, for every task type (``.lightly/predictions/``).

Layout (Lightly's "Prediction Format"): ``tasks.json`` lists the task names (only listed tasks are
read); ``<task>/schema.json`` = ``{"task_type", "categories": [{"id", "name"}]}`` (the older key
``task_description`` is accepted for ``task_type``); one file per sample,
``<task>/<relative path without extension>.json`` = ``{"file_name", "predictions": [...]}`` (a video
frame's file is named like the frame, ``<video>-<frame>-<ext>.json``). A missing file is an error; an
empty ``predictions`` list means "nothing found" (not allowed for classification).

Each prediction has ``category_id`` (an id of the schema) and ``score`` (in [0, 1]; optional for
classification), optional ``probabilities`` (one value in [0, 1] per category, summing to 1 within
0.01), and per task type:

* ``classification``: exactly one prediction per file.
* ``object-detection``: ``bbox`` = ``[x, y, width, height]`` in pixels (numbers >= 0).
* ``keypoint-detection``: ``keypoints`` = ``[x1, y1, s1, x2, y2, s2, ...]`` (at least one keypoint,
  coordinates >= 0, confidences ``s`` in [0, 1]); optional ``bbox``.
* ``semantic-segmentation``: ``segmentation`` = run-length encoding of the mask, a list of counts
  >= 0 alternating runs of 0 and 1 pixels, starting with a run of 0s (``[2, 2, 1, 3, 3, 1]``).
* ``instance-segmentation``: ``segmentation`` (as above) and ``bbox``.

Errors name the file and the field (``<file>: predictions[2].bbox ...``). The scorers are in
:mod:`.scores`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import PathOutsideRoot, inside
from .jsonfiles import json_name, lightly_dir, read_json
from .scores import TASK_TYPES, ObjectPrediction, task_scores
from .types import PredictionTask, SelectionError

__all__ = ["PRETAGGING_TASK", "TaskSchema", "load_predictions", "parse_prediction", "task_schema"]

PRETAGGING_TASK = "lightly_pretagging"
_PROB_SUM_TOLERANCE = 0.01


@dataclass(frozen=True)
class TaskSchema:
    """A prediction task's ``schema.json``: its type and its categories sorted by id."""

    file: Path
    task_type: str
    cats: list[dict[str, Any]]

    @functools.cached_property  # read for every predictions file: computed once per task
    def ids(self) -> list[int]:
        return [int(c["id"]) for c in self.cats]

    @functools.cached_property
    def col(self) -> dict[int, int]:
        """Category id -> column."""
        return {cid: j for j, cid in enumerate(self.ids)}

    @property
    def names(self) -> list[str]:
        return [str(cat.get("name", cat["id"])) for cat in self.cats]


def task_schema(base: Path, task: str) -> TaskSchema:
    """The schema of ``task`` under ``base`` (``.lightly/predictions``); it must be listed in tasks.json."""
    tasks_file = base / "tasks.json"
    tasks = read_json(tasks_file, list) if tasks_file.is_file() else []
    if task not in tasks:
        raise SelectionError(
            f"prediction task {task!r} is not listed in {tasks_file} (found {tasks}); "
            "add it there and put its files in .lightly/predictions/<task>/"
        )
    try:
        inside(base, task, "prediction task", ".lightly/predictions/")
    except PathOutsideRoot as exc:
        raise SelectionError(str(exc)) from None
    schema_file = base / task / "schema.json"
    if not schema_file.is_file():
        raise SelectionError(f"prediction task {task!r} has no schema: {schema_file} is missing")
    schema = read_json(schema_file, dict)
    task_type = schema.get("task_type") or schema.get("task_description")
    if task_type not in TASK_TYPES:
        raise SelectionError(f"{schema_file}: task_type {task_type!r} is not one of {list(TASK_TYPES)}")
    try:
        cats = sorted(schema.get("categories") or [], key=lambda c: int(c["id"]))
    except (KeyError, TypeError, ValueError):
        cats = []
    if not cats:
        raise SelectionError(f"{schema_file}: 'categories' must list the classes as {{'id', 'name'}}")
    ids = [int(c["id"]) for c in cats]
    if len(set(ids)) != len(ids):
        raise SelectionError(f"{schema_file}: 'categories' repeats an id ({ids})")
    return TaskSchema(schema_file, task_type, cats)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(pred: dict[str, Any], key: str, where: str, size: int | None, what: str) -> list[float]:
    v = pred.get(key)
    if not isinstance(v, list) or (size is not None and len(v) != size) or not all(_number(x) and x >= 0 for x in v):
        raise SelectionError(f"{where}.{key} must be {what}, got {v!r}")
    return [float(x) for x in v]


def _probabilities(pred: dict[str, Any], where: str, c: int) -> np.ndarray | None:
    if pred.get("probabilities") is None:
        return None
    pr = _numbers(pred, "probabilities", where, c, f"a list of {c} values in [0, 1], one per category")
    if any(x > 1 for x in pr) or abs(sum(pr) - 1.0) > _PROB_SUM_TOLERANCE:
        raise SelectionError(f"{where}.probabilities must be values in [0, 1] that sum to 1, got {pr!r}")
    return np.asarray(pr, dtype=np.float64)


def _rle_area(pred: dict[str, Any], where: str) -> int:
    runs = pred.get("segmentation")
    if not isinstance(runs, list) or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in runs):
        raise SelectionError(
            f"{where}.segmentation must be a run-length encoding: a list of integer counts >= 0, "
            f"alternating runs of 0 and 1 pixels starting with 0s (e.g. [2, 2, 1, 3, 3, 1]), got {runs!r}"
        )
    return int(sum(runs[1::2]))


def _bbox(pred: dict[str, Any], where: str, required: bool) -> tuple[float, float, float, float] | None:
    if pred.get("bbox") is None and not required:
        return None
    x, y, w, h = _numbers(pred, "bbox", where, 4, "[x, y, width, height] in pixels (4 numbers >= 0)")
    return (x, y, w, h)


def parse_prediction(schema: TaskSchema, pred: Any, where: str) -> ObjectPrediction:
    """One entry of a file's ``predictions`` list, checked for ``schema``'s task type (``where``: the
    file and index, for messages)."""
    if not isinstance(pred, dict):
        raise SelectionError(f"{where} must be a JSON object, got {pred!r}")
    c, kind = len(schema.cats), schema.task_type
    cid = pred.get("category_id")
    if isinstance(cid, bool) or cid not in schema.col:
        raise SelectionError(f"{where}.category_id {cid!r} is not in {schema.file} (ids {schema.ids})")
    col = schema.col[cid]
    probs = _probabilities(pred, where, c)
    raw: Any = pred.get("score")
    if raw is None and kind == "classification":
        raw = float(probs[col]) if probs is not None else 1.0
    if not _number(raw) or not 0 <= raw <= 1:
        raise SelectionError(f"{where}.score must be a number in [0, 1], got {raw!r}")
    score = float(raw)
    if probs is None and kind == "classification":
        probs = np.eye(c)[col]
    elif probs is None:
        probs = np.full(c, (1.0 - score) / (c - 1) if c > 1 else 0.0)
        probs[col] = score
    bbox = _bbox(pred, where, kind in ("object-detection", "instance-segmentation"))
    kp = None
    if kind == "keypoint-detection":
        kp, bbox = _keypoints(pred, where, bbox)
    area = _rle_area(pred, where) if kind in ("semantic-segmentation", "instance-segmentation") else None
    return ObjectPrediction(col, score, probs, bbox, kp, area)


def _keypoints(
    pred: dict[str, Any], where: str, bbox: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The keypoints' confidences, and the box (the given one, else the keypoints' extent)."""
    vals = pred.get("keypoints")
    what = "[x1, y1, s1, x2, y2, s2, ...]: at least one keypoint, numbers >= 0"
    if not isinstance(vals, list) or len(vals) < 3 or len(vals) % 3:
        raise SelectionError(f"{where}.keypoints must be {what}, got {vals!r}")
    arr = np.asarray(_numbers(pred, "keypoints", where, None, what)).reshape(-1, 3)
    if (arr[:, 2] > 1).any():
        raise SelectionError(f"{where}.keypoints: the confidences (every third value) must be in [0, 1]")
    if bbox is None:
        x0, y0 = float(arr[:, 0].min()), float(arr[:, 1].min())
        bbox = (x0, y0, float(arr[:, 0].max()) - x0, float(arr[:, 1].max()) - y0)
    return arr[:, 2], bbox


def _read_file(schema: TaskSchema, path: Path) -> list[ObjectPrediction]:
    data = read_json(path, dict)
    if "file_name" in data and not isinstance(data["file_name"], str):
        raise SelectionError(f"{path}: 'file_name' must be the sample's file name, got {data['file_name']!r}")
    preds = data.get("predictions")
    if not isinstance(preds, list):
        raise SelectionError(f"{path}: 'predictions' must be a list")
    objs = [parse_prediction(schema, p, f"{path}: predictions[{k}]") for k, p in enumerate(preds)]
    if schema.task_type == "classification" and len(objs) != 1:
        raise SelectionError(f"{path}: a classification file needs exactly one prediction, got {len(objs)}")
    return objs


def load_predictions(lightly_root: Path, filenames: list[str], task: str) -> PredictionTask:
    """Read one prediction task for every file (error when a file's predictions are missing)."""
    base = lightly_dir(lightly_root) / "predictions"
    schema = task_schema(base, task)
    c, n = len(schema.cats), len(filenames)
    files: list[list[ObjectPrediction]] = []
    missing: list[str] = []
    for fn in filenames:
        path = base / task / json_name(fn)
        if not path.is_file():
            missing.append(fn)
            files.append([])
            continue
        files.append(_read_file(schema, path))
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        raise SelectionError(
            f"prediction task {task!r}: no prediction file for {len(missing)} sample(s) (e.g. {shown}); "
            f"expected .lightly/predictions/{task}/<filename without extension>.json"
        )
    probs = np.zeros((n, c))
    counts = np.zeros((n, c))
    for i, objs in enumerate(files):
        for o in objs:
            probs[i] += o.probabilities
            counts[i, o.col] += 1
    return PredictionTask(schema.names, probs, schema.task_type, counts, task_scores(schema.task_type, files, c), files)
