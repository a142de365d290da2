"""The TRAINING stage on object crops (``docker.training.task_name`` with ``docker.enable_training``, as
Lightly documents it: "train the embedding model on object crops"; the task must be an object-detection
or keypoint-detection task, here also instance-segmentation and a TILING auto task of the selection).

The task's predictions are read before training (from the LIGHTLY datasource, like those of
object-level selection); a task that cannot be read, of a type without boxes, or with fewer than two
objects fails the run at once with a message naming the task and what to add. SimCLR then trains on
the crops (:mod:`.crop_training`), writes the checkpoint as whole-image training does, and the run
embeds with the trained model (images, and crops in an object-level selection).
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from .crop_training import train_simclr_on_crops
from .crops import CROP_PADDING, CropError
from .embed import SimCLRBackbone, TrainConfig
from .embed._common import Progress
from .job import Job, JobError
from .selection import ObjectRef, PredictionTask, SelectionError, list_objects, load_predictions
from .selection.objects import CROP_TASK_TYPES
from .sources import as_source
from .tiling import image_sizes, tiling_task, tiling_tasks

__all__ = ["task_objects", "train_on_task_crops", "training_task_of"]


def training_task_of(job: Job) -> str | None:
    """``docker.training.task_name`` (None, or "" as Lightly's documented default: train on whole images)."""
    docker = job.docker
    return (docker.training.task_name or None) if docker and docker.training else None


def _task(job: Job, task: str) -> PredictionTask:
    tiling = tiling_tasks(job.config.selection)
    if task in tiling:  # a TILING auto task of the selection: the tiles of every image
        try:
            return tiling_task(tiling[task], image_sizes(as_source(job.paths.input), job.candidates))
        except (ValueError, OSError) as exc:
            raise JobError(f"training.task_name {task!r} (a TILING auto task): {exc}") from None
    if job.paths.lightly_root is None:
        raise JobError(
            f"training.task_name {task!r}: training on crops reads the task's predictions from the LIGHTLY "
            f"datasource; set one (client.set_local_config(purpose='LIGHTLY')) with "
            f".lightly/predictions/tasks.json listing {task!r} and .lightly/predictions/{task}/"
        )
    try:
        return load_predictions(job.paths.lightly_root, job.candidates, task)
    except SelectionError as exc:
        raise JobError(f"training.task_name {task!r}: {exc}") from None


def task_objects(job: Job, task: str) -> list[ObjectRef]:
    """The objects of ``task`` over the run's images; errors name the task and what to add."""
    pred = _task(job, task)
    if pred.task_type not in CROP_TASK_TYPES:
        raise JobError(
            f"training.task_name {task!r}: training on crops needs objects with boxes; its task_type "
            f"{pred.task_type!r} has none (use a task of type {', '.join(CROP_TASK_TYPES)})"
        )
    try:
        objects = list_objects(job.candidates, task, pred, "png")
    except SelectionError as exc:
        raise JobError(f"training.task_name {task!r}: {exc}") from None
    if len(objects) < 2:
        raise JobError(
            f"training.task_name {task!r}: the task has {len(objects)} object(s) in the {len(job.candidates)} "
            f"images, SimCLR needs at least 2 crops; add predictions with a bbox to .lightly/predictions/{task}/, "
            "or leave training.task_name out to train on the whole images"
        )
    return objects


def train_on_task_crops(
    job: Job,
    task: str,
    objects: list[ObjectRef],
    cfg: TrainConfig,
    checkpoint_path: Path,
    init: SimCLRBackbone | None,
    progress: Progress | None,
    log: logging.Logger,
) -> nn.Module:
    """Train SimCLR on the crops of ``objects`` of ``task`` (``log``: where its progress lines go); a box
    outside its image fails the run."""
    padding = 0.0 if task in tiling_tasks(job.config.selection) else CROP_PADDING  # tiles are not padded
    try:
        return train_simclr_on_crops(
            job.paths.input,
            job.candidates,
            objects,
            cfg,
            job.device,
            checkpoint_path,
            task=task,
            padding=padding,
            init=init,
            progress=progress,
            log=log,
        )
    except (CropError, OSError) as exc:
        raise JobError(f"training.task_name {task!r}: {exc}") from None
