"""TILING auto tasks (``selection.auto_tasks``), as Lightly documents them: each image is split into a grid
of ``num_rows`` x ``num_cols`` rectangular tiles, optionally overlapping; the tiles are the objects of a
task named ``name``, which an EMBEDDINGS input with that ``task`` selects from (object-level selection:
the tiles are cropped, embedded and selected like detected objects, and the selected tiles are written to
``crops/<name>/``). Tiles have no categories or scores, so SCORES and PREDICTIONS inputs of a tiling task
are refused (Lightly: "they can only be used as part of an object EMBEDDINGS input").

Geometry (``overlap`` = "a fraction of the tile size", the client's field description; default 0): along
an image side of L pixels split into n tiles, each tile is ``T = L / (1 + (n - 1) * (1 - overlap))``
pixels long and tile k starts at ``k * T * (1 - overlap)``, so neighbours share ``overlap * T`` pixels and
the last tile ends at L. Tiles are not padded. Tile k of an image (row-major: ``row * num_cols + col``) is
its object k; its crop is ``<image without extension>/<k>_tile.<fmt>``.
"""

from __future__ import annotations

import io

import numpy as np
from lightly_protocol.models import AutoTaskTiling, SelectionConfigV4
from PIL import Image

from .embed import FrameRef, resolve_sample
from .embed.decode import video_size
from .selection import PredictionTask
from .selection.scores import ObjectPrediction
from .sources import InputSource, LocalSource

__all__ = [
    "TILE_CATEGORY",
    "image_sizes",
    "tile_boxes",
    "tiling_names",
    "tiling_task",
    "tiling_tasks",
    "without_tiling",
]

TILE_CATEGORY = "tile"


def tiling_tasks(config: SelectionConfigV4 | None) -> dict[str, AutoTaskTiling]:
    """The TILING auto tasks of a selection config, by name."""
    return {t.name: t for t in (config.auto_tasks or [])} if config is not None else {}


def tiling_names(config: SelectionConfigV4 | None) -> set[str]:
    return set(tiling_tasks(config))


def without_tiling(config: SelectionConfigV4) -> SelectionConfigV4:
    """``config`` without the inputs of its tiling tasks: what is read from ``.lightly/`` (a tiling task has
    no prediction files)."""
    names = tiling_names(config)
    kept = [e for e in config.strategies if not (e.input.task and e.input.task in names)]
    return config.model_copy(update={"strategies": kept})


def _spans(length: float, n: int, overlap: float) -> list[tuple[float, float]]:
    size = length / (1 + (n - 1) * (1 - overlap))
    return [(k * size * (1 - overlap), size) for k in range(n)]


def tile_boxes(width: int, height: int, task: AutoTaskTiling) -> list[tuple[float, float, float, float]]:
    """The ``[x, y, w, h]`` pixel boxes of an image's tiles, row-major."""
    overlap = float(task.overlap or 0.0)
    rows, cols = _spans(height, task.num_rows, overlap), _spans(width, task.num_cols, overlap)
    return [(x, y, w, h) for y, h in rows for x, w in cols]


def image_sizes(source: InputSource, filenames: list[str]) -> list[tuple[int, int]]:
    """(width, height) of each image, from its header (a local file is not decoded; a remote one is read); a
    video frame has its video's size."""
    out = []
    videos: dict[str, tuple[int, int]] = {}  # a video's frames share its size: its header is read once
    for name in filenames:
        ref = resolve_sample(source, name)
        if isinstance(ref, FrameRef):
            if ref.key not in videos:
                videos[ref.key] = video_size(source, ref.key)
            out.append(videos[ref.key])
            continue
        data = source.path(ref.key) if isinstance(source, LocalSource) else io.BytesIO(source.read_bytes(ref.key))
        with Image.open(data) as im:
            out.append(im.size)
    return out


def tiling_task(task: AutoTaskTiling, sizes: list[tuple[int, int]]) -> PredictionTask:
    """The tiles of every image as an object-detection task of one category (``tile``), score 1."""
    one = np.ones(1)
    objects = [[ObjectPrediction(0, 1.0, one, box) for box in tile_boxes(w, h, task)] for w, h in sizes]
    counts = np.array([[len(o)] for o in objects], dtype=np.float64).reshape(len(objects), 1)
    return PredictionTask([TILE_CATEGORY], counts.copy(), "object-detection", counts, {}, objects)
