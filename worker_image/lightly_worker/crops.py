"""Object crops for object-level selection: cut each predicted box out of its image, padded like Lightly's
``lightly-crop``, and write it as an image file.

Padding (``CROP_PADDING`` = 0.1, the default of ``lightly-crop``'s ``crop_padding``): the box keeps its
centre and its width and height grow by the factor ``1 + padding``; the result is widened to whole
pixels (floor of the left/top edge, ceiling of the right/bottom edge), clipped to the image, and is at
least one pixel wide and high. A box entirely outside its image is an error naming the image and the
prediction. Each image is decoded once for all its objects. Formats (``docker.output_image_format``):
``png`` (the default) and ``jpg``/``jpeg``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .embed import FrameRef, resolve_sample
from .embed.decode import load_video_frames
from .selection import ObjectRef
from .sources import InputSource, as_source

__all__ = ["CROP_PADDING", "OUTPUT_FORMATS", "CropError", "crop_box", "output_format", "write_crops"]

CROP_PADDING = 0.1
#: ``output_image_format`` value -> (file extension, Pillow format)
OUTPUT_FORMATS = {"png": ("png", "PNG"), "jpg": ("jpg", "JPEG"), "jpeg": ("jpg", "JPEG")}


class CropError(ValueError):
    """A crop cannot be made; the message names the image and the prediction."""


def output_format(value: str | None) -> str:
    """The crop files' extension for ``docker.output_image_format`` (None: png)."""
    key = (value or "png").lower().lstrip(".")
    if key not in OUTPUT_FORMATS:
        raise CropError(f"docker.output_image_format {value!r} is not supported; use one of {sorted(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[key][0]


def crop_box(
    bbox: tuple[float, float, float, float], size: tuple[int, int], padding: float = CROP_PADDING
) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) pixels of a padded ``[x, y, w, h]`` box in an image of ``size`` (width,
    height); None when the box lies outside the image."""
    x, y, w, h = bbox
    width, height = size
    cx, cy = x + w / 2, y + h / 2
    pw, ph = w * (1 + padding), h * (1 + padding)
    left, top = max(0, math.floor(cx - pw / 2)), max(0, math.floor(cy - ph / 2))
    right, bottom = min(width, math.ceil(cx + pw / 2)), min(height, math.ceil(cy + ph / 2))
    if left >= width or top >= height or right <= 0 or bottom <= 0:
        return None
    return left, top, max(right, left + 1), max(bottom, top + 1)


def frame_pixels(source: InputSource, key: str, frame: int) -> np.ndarray:
    """H x W x 3 uint8: one video frame at the video's own resolution (OSError when it cannot be decoded)."""
    decoded = load_video_frames(source, key, [frame], None)
    if frame not in decoded:
        raise OSError(f"frame {frame} of {key} could not be decoded")
    return decoded[frame]


def write_crops(
    input_root: Path | InputSource,
    filenames: list[str],
    objects: list[ObjectRef],
    out_dir: Path,
    fmt: str = "png",
    padding: float = CROP_PADDING,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write the crop of every object to ``out_dir / object.name`` (``filenames``: the images the objects'
    ``image`` indices point to)."""
    source = as_source(input_root)
    pil_format = OUTPUT_FORMATS[fmt][1]
    by_image: dict[int, list[ObjectRef]] = {}
    for obj in objects:
        by_image.setdefault(obj.image, []).append(obj)
    done = 0
    for image, objs in by_image.items():
        name = filenames[image]
        ref = resolve_sample(source, name)
        if isinstance(ref, FrameRef):  # a video frame, decoded at the video's own resolution
            try:
                rgb = Image.fromarray(frame_pixels(source, ref.key, ref.frame))
            except OSError as exc:
                raise CropError(f"{name}: {exc}") from None
        else:
            with Image.open(io.BytesIO(source.read_bytes(ref.key))) as im:
                rgb = im.convert("RGB")
        for obj in objs:
            assert obj.prediction.bbox is not None
            box = crop_box(obj.prediction.bbox, rgb.size, padding)
            if box is None:
                raise CropError(
                    f"{name}: prediction {obj.index} box {list(obj.prediction.bbox)} lies outside the "
                    f"{rgb.size[0]}x{rgb.size[1]} image; fix the prediction file"
                )
            path = out_dir / obj.name
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb.crop(box).save(path, format=pil_format)
        done += len(objs)
        if progress is not None:
            progress(done, len(objects))
