"""The SAMPLING stage of an object-level selection (an EMBEDDINGS input with a ``task``; see
``selection.objects``): crop the task's objects, embed the crops, select objects, write their outputs.

Outputs, besides the image-level ones that ``stages.save_results`` writes for the images of the
selected objects (``selected_filenames.txt`` and the initial tag list those images, in the order their
first object was picked):

* ``crops/<task>/<image without extension>/<index>_<category>.<fmt>``: the selected objects' crops,
  in ``docker.output_image_format`` (png by default), padded as :mod:`.crops` says (the tiles of a
  TILING auto task, :mod:`.tiling`, are not padded);
* ``filenames/selected_crop_filenames.txt``: those crops' names, in pick order;
* ``data/selected_objects.json``: per selected object its crop, image (``file_name``), index in the
  image's predictions, category, ``bbox``, ``score``;
* ``data/crop_embeddings.csv``: the embeddings of every object's crop (Lightly's CSV format).

The report's ``selection_details.objects`` gives the task, the number of objects and of selected ones.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .crop_embed import embed_crops
from .crops import CROP_PADDING, CropError, output_format, write_crops
from .embed import EmbedConfig, save_embeddings
from .job import Job, JobError
from .report import write_lines
from .selection import (
    ObjectRef,
    SelectionError,
    SelectionInputs,
    SelectionResult,
    list_objects,
    object_inputs,
    object_level_task,
    select,
)
from .sources import as_source
from .tiling import image_sizes, tiling_names, tiling_task, tiling_tasks

__all__ = ["object_task_of", "sample_objects"]

log = logging.getLogger("lightly_worker.run")


def object_task_of(job: Job) -> str | None:
    """The prediction task of an object-level selection, None for an image-level one."""
    assert job.config.selection is not None
    try:
        return object_level_task(job.config.selection)
    except SelectionError as exc:
        raise JobError(str(exc)) from None


def _objects(job: Job, task: str, fmt: str) -> tuple[SelectionInputs, list[ObjectRef]]:
    inputs = SelectionInputs(filenames=job.candidates, embeddings=job.emb, query_embeddings=job.query, **job.extra)
    tiling = tiling_tasks(job.config.selection)
    if task in tiling:  # a TILING auto task: the tiles of every image are its objects
        try:
            sizes = image_sizes(as_source(job.paths.input), job.candidates)
        except (ValueError, OSError) as exc:
            raise JobError(f"TILING auto task {task!r}: {exc}") from None
        inputs.predictions = {**inputs.predictions, task: tiling_task(tiling[task], sizes)}
    if task not in inputs.predictions:
        raise JobError(f"EMBEDDINGS of task {task!r}: its predictions were not read (a LIGHTLY datasource is needed)")
    try:
        return inputs, list_objects(job.candidates, task, inputs.predictions[task], fmt)
    except SelectionError as exc:
        raise JobError(str(exc)) from None


def sample_objects(job: Job, task: str, cfg: EmbedConfig) -> None:
    """Select objects of ``task``; leaves the image-level result (images of the selected objects) in the job."""
    assert job.config.selection is not None
    docker = job.docker
    try:
        fmt = output_format(docker.output_image_format if docker else None)
    except CropError as exc:
        raise JobError(str(exc)) from None
    inputs, objects = _objects(job, task, fmt)
    padding = 0.0 if task in tiling_names(job.config.selection) else CROP_PADDING  # tiles are not padded
    crop_dir = job.out / "crops" / task
    job.say(f"cropping and embedding {len(objects)} objects of task {task} ({len(job.candidates)} images)")
    try:
        emb = embed_crops(job.paths.input, job.candidates, objects, cfg, model=job.model, padding=padding)
    except (CropError, OSError) as exc:
        raise JobError(f"crops of task {task!r}: {exc}") from None
    names = [o.name for o in objects]
    save_embeddings(job.out / "data" / "crop_embeddings.csv", names, emb)
    try:
        res = select(job.config.selection, object_inputs(inputs, task, objects, emb), device=job.device)
    except SelectionError as exc:
        raise JobError(str(exc)) from None
    try:  # only the selected objects' crops are written
        write_crops(job.paths.input, job.candidates, [objects[i] for i in res.selected], crop_dir, fmt, padding)
    except (CropError, OSError) as exc:
        raise JobError(f"crops of task {task!r}: {exc}") from None
    _write_object_outputs(job, task, objects, res.selected)
    picked_images = list(dict.fromkeys(objects[i].image for i in res.selected))
    removed = set(res.removed_by_threshold)
    kept = {o.image for i, o in enumerate(objects) if i not in removed}
    all_removed = sorted({o.image for o in objects} - kept)
    details: dict[str, Any] = {
        **res.details,
        "objects": {"task": task, "n_objects": len(objects), "n_selected": len(res.selected), "format": fmt},
    }
    job.result = SelectionResult(picked_images, all_removed, res.stop_reason, res.min_distances, details)
    job.selected = [job.candidates[i] for i in picked_images]
    log.info(
        "selected %d of %d objects of task %s (%s), in %d images",
        len(res.selected),
        len(objects),
        task,
        res.stop_reason,
        len(picked_images),
    )


def _write_object_outputs(job: Job, task: str, objects: list[ObjectRef], picks: list[int]) -> None:
    write_lines(job.out / "filenames" / "selected_crop_filenames.txt", [objects[i].name for i in picks])
    rows = [
        {
            "crop": objects[i].name,
            "file_name": job.candidates[objects[i].image],
            "index": objects[i].index,
            "category": objects[i].category,
            "bbox": list(objects[i].prediction.bbox or ()),
            "score": objects[i].prediction.score,
        }
        for i in picks
    ]
    (job.out / "data").mkdir(parents=True, exist_ok=True)
    (job.out / "data" / "selected_objects.json").write_text(json.dumps({"task": task, "objects": rows}, indent=2))
