"""SimCLR training on object crops (``training.task_name`` with ``enable_training``): the items are the
objects of a prediction task instead of whole images.

Each item is one object: its image is read and decoded once (a JPEG in the DCT domain at 1/2-1/8 scale,
only as far as the crop keeps the training's source resolution), its box is cut out padded like the
crops of object-level selection (:func:`.crops.crop_box`; a TILING auto task's tiles unpadded), and
the two augmented views of SimCLR are taken from that crop (:class:`.embed.simclr.TwoViewDataset`'s
augmentations, the photometric ones on the device). The trained model and its checkpoint are those of
whole-image training (:func:`.embed.simclr.train_two_views`).
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from .crops import CROP_PADDING, CropError, crop_box, frame_pixels
from .embed import FrameRef, SimCLRBackbone, TrainConfig, resolve_sample
from .embed._common import LOG, Progress
from .embed.files import SampleRef
from .embed.simclr import TwoViewDataset, train_two_views
from .selection import ObjectRef
from .sources import InputSource, LocalSource, as_source

__all__ = ["CropTwoViewDataset", "load_crop", "train_simclr_on_crops"]

Box = tuple[float, float, float, float]


def _open(data: Path | bytes | np.ndarray) -> Image.Image:
    if isinstance(data, np.ndarray):  # a decoded video frame
        return Image.fromarray(data)
    return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)


def load_crop(data: Path | bytes | np.ndarray, bbox: Box, padding: float, min_side: int, where: str) -> Image.Image:
    """The padded crop of ``bbox`` (``[x, y, w, h]`` in the image's pixels) as RGB, of an image file or a
    decoded video frame. A JPEG is decoded at the smallest DCT scale that keeps the crop's shorter side >=
    ``min_side`` (or at full size)."""
    with _open(data) as im:
        size = im.size
        box = crop_box(bbox, size, padding)
        if box is None:
            raise CropError(
                f"{where}: box {list(bbox)} lies outside the {size[0]}x{size[1]} image; fix the prediction file"
            )
        side = min(box[2] - box[0], box[3] - box[1])
        if im.format in ("JPEG", "MPO") and side > min_side:
            scale = side / min_side  # draft picks the largest reduction keeping the size >= requested
            im.draft("RGB", (math.ceil(size[0] / scale), math.ceil(size[1] / scale)))
        rgb = im.convert("RGB")
    sx, sy = rgb.width / size[0], rgb.height / size[1]
    left, top = math.floor(box[0] * sx), math.floor(box[1] * sy)
    right, bottom = max(math.ceil(box[2] * sx), left + 1), max(math.ceil(box[3] * sy), top + 1)
    return rgb.crop((left, top, min(right, rgb.width), min(bottom, rgb.height)))


class CropTwoViewDataset(TwoViewDataset):
    """Item i = two augmented views (uint8, 2 x 3 x S x S) of object i's padded crop. ``refs[i]`` is the
    object's image, ``boxes[i]`` its box, ``indices[i]`` its index in the image's predictions (errors
    name both). A box outside its image fails the training (:class:`.crops.CropError`); an unreadable
    image gives grey views (logged)."""

    fatal = (CropError,)

    def __init__(
        self,
        refs: list[SampleRef],
        boxes: list[Box],
        indices: list[int],
        cfg: TrainConfig,
        source: InputSource | Path,
        padding: float = CROP_PADDING,
    ) -> None:
        super().__init__(list(refs), cfg, source)
        self.boxes = boxes
        self.indices = indices
        self.padding = padding

    def load_item(self, index: int) -> Image.Image:
        src, ref = self.source, self.refs[index]
        data: Path | bytes | np.ndarray
        if isinstance(ref, FrameRef):  # a video frame, decoded at the video's own resolution
            data = frame_pixels(src, ref.key, ref.frame)
        else:
            data = src.path(ref.key) if isinstance(src, LocalSource) else src.read_bytes(ref.key)
        where = f"{self.refs[index].name}: prediction {self.indices[index]}"
        return load_crop(data, self.boxes[index], self.padding, self.source_size, where)


def crop_dataset(
    source: InputSource | Path,
    filenames: list[str],
    objects: list[ObjectRef],
    cfg: TrainConfig,
    padding: float = CROP_PADDING,
) -> CropTwoViewDataset:
    """The training items of ``objects`` (``filenames``: the images their ``image`` indices point to)."""
    src = as_source(source)
    image_refs: dict[int, SampleRef] = {}
    refs: list[SampleRef] = []
    boxes: list[Box] = []
    for obj in objects:
        name = filenames[obj.image]
        if obj.image not in image_refs:
            image_refs[obj.image] = resolve_sample(src, name)
        if obj.prediction.bbox is None:
            raise CropError(f"{name}: prediction {obj.index} has no box to crop")
        refs.append(image_refs[obj.image])
        boxes.append(obj.prediction.bbox)
    return CropTwoViewDataset(refs, boxes, [o.index for o in objects], cfg, src, padding)


def train_simclr_on_crops(
    source: InputSource | Path,
    filenames: list[str],
    objects: list[ObjectRef],
    cfg: TrainConfig,
    device: str = "auto",
    checkpoint_path: Path | None = None,
    *,
    task: str,
    padding: float = CROP_PADDING,
    init: SimCLRBackbone | None = None,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
) -> nn.Module:
    """Train SimCLR on the crops of ``objects`` (of prediction task ``task``); the embedding model, in
    eval mode, and the checkpoint as :func:`.embed.simclr.train_two_views` writes it."""
    dataset = crop_dataset(source, filenames, objects, cfg, padding)
    what = f"crops of task {task!r} (in {len({o.image for o in objects})} images)"
    try:
        return train_two_views(dataset, cfg, device, checkpoint_path, init=init, progress=progress, log=log, what=what)
    except CropError as exc:  # raised in a loader process, torch re-raises it with that process's traceback
        raise CropError(_own_message(exc)) from None


def _own_message(exc: Exception) -> str:
    """The error's own message, without the traceback of the DataLoader worker process it came from."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]  # "lightly_worker.crops.CropError: <message>"
    return last.split(f"{type(exc).__name__}: ", 1)[-1]
