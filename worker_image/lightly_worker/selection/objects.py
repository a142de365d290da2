"""Object-level selection (Lightly's "crop selection"): the candidates are the objects of a prediction
task, each with the embedding of its crop.

A selection is object-level when an EMBEDDINGS input names a ``task``; then every EMBEDDINGS input
must name that same task, and every strategy works on the objects: SCORES of the task are the
scorers of :mod:`.scores` with each object as its own sample (``objectness_least_confidence`` =
``1 - score``, ``uncertainty_*`` of the object's probabilities, ``mean_uncertainty`` of its
keypoints), PREDICTIONS of the task are the object's class (probabilities, or one count for
``CATEGORY_COUNT``), and METADATA and the predictions of other tasks are those of the object's image.
Objects come from ``object-detection``, ``instance-segmentation`` (their ``bbox``) and
``keypoint-detection`` (its ``bbox``, else the keypoints' extent) tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from lightly_protocol.models import SelectionConfigV4

from .scores import ObjectPrediction, object_scores
from .types import PredictionTask, SelectionError, SelectionInputs

__all__ = ["CROP_TASK_TYPES", "ObjectRef", "crop_name", "list_objects", "object_inputs", "object_level_task"]

CROP_TASK_TYPES = ("object-detection", "keypoint-detection", "instance-segmentation")


def object_level_task(config: SelectionConfigV4) -> str | None:
    """The task whose objects the selection works on (None: image-level); errors for mixed inputs."""
    tasks = list(
        dict.fromkeys(e.input.task for e in config.strategies if e.input.type == "EMBEDDINGS" and e.input.task)
    )
    if not tasks:
        return None
    if len(tasks) > 1:
        raise SelectionError(
            f"selection: EMBEDDINGS inputs name several tasks {tasks}; object-level selection works on one"
        )
    for i, e in enumerate(config.strategies):
        if e.input.type == "EMBEDDINGS" and not e.input.task:
            raise SelectionError(
                f"selection.strategies[{i}]: EMBEDDINGS without 'task' in an object-level selection of task "
                f'{tasks[0]!r}; add "task": {tasks[0]!r} to this input (the candidates are the task\'s objects)'
            )
    return tasks[0]


@dataclass(frozen=True)
class ObjectRef:
    """One object: its image (index into the image candidates), its index in the image's predictions,
    its category name, its prediction and its crop's file name (``name``)."""

    image: int
    index: int
    category: str
    prediction: ObjectPrediction
    name: str


def crop_name(image: str, index: int, category: str, fmt: str) -> str:
    """A crop's file name, in the layout of Lightly's ``lightly-crop``:
    ``<image without extension>/<index>_<category>.<fmt>``."""
    p = PurePosixPath(image)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in category)
    return str(p.with_suffix("") / f"{index}_{safe}.{fmt}")


def list_objects(filenames: list[str], task_name: str, task: PredictionTask, fmt: str) -> list[ObjectRef]:
    """Every object of ``task`` over ``filenames`` (in image order, then prediction order)."""
    if task.task_type not in CROP_TASK_TYPES:
        raise SelectionError(
            f"EMBEDDINGS of task {task_name!r}: object-level selection needs objects with boxes; its task_type "
            f"{task.task_type!r} has none (use one of {list(CROP_TASK_TYPES)})"
        )
    if len(task.objects) != len(filenames):
        raise SelectionError(f"task {task_name!r} has predictions for {len(task.objects)} of {len(filenames)} samples")
    out: list[ObjectRef] = []
    for i, objs in enumerate(task.objects):
        for k, o in enumerate(objs):
            cat = task.categories[o.col]
            out.append(ObjectRef(i, k, cat, o, crop_name(filenames[i], k, cat, fmt)))
    return out


def _object_task(task: PredictionTask, objects: list[ObjectRef]) -> PredictionTask:
    c = len(task.categories)
    preds = [r.prediction for r in objects]
    probs = np.stack([p.probabilities for p in preds]) if preds else np.zeros((0, c))
    counts = np.zeros((len(preds), c))
    counts[np.arange(len(preds)), [p.col for p in preds]] = 1.0
    return PredictionTask(
        list(task.categories),
        probs,
        task.task_type,
        counts,
        object_scores(task.task_type, preds, c),
        [[p] for p in preds],
    )


def _per_object(task: PredictionTask, rows: np.ndarray) -> PredictionTask:
    """An image-level task seen from the objects: each object gets its image's row."""
    counts = None if task.category_counts is None else np.asarray(task.category_counts)[rows]
    scores = {k: np.asarray(v)[rows] for k, v in task.scores.items()}
    return PredictionTask(list(task.categories), np.asarray(task.probabilities)[rows], task.task_type, counts, scores)


def object_inputs(
    inputs: SelectionInputs, task_name: str, objects: list[ObjectRef], embeddings: np.ndarray
) -> SelectionInputs:
    """The object-level candidates of image-level ``inputs``: one row per object of ``objects``."""
    if task_name not in inputs.predictions:
        raise SelectionError(f"EMBEDDINGS of task {task_name!r}: its predictions were not read")
    rows = np.asarray([r.image for r in objects], dtype=np.int64)
    predictions = {
        name: _object_task(t, objects) if name == task_name else _per_object(t, rows)
        for name, t in inputs.predictions.items()
    }
    metadata = {k: [v[i] for i in rows.tolist()] for k, v in inputs.metadata.items()}
    return SelectionInputs(
        [r.name for r in objects],
        embeddings=embeddings,
        metadata=metadata,
        predictions=predictions,
        query_embeddings=inputs.query_embeddings,
        object_task=task_name,
    )
