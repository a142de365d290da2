"""Embeddings of object crops, straight from memory: each image is decoded once for all its objects, every
crop is cut, padded as :mod:`.crops` says, resized to the model's input and embedded in batches; no crop
is written to disk here (:func:`.crops.write_crops` writes the selected ones afterwards).

The decode runs in DataLoader worker processes (``EmbedConfig.num_workers``) and the model on CUDA with
mixed precision when present (``EmbedConfig.device``), exactly like :func:`.embed.embed_samples`, whose
model loop this reuses. Memory is bounded: an item holds the crops of a group of images (about one model
batch), and at most ``prefetch_factor`` items per worker are in flight; what grows with the number of
objects is the N x D embedding matrix itself.

With ``EmbedConfig.draft`` a JPEG is decoded downscaled in the DCT domain (1/2, 1/4, 1/8) only as far as
every crop of that image keeps at least ``input_size`` pixels per side (or its full resolution where it
is smaller), so large images with large objects decode several times faster and no crop loses detail.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .crops import CROP_PADDING, CropError, crop_box, frame_pixels
from .embed import EmbedConfig, FrameRef, resolve_sample
from .embed._common import LOG, Progress, autocast_dtype, resolve_device, resolve_workers
from .embed.decode import RESAMPLE
from .embed.embedder import loader_worker_init, prepare_model, run_model, threads_for
from .selection import ObjectRef
from .sources import InputSource, LocalSource, as_source

__all__ = ["CropGroup", "crop_groups", "embed_crops"]

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class CropGroup:
    """One DataLoader item: images (source keys; a video frame: its video's key and the frame index) and per
    image its objects' output rows and boxes."""

    keys: tuple[str, ...]
    objects: tuple[tuple[tuple[int, Box], ...], ...]
    frames: tuple[int | None, ...] = ()  # per key: the frame of a video, None for an image; () all images

    def frame(self, i: int) -> int | None:
        return self.frames[i] if self.frames else None


def crop_groups(source: InputSource, filenames: list[str], objects: list[ObjectRef], per_item: int) -> list[CropGroup]:
    """Group the objects by image, and the images into items of about ``per_item`` objects."""
    by_image: dict[int, list[tuple[int, Box]]] = {}
    for row, obj in enumerate(objects):
        if obj.prediction.bbox is None:
            raise CropError(f"{filenames[obj.image]}: prediction {obj.index} has no box to crop")
        by_image.setdefault(obj.image, []).append((row, obj.prediction.bbox))
    groups: list[CropGroup] = []
    keys: list[str] = []
    frames: list[int | None] = []
    objs: list[tuple[tuple[int, Box], ...]] = []
    count = 0
    for image, items in by_image.items():
        ref = resolve_sample(source, filenames[image])
        keys.append(ref.key)
        frames.append(ref.frame if isinstance(ref, FrameRef) else None)
        objs.append(tuple(items))
        count += len(items)
        if count >= per_item:
            groups.append(CropGroup(tuple(keys), tuple(objs), tuple(frames)))
            keys, frames, objs, count = [], [], [], 0
    if keys:
        groups.append(CropGroup(tuple(keys), tuple(objs), tuple(frames)))
    return groups


def _draft_size(size: tuple[int, int], boxes: list[tuple[int, int, int, int]], input_size: int) -> tuple[int, int]:
    """The smallest decode size at which every crop keeps >= input_size pixels per side (or its own size)."""
    scale = 0.0
    for left, top, right, bottom in boxes:
        scale = max(scale, input_size / max(1, right - left), input_size / max(1, bottom - top))
    scale = min(1.0, scale)
    return math.ceil(size[0] * scale), math.ceil(size[1] * scale)


def _open(data: bytes | Path | np.ndarray) -> Image.Image:
    if isinstance(data, np.ndarray):  # a decoded video frame
        return Image.fromarray(data)
    return Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)


def cut_crops(
    data: bytes | Path | np.ndarray, boxes: list[Box], input_size: int, padding: float, draft: bool
) -> np.ndarray:
    """n x S x S x 3 uint8: the padded crops of one image (its file, or a decoded video frame), each resized to
    S x S (bilinear, like the image embedding). Raises CropError when a box lies outside the image."""
    out = np.zeros((len(boxes), input_size, input_size, 3), dtype=np.uint8)
    with _open(data) as im:
        full = im.size
        pixels = []
        for bbox in boxes:
            box = crop_box(bbox, full, padding)
            if box is None:
                raise CropError(f"box {list(bbox)} lies outside the {full[0]}x{full[1]} image")
            pixels.append(box)
        if draft and im.format in ("JPEG", "MPO"):
            im.draft("RGB", _draft_size(full, pixels, input_size))
        rgb = im.convert("RGB")
    sx, sy = rgb.size[0] / full[0], rgb.size[1] / full[1]
    for k, (left, top, right, bottom) in enumerate(pixels):  # the same region in the (drafted) pixels
        region = (left * sx, top * sy, right * sx, bottom * sy)
        out[k] = np.asarray(rgb.resize((input_size, input_size), RESAMPLE, box=region), dtype=np.uint8)
    return out


class CropDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Item i = (rows int64 [n], uint8 crops [n, 3, S, S], ok bool [n]) of group i. Never raises: the crops
    of an image that cannot be read, decoded or cropped are marked not ok (see :func:`explain_failure`)."""

    def __init__(self, groups: list[CropGroup], source: InputSource, size: int, padding: float, draft: bool) -> None:
        self.groups, self.source, self.size, self.padding, self.draft = groups, source, size, padding, draft

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        group = self.groups[index]
        rows = [row for objs in group.objects for row, _ in objs]
        batch = np.zeros((len(rows), self.size, self.size, 3), dtype=np.uint8)
        ok = np.ones(len(rows), dtype=bool)
        local = self.source if isinstance(self.source, LocalSource) else None
        image_keys = [k for i, k in enumerate(group.keys) if group.frame(i) is None]
        reads = iter([]) if local is not None else self.source.read_many(image_keys)
        at = 0
        for i, (key, objs) in enumerate(zip(group.keys, group.objects, strict=True)):
            n = len(objs)
            frame = group.frame(i)
            try:
                data: bytes | Path | np.ndarray | OSError
                if frame is not None:
                    data = frame_pixels(self.source, key, frame)
                else:
                    data = local.path(key) if local is not None else next(reads)
                if isinstance(data, OSError):
                    raise data
                batch[at : at + n] = cut_crops(data, [b for _, b in objs], self.size, self.padding, self.draft)
            except Exception as exc:
                LOG.warning("cannot crop %s: %s", key, exc)
                ok[at : at + n] = False
            at += n
        crops = torch.from_numpy(batch).permute(0, 3, 1, 2)
        return torch.tensor(rows, dtype=torch.int64), crops, torch.from_numpy(ok)


def explain_failure(source: InputSource, filenames: list[str], objects: list[ObjectRef], padding: float) -> CropError:
    """Why the crops of ``objects`` (of one image) failed: the error naming the image and the first
    prediction that cannot be cropped (found again in this process; only called for one failed image)."""
    name = filenames[objects[0].image]
    try:
        ref = resolve_sample(source, name)
        data = frame_pixels(source, ref.key, ref.frame) if isinstance(ref, FrameRef) else source.read_bytes(ref.key)
    except Exception as exc:
        return CropError(f"{name}: cannot read the image: {exc}")
    for obj in objects:
        assert obj.prediction.bbox is not None
        try:
            cut_crops(data, [obj.prediction.bbox], 1, padding, False)
        except CropError as exc:
            return CropError(f"{name}: prediction {obj.index}: {exc}; fix the prediction file")
        except Exception as exc:
            return CropError(f"{name}: cannot decode the image: {exc}")
    return CropError(f"{name}: its crops failed while embedding (see the log)")


def embed_crops(
    input_root: Path | InputSource,
    filenames: list[str],
    objects: list[ObjectRef],
    cfg: EmbedConfig,
    model: nn.Module | None = None,
    *,
    padding: float = CROP_PADDING,
    progress: Progress | None = None,
) -> np.ndarray:
    """N x D float32 embeddings of the objects' crops, in the order of ``objects`` (unit rows when
    ``cfg.normalize``). Raises CropError naming the image and prediction when a crop cannot be made."""
    source = as_source(input_root)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    net = prepare_model(cfg, model, device)
    groups = crop_groups(source, filenames, objects, cfg.batch_size)
    workers = min(resolve_workers(cfg.num_workers), len(groups))
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = DataLoader(
        CropDataset(groups, source, cfg.input_size, padding, cfg.draft),
        batch_size=None,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=loader_worker_init if workers > 0 else None,
    )
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads_for(cfg, device))
    t0 = time.perf_counter()
    try:
        out, bad = run_model(loader, net, device, autocast_dtype(device, cfg.precision), len(objects), progress)
    finally:
        torch.set_num_threads(old_threads)
    if bad.any():
        image = objects[int(np.flatnonzero(bad)[0])].image
        raise explain_failure(source, filenames, [o for o in objects if o.image == image], padding)
    if out is None:
        with torch.inference_mode():
            d = net(torch.zeros(1, 3, cfg.input_size, cfg.input_size, device=device)).reshape(1, -1).shape[1]
        out = np.zeros((0, d), dtype=np.float32)
    if cfg.normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    dt = time.perf_counter() - t0
    images = sum(len(g.keys) for g in groups)
    LOG.info(
        "embedded %d crops of %d images in %.1f s on %s (%d decode workers)", len(objects), images, dt, device, workers
    )
    return out
