"""Listing samples (images and video frames), and the corruptness / exact-duplicate check."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageFile

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
_FRAME_RE = re.compile(r"^(?P<stem>.+)-(?P<frame>\d+)-(?P<ext>[A-Za-z0-9]+)\.png$")


def av_available() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class ImageRef:
    """A sample that is an image file."""

    name: str
    path: Path


@dataclass(frozen=True)
class FrameRef:
    """A sample that is one frame (presentation order, 0-based) of a video file."""

    name: str
    path: Path
    frame: int


SampleRef = ImageRef | FrameRef


def frame_name(video_rel: str, frame: int, n_frames: int) -> str:
    """Lightly's frame sample name: ``my_video.mp4``, frame 153 of 1000 -> ``my_video-0153-mp4.png``."""
    stem, _, ext = video_rel.rpartition(".")
    return f"{stem}-{frame:0{len(str(n_frames))}d}-{ext}.png"


# what the server refuses in filenames (its selection and tag rules): C0/C1 controls, U+2028/U+2029
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _walk_entry(
    entry: os.DirEntry[str],
    rel_dir: str,
    inside: Callable[[str], bool],
    visited: set[str],
    subdirs: list[tuple[str, str]],
    linked: list[tuple[str, str]],
    log: logging.Logger,
) -> Iterator[str]:
    """One entry of a listed directory for ``_walk``: yields it when it is a file to list, queues a
    directory (``subdirs``) or a linked directory (``linked``), warns about what it skips."""
    if entry.name.startswith("."):
        return
    rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
    if _CONTROL.search(entry.name):
        log.warning("skipping %r: file names with a line break are not supported (nor control characters)", rel)
        return
    try:
        is_link = entry.is_symlink()
        is_dir = entry.is_dir(follow_symlinks=True)
    except OSError:
        is_link, is_dir = True, False
    if is_link:
        real = os.path.realpath(entry.path)
        if not os.path.exists(real):
            log.warning("skipping symlink %s: its target does not exist", rel)
        elif not inside(real):
            log.warning("skipping symlink %s: it points outside the input folder", rel)
        elif is_dir:
            linked.append((rel, real))
        else:
            yield rel
    elif is_dir:
        real = os.path.realpath(entry.path)
        if real not in visited:
            visited.add(real)
            subdirs.append((rel, entry.path))
    else:
        yield rel


