"""Lightly's active-learning scorers, per prediction task type (a leaf module: ``types`` and the readers use it).

Every scorer gives one value per sample (image, video frame or, in object-level selection, object);
high values mark samples worth labelling. Names and formulas follow Lightly's documentation
("Active Learning Scorers") and its former scorer code (``lightly.active_learning.scorers``):

classification (from each sample's probability vector ``p`` over ``C`` classes; all in [0, 1])
    ``uncertainty_least_confidence`` = ``(1 - max p) * C / (C - 1)``;
    ``uncertainty_margin`` = ``1 - (p_top1 - p_top2)``;
    ``uncertainty_entropy`` = ``-sum p log p / log C``.
object detection and instance segmentation (each predicted box or instance an object)
    ``objectness_least_confidence`` = ``1 - mean(score)`` over the sample's objects (0 without objects);
    ``object_frequency``: objects counted per class, the first of a class as 1 and every further one as
    ``0.25`` (``OBJECT_FREQUENCY_PENALTY``), then mapped linearly from ``[min, max]`` over the samples to
    ``[0.9, 1]`` (``OBJECT_FREQUENCY_MIN_SCORE``; all 1 when every sample has the same count);
    ``uncertainty_*``: the classification scores of each object's probabilities, maximum over the
    sample's objects (0 without objects).
keypoint detection
    ``mean_uncertainty`` = ``1 - mean over instances of (mean confidence of the instance's keypoints)``
    (0 without instances).
semantic segmentation
    ``uncertainty_*``: the classification scores of every predicted pixel, averaged over the pixels: the
    segments' scores weighted by their mask areas (0 without predicted pixels).

An object's probabilities are its ``probabilities`` when given, else ``score`` on its category and
``(1 - score) / (C - 1)`` on each other category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "OBJECT_FREQUENCY_MIN_SCORE",
    "OBJECT_FREQUENCY_PENALTY",
    "SCORERS",
    "SCORE_NAMES",
    "TASK_TYPES",
    "ObjectPrediction",
    "classification_scores",
    "object_scores",
    "task_scores",
]

SCORE_NAMES = ("uncertainty_least_confidence", "uncertainty_margin", "uncertainty_entropy")
OBJECT_FREQUENCY_PENALTY = 0.25
OBJECT_FREQUENCY_MIN_SCORE = 0.9
TASK_TYPES = (
    "classification",
    "object-detection",
    "keypoint-detection",
    "semantic-segmentation",
    "instance-segmentation",
)
#: score names by task type (what a SCORES input may name)
SCORERS: dict[str, tuple[str, ...]] = {
    "classification": SCORE_NAMES,
    "object-detection": ("objectness_least_confidence", "object_frequency", *SCORE_NAMES),
    "instance-segmentation": ("objectness_least_confidence", "object_frequency", *SCORE_NAMES),
    "keypoint-detection": ("mean_uncertainty",),
    "semantic-segmentation": SCORE_NAMES,
}


@dataclass(frozen=True)
class ObjectPrediction:
    """One prediction of a file: a class, an object, a keypoint instance or a segment."""

    col: int  # column of its category (categories sorted by id)
    score: float
    probabilities: np.ndarray  # C values (given, or derived from score and category)
    bbox: tuple[float, float, float, float] | None = None  # x, y, width, height in pixels
    keypoint_confidences: np.ndarray | None = None  # keypoint detection: s1..sk
    area: int | None = None  # segmentation: pixels of its mask


def classification_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Uncertainty scores of rows of class probabilities (N x C), each in [0, 1]."""
    p = np.asarray(probs, dtype=np.float64)
    n, c = p.shape
    if c < 2:
        z = np.zeros(n)
        return {name: z.copy() for name in SCORE_NAMES}
    total = p.sum(1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    top = np.sort(p, axis=1)[:, ::-1]
    least = (1.0 - top[:, 0]) * c / (c - 1)
    margin = 1.0 - (top[:, 0] - top[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(p > 0, p * np.log(p), 0.0).sum(1) / np.log(c)
    empty = total[:, 0] <= 0
    least[empty] = margin[empty] = ent[empty] = 0.0
    return {
        "uncertainty_least_confidence": np.clip(least, 0, 1),
        "uncertainty_margin": np.clip(margin, 0, 1),
        "uncertainty_entropy": np.clip(ent, 0, 1),
    }


def _frequency(objs: list[ObjectPrediction]) -> float:
    seen: dict[int, float] = {}
    for o in objs:
        seen[o.col] = seen[o.col] + OBJECT_FREQUENCY_PENALTY if o.col in seen else 1.0
    return float(sum(seen.values()))


def _detection_scores(files: list[list[ObjectPrediction]], c: int) -> dict[str, np.ndarray]:
    n = len(files)
    out = {name: np.zeros(n) for name in SCORERS["object-detection"]}
    counts = np.array([_frequency(objs) for objs in files])
    if n:
        lo, hi = float(counts.min()), float(counts.max())
        out["object_frequency"] = (
            np.interp(counts, (lo, hi), (OBJECT_FREQUENCY_MIN_SCORE, 1.0)) if hi > lo else np.ones(n)
        )
    for i, objs in enumerate(files):
        if not objs:
            continue
        out["objectness_least_confidence"][i] = 1.0 - float(np.mean([o.score for o in objs]))
        per_obj = classification_scores(np.stack([o.probabilities for o in objs]).reshape(len(objs), c))
        for name in SCORE_NAMES:
            out[name][i] = float(per_obj[name].max())
    return out


def _keypoint_scores(files: list[list[ObjectPrediction]]) -> dict[str, np.ndarray]:
    out = np.zeros(len(files))
    for i, objs in enumerate(files):
        confs = [float(np.mean(o.keypoint_confidences)) for o in objs if o.keypoint_confidences is not None]
        if confs:
            out[i] = 1.0 - float(np.mean(confs))
    return {"mean_uncertainty": out}


def _segmentation_scores(files: list[list[ObjectPrediction]], c: int) -> dict[str, np.ndarray]:
    out = {name: np.zeros(len(files)) for name in SCORE_NAMES}
    for i, objs in enumerate(files):
        areas = np.array([float(o.area or 0) for o in objs])
        if not objs or areas.sum() <= 0:
            continue
        per_seg = classification_scores(np.stack([o.probabilities for o in objs]).reshape(len(objs), c))
        for name in SCORE_NAMES:
            out[name][i] = float((per_seg[name] * areas).sum() / areas.sum())
    return out


def task_scores(task_type: str, files: list[list[ObjectPrediction]], c: int) -> dict[str, np.ndarray]:
    """Every scorer of ``task_type`` on the predictions of each sample (``files[i]``: sample i's)."""
    if task_type == "classification":
        probs = (
            np.stack([objs[0].probabilities if objs else np.zeros(c) for objs in files]) if files else np.zeros((0, c))
        )
        return classification_scores(probs)
    if task_type in ("object-detection", "instance-segmentation"):
        return _detection_scores(files, c)
    if task_type == "keypoint-detection":
        return _keypoint_scores(files)
    if task_type == "semantic-segmentation":
        return _segmentation_scores(files, c)
    raise ValueError(f"unknown task type {task_type!r}; known: {list(TASK_TYPES)}")


def object_scores(task_type: str, objects: list[ObjectPrediction], c: int) -> dict[str, np.ndarray]:
    """The scorers of ``task_type`` with each object as its own sample (object-level selection)."""
    return task_scores(task_type, [[o] for o in objects], c)
