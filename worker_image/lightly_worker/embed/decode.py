"""The fast data path: DCT-domain downscaled JPEG decode, video frames via PyAV, chunked DataLoader items.

Workers return uint8 tensors (N x 3 x S x S); the conversion to float happens on the device, which cuts
the inter-process traffic 4x compared with float tensors.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..sources import InputSource, LocalSource, as_source
from ._common import LOG
from .files import FrameRef, ImageRef, SampleRef, video_pts

RESAMPLE = Image.Resampling.BILINEAR


@contextmanager
def av_open(video: str | IO[bytes]) -> Iterator[Any]:
    """``av.open`` of a path or a seekable binary file, closed on exit."""
    import av

    with av.open(video, "r") as container:
        yield container


def video_size(source: InputSource, key: str) -> tuple[int, int]:
    """(width, height) of a video's frames as ``load_video_frames(..., None)`` decodes them (its header only)."""
    with source.open_seekable(key) as video, av_open(video) as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.width), int(ctx.height)


def open_rgb(path: Path | bytes, min_size: int, *, draft: bool = True) -> Image.Image:
    """Open an image (a file, or its bytes) as RGB, letting libjpeg-turbo downscale in the DCT domain to
    >= min_size per side."""
    im: Image.Image = Image.open(io.BytesIO(path) if isinstance(path, bytes) else path)  # an ImageFile
    if draft and im.format in ("JPEG", "MPO"):
        # Picks the largest 1/1, 1/2, 1/4, 1/8 scale that keeps both sides >= min_size: decode cost drops
        # ~5-8x for >= 1080p sources and the later resize has far fewer pixels to filter.
        im.draft("RGB", (min_size, min_size))
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def load_image(path: Path | bytes, size: int, *, draft: bool = True) -> np.ndarray:
    """size x size x 3 uint8 (squashed like Lightly's ``Resize((s, s))``, bilinear with antialiasing)."""
    with open_rgb(path, size, draft=draft) as im:
        im.load()
        out = im.resize((size, size), RESAMPLE) if im.size != (size, size) else im
        return np.asarray(out, dtype=np.uint8)


def load_video_frames(
    source: InputSource | Path, key: str | None, frames: Sequence[int], size: int | None
) -> dict[int, np.ndarray]:
    """Decode the requested frame indices (presentation order) of one video (``key`` of ``source``; or a
    local file: ``load_video_frames(path, None, ...)``), scaled by swscale to size x size (``size`` None: at
    the video's own resolution, e.g. for crops).

    Seeks to the keyframe before the first wanted frame, then decodes forward (a remote video is read by
    ranges). Frames that could not be decoded are missing from the result.
    """
    import av

    if key is None:
        path = Path(source)  # type: ignore[arg-type]
        source, key = LocalSource(path.parent), path.name
    src = as_source(source)
    pts = video_pts(src, key)
    wanted = {pts[f]: f for f in frames if 0 <= f < len(pts)}
    out: dict[int, np.ndarray] = {}
    if not wanted:
        return out
    last = max(wanted)
    with src.open_seekable(key) as video, av_open(video) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        first = min(wanted)
        if first != pts[0]:
            container.seek(first, stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                f = wanted.get(frame.pts)
                if f is not None and f not in out:
                    out[f] = (
                        frame.to_ndarray(format="rgb24")
                        if size is None
                        else frame.to_ndarray(width=size, height=size, format="rgb24")
                    )
                if frame.pts >= last or len(out) == len(wanted):
                    break
        except av.error.FFmpegError as exc:
            LOG.warning("video %s: decode error after %d of %d frames: %s", key, len(out), len(wanted), exc)
    return out


@dataclass(frozen=True)
class Chunk:
    """One DataLoader item: positions in the output plus what to decode (images, or frames of one video)."""

    positions: tuple[int, ...]
    refs: tuple[SampleRef, ...]


def make_chunks(refs: Sequence[SampleRef], chunk_size: int) -> list[Chunk]:
    """Group samples into items of <= chunk_size; frames of one video stay together (one seek per chunk)."""
    chunks: list[Chunk] = []
    images: list[int] = []
    by_video: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        if isinstance(ref, FrameRef):
            by_video.setdefault(ref.key, []).append(i)
        else:
            images.append(i)
    for s in range(0, len(images), chunk_size):
        pos = images[s : s + chunk_size]
        chunks.append(Chunk(tuple(pos), tuple(refs[p] for p in pos)))
    for positions in by_video.values():
        positions.sort(key=lambda p: refs[p].frame)  # type: ignore[union-attr]
        for s in range(0, len(positions), chunk_size):
            pos = positions[s : s + chunk_size]
            chunks.append(Chunk(tuple(pos), tuple(refs[p] for p in pos)))
    return chunks


class ChunkDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Item i = (positions int64 [n], uint8 images [n, 3, S, S], ok bool [n]). Never raises for a bad file.

    A remote source's images of one item are fetched concurrently (``InputSource.read_many``); with the
    DataLoader's prefetch of items, many reads are in flight and the store's latency is hidden."""

    def __init__(
        self,
        chunks: list[Chunk],
        size: int,
        source: InputSource | Path,
        *,
        draft: bool = True,
        log: logging.Logger = LOG,
    ) -> None:
        self.chunks = chunks
        self.source = as_source(source)
        self.size = size
        self.draft = draft
        self.log = log

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        chunk = self.chunks[index]
        n, s = len(chunk.refs), self.size
        batch = np.zeros((n, s, s, 3), dtype=np.uint8)
        ok = np.ones(n, dtype=bool)
        first = chunk.refs[0] if chunk.refs else None
        if isinstance(first, FrameRef):
            try:
                frames = load_video_frames(self.source, first.key, [r.frame for r in chunk.refs], s)  # type: ignore[union-attr]
            except Exception as exc:
                self.log.warning("cannot decode video %s: %s", first.key, exc)
                frames = {}
            for j, ref in enumerate(chunk.refs):
                arr = frames.get(ref.frame)  # type: ignore[union-attr]
                if arr is None:
                    ok[j] = False
                else:
                    batch[j] = arr
        else:
            local = self.source if isinstance(self.source, LocalSource) else None
            keys = [ref.key for ref in chunk.refs]
            # a local file is opened by Pillow itself (as always); a remote one is fetched (concurrently) first
            reads = iter([]) if local is not None else self.source.read_many(keys)
            for j, ref in enumerate(chunk.refs):
                assert isinstance(ref, ImageRef)
                try:
                    if local is not None:
                        batch[j] = load_image(local.path(ref.key), s, draft=self.draft)
                        continue
                    data = next(reads)
                    if isinstance(data, OSError):
                        raise data
                    batch[j] = load_image(data, s, draft=self.draft)
                except Exception as exc:
                    self.log.warning("cannot decode %s: %s", ref.name, exc)
                    ok[j] = False
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)  # N x 3 x S x S view, made contiguous on the device
        return torch.tensor(chunk.positions, dtype=torch.int64), images, torch.from_numpy(ok)
