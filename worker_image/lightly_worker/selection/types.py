"""Data types of the selection engine (what the pipeline passes in and gets back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .scores import SCORERS, ObjectPrediction, classification_scores

__all__ = ["PredictionTask", "SelectionError", "SelectionInputs", "SelectionResult"]


class SelectionError(ValueError):
    """The selection cannot run as configured; the message says what to fix."""


@dataclass
class PredictionTask:
    """Per-candidate class information of one prediction task (rows follow ``SelectionInputs.filenames``).

    ``probabilities``: N x C class distribution per sample (classification: the probability vector,
    or one-hot of ``category_id`` without probabilities; object detection: per-object probability
    vectors summed over the objects of the image). ``category_counts``: N x C number of predictions
    per category (optional; derived when absent). ``scores``: precomputed active-learning scores by
    name, each an N vector (``load_lightly_inputs`` fills the standard ones; a caller such as the
    pretagging step may supply its own). ``objects``: each sample's predictions as read (empty when the
    task was given as arrays only); object-level selection crops and scores them.
    """

    categories: list[str]
    probabilities: np.ndarray
    task_type: str = "classification"  # one of scores.TASK_TYPES
    category_counts: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    objects: list[list[ObjectPrediction]] = field(default_factory=list)

    def counts(self) -> np.ndarray:
        if self.category_counts is not None:
            return np.asarray(self.category_counts, dtype=np.float64)
        p = np.asarray(self.probabilities, dtype=np.float64)
        if self.task_type == "classification":
            out = np.zeros_like(p)
            has = p.sum(1) > 0
            out[np.flatnonzero(has), p[has].argmax(1)] = 1.0
            return out
        raise ValueError(f"category_counts are required for {self.task_type} tasks")

    def score(self, name: str) -> np.ndarray:
        if name in self.scores:
            return np.asarray(self.scores[name], dtype=np.float64)
        if self.task_type == "classification":
            computed = classification_scores(np.asarray(self.probabilities, dtype=np.float64))
            if name in computed:
                return computed[name]
        available = sorted(set(self.scores) | set(SCORERS.get(self.task_type, ())))
        raise SelectionError(f"score {name!r} is not available for a {self.task_type} task; available: {available}")


@dataclass
class SelectionInputs:
    """Everything the selection needs, aligned with ``filenames`` (N candidates)."""

    filenames: list[str]
    embeddings: np.ndarray | None = None  # N x D float32
    datapool_embeddings: np.ndarray | None = None  # P x D, samples selected in earlier runs
    metadata: dict[str, list[Any]] = field(default_factory=dict)  # METADATA key -> N values (None = missing)
    predictions: dict[str, PredictionTask] = field(default_factory=dict)  # task name -> class information
    query_embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # SIMILARITY tag name -> Q x D
    #: object-level selection: the prediction task whose objects the candidates are (their crops'
    #: embeddings are ``embeddings``); None for image-level selection
    object_task: str | None = None


@dataclass
class SelectionResult:
    selected: list[int]  # indices into filenames, in pick order
    removed_by_threshold: list[int]
    stop_reason: str  # "n_samples" | "minimum_distance" | "max_sum" | "minimum_typicality" | "exhausted"
    #: DIVERSITY only: Euclidean distance of each pick to the selection before it (datapool included);
    #: ``inf`` for a first pick without datapool; [] when no DIVERSITY strategy ran
    min_distances: list[float] = field(default_factory=list)
    #: what a strategy found out while selecting, for the report (COVERAGE_EXT: radius, covered fraction, ...)
    details: dict[str, Any] = field(default_factory=dict)
