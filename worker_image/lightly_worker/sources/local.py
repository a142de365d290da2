"""The LOCAL input: files under a folder of the worker's mounts (the worker's behaviour since the start).

``walk_folder`` lists them (symlinks followed only while they stay inside the folder, loops and broken
links skipped with a warning); reads are plain file reads, the size cap applies to a file read whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import IO

from .base import CONTROL_CHARS, ObjectMissing, ObjectTooLarge, SourceAccessError, too_large

__all__ = ["DEFAULT_MAX_OBJECT_BYTES", "LocalSource", "walk_folder"]

LOG = logging.getLogger("lightly_worker.embed")

#: files larger than this are not read whole (an image this big is refused as unreadable)
DEFAULT_MAX_OBJECT_BYTES = 512 * 1024**2


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
    if CONTROL_CHARS.search(entry.name):
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


def walk_folder(input_root: Path, log: logging.Logger = LOG) -> Iterable[str]:
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


class LocalSource:
    """The files under ``root`` (an INPUT datasource on the worker's input mount)."""

    io_concurrency = 0  # local reads need no extra threads to hide latency

    def __init__(
        self, root: Path, *, max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES, log: logging.Logger = LOG
    ) -> None:
        self.root = Path(root)
        self.label = str(self.root)
        self.max_object_bytes = max_object_bytes
        self.log = log

    def __repr__(self) -> str:
        return f"LocalSource({self.root})"

    def check(self) -> None:
        if not self.root.is_dir():
            raise SourceAccessError(
                f"the input directory {self.root} does not exist; mount your images at the worker's "
                "input_mount and set the INPUT datasource's relative path accordingly"
            )

    def walk(self, log: logging.Logger | None = None, modified: tuple[int, int] | None = None) -> Iterable[str]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"input directory {self.root} does not exist")
        keys = walk_folder(self.root, log or self.log)
        return keys if modified is None else self._modified(keys, *modified)

    def _modified(self, keys: Iterable[str], since: int, until: int) -> Iterator[str]:
        for key in keys:
            try:
                mtime = (self.root / key).stat().st_mtime
            except OSError:
                continue  # gone since it was listed: not a file of this run
            if since + 1 <= mtime <= until + 1:  # whole seconds, as the server's from/to window
                yield key

    def path(self, key: str) -> Path:
        return self.root / key

    def is_file(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read_bytes(self, key: str) -> bytes:
        path = self.root / key
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ObjectMissing(f"{key}: file not found") from None
        if size > self.max_object_bytes:
            raise ObjectTooLarge(too_large(key, size, self.max_object_bytes))
        return path.read_bytes()

    def read_many(self, keys: list[str]) -> Iterator[bytes | OSError]:
        for key in keys:
            try:
                yield self.read_bytes(key)
            except OSError as exc:
                yield exc

    def open_seekable(self, key: str) -> AbstractContextManager[str | IO[bytes]]:
        return nullcontext(str(self.root / key))

    def fingerprint(self, key: str) -> tuple[str, int, int]:
        st = (self.root / key).stat()
        return str(self.root / key), st.st_mtime_ns, st.st_size
