"""What the embed and check code needs of an input: its file keys, their bytes, a seekable view of a video.

``InputSource`` is the one interface; ``LocalSource`` (files under a mount, the worker's behaviour since
the start) and ``RemoteSource`` (a bucket datasource listed through the API and read through presigned
URLs) implement it. A key is a file's path relative to the datasource's root, '/'-separated.

Errors a reader sees: ``ObjectMissing`` (the file is gone: deleted after the listing), ``ObjectTooLarge``
(over the worker's size cap), ``StorageError`` (the store refused or failed after the retries). Each is an
``OSError``, so the code that records unreadable files as corrupt treats them as it treats a local read
error; ``SourceAccessError`` is a datasource that cannot be listed or read at all (the run fails at once).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import IO, Protocol, runtime_checkable

__all__ = [
    "CONTROL_CHARS",
    "FRAME_NAME",
    "InputSource",
    "ObjectMissing",
    "ObjectTooLarge",
    "SourceAccessError",
    "StorageError",
    "key_problem",
    "too_large",
]

#: Lightly's name of a video frame sample: ``{video_stem}-{frame:0Nd}-{ext}.png``
FRAME_NAME = re.compile(r"^(?P<stem>.+)-(?P<frame>\d+)-(?P<ext>[A-Za-z0-9]+)\.png$")

# what the server refuses in filenames (its selection and tag rules): C0/C1 controls, U+2028/U+2029
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class StorageError(OSError):
    """A read or write of the store failed (after the retries); the message names the file, never a URL's query."""


class ObjectMissing(StorageError):
    """The file does not exist (any more): deleted between the listing and the read."""


class ObjectTooLarge(StorageError):
    """The file is larger than the worker's cap for a file read whole."""


class SourceAccessError(Exception):
    """The datasource cannot be listed or read at all; the message is the server's or the store's."""


def key_problem(key: str) -> str | None:
    """Why a listed key is not a safe relative name (None: it is): ``..`` parts, a leading '/', control
    characters, a Windows drive or backslashes that would climb. Defence in depth: the server skips them too."""
    if not key:
        return "empty name"
    if CONTROL_CHARS.search(key):
        return "control characters (e.g. a line break) in the name"
    if key.startswith("/") or key.startswith("\\") or re.match(r"^[A-Za-z]:", key):
        return "an absolute path"
    parts = key.replace("\\", "/").split("/")
    if ".." in parts:
        return "a '..' part"
    if "." in parts or "" in parts[:-1]:
        return "an empty or '.' part"
    return None


def too_large(key: str, size: int | None, cap: int) -> str:
    """The message of a file over the size cap (names the file, the cap and the setting)."""
    shown = f"{size} bytes" if size is not None else "more bytes"
    return (
        f"{key} is {shown}, over the worker's cap of {cap} bytes for a file read whole "
        "(storage.max_object_bytes); such a file is never loaded into memory"
    )


@runtime_checkable
class InputSource(Protocol):
    """The files of an INPUT datasource."""

    #: how a message names the input (a folder, or ``s3 datasource s3://bucket/prefix/``)
    label: str
    #: how many reads this source wants in flight at once (a remote store hides its latency with more)
    io_concurrency: int

    def check(self) -> None:
        """Raise ``SourceAccessError`` (a message saying what to fix) when the input cannot be listed or read."""
        ...

    def walk(self, log: logging.Logger | None = None, modified: tuple[int, int] | None = None) -> Iterable[str]:
        """Every file's key, hidden files and folders (``.lightly/``) skipped; unsafe names skipped with a warning.

        ``modified`` = ``(since, until)``: only the files last modified in the seconds after ``since`` up to and
        including the second ``until`` (unix seconds; ``[since + 1, until + 1]``, the server's from/to window),
        in the same one listing: a datapool run's new files (Lightly's ``processedUntilTimestamp``)."""
        ...

    def is_file(self, key: str) -> bool: ...

    def read_bytes(self, key: str) -> bytes:
        """The whole file (capped: ``ObjectTooLarge`` over the cap; ``ObjectMissing`` when gone)."""
        ...

    def read_many(self, keys: list[str]) -> Iterator[bytes | OSError]:
        """``read_bytes`` of each key, in order, fetched concurrently where that hides latency."""
        ...

    def open_seekable(self, key: str) -> AbstractContextManager[str | IO[bytes]]:
        """A path or seekable binary file of the key for PyAV (a video: read by ranges, never whole)."""
        ...

    def fingerprint(self, key: str) -> tuple[str, int, int]:
        """(identity, version, size) of the file: changes when the file changes (a cache key)."""
        ...
