"""Listing samples (images and video frames), and the corruptness / exact-duplicate check."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

from PIL import Image, ImageFile

from ..sources import InputSource, LocalSource, ObjectMissing, as_source
from ..sources.base import FRAME_NAME
from ._common import LOG, Progress, report, resolve_workers

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".mov", ".avi", ".mpg", ".mpeg", ".m4v", ".webm", ".hevc", ".mkv"}

# What Pillow must identify for each extension ("wrong content for the extension" is corrupt).
_FORMATS = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".webp": {"WEBP"},
    ".bmp": {"BMP", "DIB"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}

T = TypeVar("T")
R = TypeVar("R")

# `{video_stem}-{frame:0Nd}-{ext}.png`, N = number of digits of the video's frame count (Lightly's naming).
_FRAME_RE = FRAME_NAME


def av_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ImageRef:
    """A sample that is an image file (``key``: the file's key in its source)."""

    name: str
    key: str


@dataclass(frozen=True)
class FrameRef:
    """A sample that is one frame (presentation order, 0-based) of a video file (``key``: the video's)."""

    name: str
    key: str
    frame: int


SampleRef = ImageRef | FrameRef


def frame_name(video_rel: str, frame: int, n_frames: int) -> str:
    """Lightly's frame sample name: ``my_video.mp4``, frame 153 of 1000 -> ``my_video-0153-mp4.png``."""
    stem, _, ext = video_rel.rpartition(".")
    return f"{stem}-{frame:0{len(str(n_frames))}d}-{ext}.png"


@dataclass(frozen=True)
class VideoTiming:
    """A video's sorted frame presentation timestamps and its stream's time base (seconds per pts unit)."""

    pts: tuple[int, ...]
    time_base: Fraction | None

    def seconds(self, frame: int) -> float | None:
        """Frame ``frame``'s presentation time in seconds (``pts * time_base``); None where unknown."""
        if self.time_base is None or not 0 <= frame < len(self.pts):
            return None
        return float(self.pts[frame] * self.time_base)


def _read_video_timing(video: str | IO[bytes]) -> VideoTiming:
    """Sorted presentation timestamps of the first video stream (demux only, no decode), and its time base."""
    import av

    with av.open(video, "r") as container:
        if not container.streams.video:
            return VideoTiming((), None)
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
        time_base = Fraction(stream.time_base) if stream.time_base is not None else None
    return VideoTiming(tuple(sorted(pts)), time_base)


_PTS_CACHE: OrderedDict[tuple[str, int, int], VideoTiming] = OrderedDict()
_PTS_LOCK = threading.Lock()


def video_timing(source: InputSource | Path, key: str | None = None) -> VideoTiming:
    """A video's frame timestamps and time base (cached per file identity, version and size);
    ``video_timing(path)`` reads a local file."""
    if key is None:  # a path of its own
        path = Path(source)  # type: ignore[arg-type]
        source, key = LocalSource(path.parent), path.name
    src = as_source(source)
    fp = src.fingerprint(key)
    with _PTS_LOCK:
        cached = _PTS_CACHE.get(fp)
        if cached is not None:
            _PTS_CACHE.move_to_end(fp)
            return cached
    with src.open_seekable(key) as video:
        timing = _read_video_timing(video)
    with _PTS_LOCK:
        _PTS_CACHE[fp] = timing
        while len(_PTS_CACHE) > 4096:
            _PTS_CACHE.popitem(last=False)
    return timing


def video_pts(source: InputSource | Path, key: str | None = None) -> tuple[int, ...]:
    """Sorted frame timestamps of a video (``video_timing``'s); ``video_pts(path)`` reads a local file."""
    return video_timing(source, key).pts


def list_samples(
    input_root: Path | InputSource,
    relevant_filenames: list[str] | None = None,
    *,
    missing: list[str] | None = None,
    unreadable: dict[str, str] | None = None,
    progress: Progress | None = None,
    modified: tuple[int, int] | None = None,
    log: logging.Logger = LOG,
) -> list[str]:
    """Relative POSIX paths of the samples under ``input_root`` (a folder or an ``InputSource``), sorted.

    Images: files with an extension in IMAGE_EXTENSIONS (case-insensitive), recursively; hidden files and
    directories (``.lightly`` etc.) are skipped. Videos expand to one sample per frame named like Lightly
    does (``dir/clip-007-mp4.png``) when PyAV is importable; otherwise they are skipped with one log line.

    ``relevant_filenames`` restricts the result to those names (image paths or frame names; leading ``./``
    or ``/`` ignored). Names that do not exist are appended to ``missing`` (if given) and logged, never raised.
    A video that cannot be opened has no frames; it goes into ``unreadable`` (if given) with the reason, so
    the run reports it among the corrupt files; so does a video that opens but holds no frame.
    """
    source = as_source(input_root)
    if isinstance(source, LocalSource) and not source.root.is_dir():
        raise FileNotFoundError(f"input directory {source.root} does not exist")
    walk = source.walk(log, modified)  # modified: only files modified in that window (InputSource.walk)
    images: list[str] = []
    videos: list[str] = []
    for rel in walk:
        ext = os.path.splitext(rel)[1].lower()
        if ext in IMAGE_EXTENSIONS:
            images.append(rel)
        elif ext in VIDEO_EXTENSIONS:
            videos.append(rel)

    samples = list(images)
    if videos:
        if not av_available():
            log.warning("skipping %d video file(s): PyAV (`av`) is not installed", len(videos))
        else:
            for i, rel in enumerate(sorted(videos)):
                try:
                    n = len(video_pts(source, rel))
                except Exception as exc:  # an unreadable video has no frames to list
                    log.warning("cannot read video %s: %s", rel, exc)
                    if unreadable is not None:
                        unreadable[rel] = f"unreadable video: {str(exc).strip() or type(exc).__name__}"[:500]
                    n = -1
                if n == 0 and unreadable is not None:
                    unreadable[rel] = "unreadable video: no frames"
                n = max(n, 0)
                samples.extend(frame_name(rel, f, n) for f in range(n))
                report(progress, i + 1, len(videos))
    samples.sort()

    if relevant_filenames is None:
        return samples
    return _only_relevant(samples, relevant_filenames, missing, log)


def _only_relevant(
    samples: list[str], relevant_filenames: list[str], missing: list[str] | None, log: logging.Logger
) -> list[str]:
    """The names of ``relevant_filenames`` that are among ``samples``, sorted; the others are logged and
    appended to ``missing``."""
    available = set(samples)
    wanted: list[str] = []
    seen: set[str] = set()
    absent: list[str] = []
    for raw in relevant_filenames:
        name = raw.strip().lstrip("/")
        while name.startswith("./"):
            name = name[2:]
        if not name or name in seen:
            continue
        seen.add(name)
        (wanted if name in available else absent).append(name)
    if absent:
        shown = ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else "")
        log.warning("%d relevant filename(s) not found under the input: %s", len(absent), shown)
        if missing is not None:
            missing.extend(absent)
    return sorted(wanted)