def _walk(input_root: Path, log: logging.Logger = LOG) -> Iterable[str]:
    """Relative POSIX paths of all files under input_root, hidden files and directories skipped.

    Symlinks are followed only while their real target stays inside the input folder (so the
    ``..data`` links of Kubernetes ConfigMap and Secret volumes work); a link that leads outside,
    a directory that was already listed (loops such as ``a -> .``) and a broken link are skipped
    with one warning each. Names containing a line break or another control character are skipped
    with a warning: they cannot be written to the one-name-per-line outputs and tag exports.
    """
    real_root = os.path.realpath(input_root)
    prefix = real_root.rstrip(os.sep) + os.sep

    def inside(real: str) -> bool:
        return real == real_root or real.startswith(prefix)

    visited = {real_root}
    # (relative dir, absolute dir): real directories first (depth first, sorted), linked ones only
    # after those, so a directory reachable both ways is listed under its own name
    pending: list[tuple[str, str]] = [("", real_root)]
    linked: list[tuple[str, str]] = []
    while pending or linked:
        if pending:
            rel_dir, abs_dir = pending.pop()
        else:
            rel_dir, abs_dir = linked.pop(0)
            if abs_dir in visited:
                log.warning(
                    "skipping symlink %s: it points to a folder that is already listed (a loop, or another name of it)",
                    rel_dir,
                )
                continue
            visited.add(abs_dir)
        try:
            entries = sorted(os.scandir(abs_dir), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot list %s: %s", rel_dir or ".", exc.strerror or exc)
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            yield from _walk_entry(entry, rel_dir, inside, visited, subdirs, linked, log)
        pending.extend(reversed(subdirs))


@lru_cache(maxsize=4096)
def _video_pts_cached(path: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    return tuple(_read_video_pts(Path(path)))


def _read_video_pts(path: Path) -> list[int]:
    """Sorted presentation timestamps of the first video stream (demux only, no decode)."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0]
    return sorted(pts)


def video_pts(path: Path) -> tuple[int, ...]:
    """Sorted frame timestamps of a video (cached per path, mtime and size)."""
    st = path.stat()
    return _video_pts_cached(str(path), st.st_mtime_ns, st.st_size)


def list_samples(
    input_root: Path,
    relevant_filenames: list[str] | None = None,
    *,
    missing: list[str] | None = None,
    progress: Progress | None = None,
    log: logging.Logger = LOG,
) -> list[str]:
    """Relative POSIX paths of the samples under ``input_root``, sorted.

    Images: files with an extension in IMAGE_EXTENSIONS (case-insensitive), recursively; hidden files and
    directories (``.lightly`` etc.) are skipped. Videos expand to one sample per frame named like Lightly
    does (``dir/clip-007-mp4.png``) when PyAV is importable; otherwise they are skipped with one log line.

    ``relevant_filenames`` restricts the result to those names (image paths or frame names; leading ``./``
    or ``/`` ignored). Names that do not exist are appended to ``missing`` (if given) and logged, never raised.
    """
    input_root = Path(input_root)
    if not input_root.is_dir():
        raise FileNotFoundError(f"input directory {input_root} does not exist")
    images: list[str] = []
    videos: list[str] = []
    for rel in _walk(input_root, log):
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
                    n = len(video_pts(input_root / rel))
                except Exception as exc:  # an unreadable video has no frames to list
                    log.warning("cannot read video %s: %s", rel, exc)
                    n = 0
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


def resolve_sample(input_root: Path, name: str) -> SampleRef:
    """Map a sample name to an image file or a (video, frame index). Raises FileNotFoundError."""
    path = input_root / name
    if path.is_file():
        return ImageRef(name, path)
    m = _FRAME_RE.match(name)
    if m:
        video = input_root / f"{m['stem']}.{m['ext']}"
        if video.is_file():
            return FrameRef(name, video, int(m["frame"]))
    raise FileNotFoundError(f"sample {name!r} not found under {input_root}")


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


def _check_image(path: Path) -> tuple[str | None, str | None]:
    """(reason if corrupt, content hash if ok). Never raises."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read file: {exc}", None
    if not data:
        return "empty file (0 bytes)", None
    ext = path.suffix.lower()
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


def _check_video(path: Path, corruption_threshold: float | None) -> str | None:
    """Decode every frame; corrupt when unreadable or the share of undecodable frames exceeds the threshold."""
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        import av

        bad = total = 0
        with av.open(str(path)) as container:
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


def _resolve_or_none(input_root: Path, name: str) -> SampleRef | None:
    try:
        return resolve_sample(input_root, name)
    except FileNotFoundError:
        return None


def _check_item(item: SampleRef | Path | None, corruption_threshold: float | None) -> tuple[str | None, str | None]:
    """(why it is corrupt or None, content hash or None) of one sample; a Path is a whole video."""
    if item is None:
        return "file not found", None
    if isinstance(item, Path):
        return _check_video(item, corruption_threshold), None
    if isinstance(item, FrameRef):
        return None, None  # judged per video
    return _check_image(item.path)


def _run_checks(
    ordered: list[str],
    refs: list[SampleRef | None],
    result: CheckResult,
    workers: int,
    corruption_threshold: float | None,
    progress: Progress | None,
) -> list[str]:
    """Check every video once, then every sample in ``ordered``; records the corrupt ones and the
    hashes in ``result`` and returns the names that passed, in order."""
    videos = sorted({r.path for r in refs if isinstance(r, FrameRef)})
    total = len(ordered)
    done = 0
    task = partial(_check_item, corruption_threshold=corruption_threshold)
    items: list[SampleRef | Path | None] = [*videos, *refs]
    passed: list[str] = []
    video_reason: dict[Path, str | None] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = _windowed_map(pool, task, items) if workers > 0 else map(task, items)
        for i, (reason, digest) in enumerate(results):
            if i < len(videos):
                video_reason[videos[i]] = reason
                continue
            j = i - len(videos)
            name, ref = ordered[j], refs[j]
            if isinstance(ref, FrameRef):
                reason = video_reason[ref.path]
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
    input_root: Path,
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
    input_root = Path(input_root)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    result = CheckResult()
    ordered = sorted(dict.fromkeys(names))
    refs = [_resolve_or_none(input_root, name) for name in ordered]
    passed = _run_checks(ordered, refs, result, resolve_workers(num_workers), corruption_threshold, progress)
    result.ok, result.duplicates = split_duplicates(passed, result.digests) if remove_duplicates else (passed, {})
    if result.corrupt:
        log.info("corruptness check: %d corrupt sample(s)", len(result.corrupt))
    if result.duplicates:
        log.info("exact duplicates: %d sample(s)", len(result.duplicates))
    return result