def resolve_sample(input_root: Path | InputSource, name: str) -> SampleRef:
    """Map a sample name to an image file or a (video, frame index). Raises FileNotFoundError."""
    source = as_source(input_root)
    if source.is_file(name):
        return ImageRef(name, name)
    m = _FRAME_RE.match(name)
    if m:
        video = f"{m['stem']}.{m['ext']}"
        if source.is_file(video):
            return FrameRef(name, video, int(m["frame"]))
    raise FileNotFoundError(f"sample {name!r} not found under {source.label}")


# ---------------------------------------------------------------------------------------------------------------
# corruptness and exact duplicates


@dataclass
class CheckResult:
    ok: list[str] = field(default_factory=list)
    corrupt: dict[str, str] = field(default_factory=dict)  # name -> reason
    duplicates: dict[str, str] = field(default_factory=dict)  # duplicate name -> kept original
    digests: dict[str, str] = field(default_factory=dict)  # name -> content hash (readable images only)


def split_duplicates(names: list[str], digests: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(kept, {duplicate: kept original}) over ``names`` in their order: a name whose content hash was
    seen earlier is a duplicate of the first one; names without a hash (video frames) are kept."""
    first: dict[str, str] = {}
    kept: list[str] = []
    duplicates: dict[str, str] = {}
    for name in names:
        digest = digests.get(name)
        if digest is not None and digest in first:
            duplicates[name] = first[digest]
            continue
        if digest is not None:
            first[digest] = name
        kept.append(name)
    return kept, duplicates


def _check_image(source: InputSource, key: str) -> tuple[str | None, str | None]:
    """(reason if corrupt, content hash if ok). Never raises."""
    try:
        data = source.read_bytes(key)
    except ObjectMissing:
        return "file not found", None
    except OSError as exc:
        return f"cannot read file: {exc}", None
    return _check_image_bytes(key, data)


def _check_image_bytes(key: str, data: bytes) -> tuple[str | None, str | None]:
    if not data:
        return "empty file (0 bytes)", None
    ext = os.path.splitext(key)[1].lower()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format or "?"
                if fmt not in _FORMATS.get(ext, {fmt}):
                    return f"content is {fmt}, not what the extension {ext} says", None
                if fmt in ("JPEG", "MPO"):
                    # DCT-domain 1/8 decode: the whole entropy-coded stream is still decoded (so truncation
                    # and bad Huffman data are found) but the IDCT and colour conversion are ~8x cheaper.
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
                if im.width < 1 or im.height < 1:
                    return "image has no pixels", None
    except Exception as exc:  # any decoder error means corrupt
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, None
    return None, hashlib.blake2b(data, digest_size=20).hexdigest()


def _size_of(video: str | IO[bytes]) -> int:
    if isinstance(video, str):
        return os.path.getsize(video)
    size = video.seek(0, io.SEEK_END)
    video.seek(0)
    return size


def _check_video(source: InputSource, key: str, corruption_threshold: float | None) -> str | None:
    """Decode every frame; corrupt when unreadable or the share of undecodable frames exceeds the threshold."""
    try:
        with source.open_seekable(key) as video:
            if _size_of(video) == 0:
                return "empty file (0 bytes)"
            return _decode_video(video, corruption_threshold)
    except ObjectMissing:
        return "file not found"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _decode_video(video: str | IO[bytes], corruption_threshold: float | None) -> str | None:
    try:
        import av

        bad = total = 0
        with av.open(video, "r") as container:
            if not container.streams.video:
                return "no video stream"
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                total += 1
                try:
                    packet.decode()
                except av.error.FFmpegError:
                    bad += 1
        if total == 0:
            return "video has no frames"
        score = bad / total
        threshold = 0.0 if corruption_threshold is None else corruption_threshold
        if score > threshold:
            return f"{bad} of {total} frames cannot be decoded (corruption score {score:.3f} > {threshold})"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _windowed_map(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: list[T], window: int = 1024) -> Iterator[R]:
    """``pool.map`` in order, with at most ``window`` tasks in flight (no million pending futures)."""
    for start in range(0, len(items), window):
        yield from pool.map(fn, items[start : start + window])


def _resolve_or_none(source: InputSource, name: str) -> SampleRef | None:
    try:
        return resolve_sample(source, name)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _Video:
    """A whole video to check (its frames are judged together)."""

    key: str


def _check_item(
    item: SampleRef | _Video | None, source: InputSource, corruption_threshold: float | None
) -> tuple[str | None, str | None]:
    """(why it is corrupt or None, content hash or None) of one sample or a whole video."""
    if item is None:
        return "file not found", None
    if isinstance(item, _Video):
        return _check_video(source, item.key, corruption_threshold), None
    if isinstance(item, FrameRef):
        return None, None  # judged per video
    return _check_image(source, item.key)


def _run_checks(
    source: InputSource,
    ordered: list[str],
    refs: list[SampleRef | None],
    result: CheckResult,
    workers: int,
    corruption_threshold: float | None,
    progress: Progress | None,
) -> list[str]:
    """Check every video once, then every sample in ``ordered``; records the corrupt ones and the
    hashes in ``result`` and returns the names that passed, in order."""
    videos = sorted({r.key for r in refs if isinstance(r, FrameRef)})
    total = len(ordered)
    done = 0
    task = partial(_check_item, source=source, corruption_threshold=corruption_threshold)
    items: list[SampleRef | _Video | None] = [*(_Video(v) for v in videos), *refs]
    passed: list[str] = []
    video_reason: dict[str, str | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = _windowed_map(pool, task, items) if workers > 0 else map(task, items)
        for i, (reason, digest) in enumerate(results):
            if i < len(videos):
                video_reason[videos[i]] = reason
                continue
            j = i - len(videos)
            name, ref = ordered[j], refs[j]
            if isinstance(ref, FrameRef):
                reason = video_reason[ref.key]
            if reason is not None:
                result.corrupt[name] = reason
            else:
                if digest is not None:
                    result.digests[name] = digest
                passed.append(name)
            done += 1
            if done % 256 == 0 or done == total:
                report(progress, done, total)
    return passed


def check_samples(
    input_root: Path | InputSource,
    names: list[str],
    num_workers: int = 0,
    corruption_threshold: float | None = None,
    *,
    remove_duplicates: bool = True,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
) -> CheckResult:
    """Full-decode corruptness check and exact-duplicate detection; never raises for a bad file.

    Images: corrupt when empty, unreadable, of another format than the extension says, or not fully
    decodable (truncated, bad data; Pillow's LOAD_TRUNCATED_IMAGES is forced off). Exact duplicates share
    a content hash (BLAKE2b over the file bytes); the first name in sorted order is kept.
    Video frames: a video is decoded once; all of its frames are corrupt when it cannot be opened or when
    the share of undecodable frames exceeds ``corruption_threshold`` (Lightly's default 0.1; None = 0).
    Frames are not duplicate-checked. ``num_workers``: threads (-1 = all vCPUs; decoding releases the GIL).
    """
    source = as_source(input_root)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    result = CheckResult()
    ordered = sorted(dict.fromkeys(names))
    refs = [_resolve_or_none(source, name) for name in ordered]
    workers = max(resolve_workers(num_workers), source.io_concurrency)  # a remote source: reads in flight
    passed = _run_checks(source, ordered, refs, result, workers, corruption_threshold, progress)
    result.ok, result.duplicates = split_duplicates(passed, result.digests) if remove_duplicates else (passed, {})
    if result.corrupt:
        log.info("corruptness check: %d corrupt sample(s)", len(result.corrupt))
    if result.duplicates:
        log.info("exact duplicates: %d sample(s)", len(result.duplicates))
    return result
