"""The binary result of one shard: what a shard worker uploads and the coordinator reads (an extension,
split runs: docs/worker.md, "Parallel runs"; docs/server.md, Shards).

Opaque to the server (it only caps the size). Layout, all little-endian:

====================  ==========================================================================
``magic``             8 bytes ``b"LWSHARD\\0"``
``version``           uint16, ``VERSION``
``header_length``     uint32, bytes of the header that follows
``header``            UTF-8 JSON object (keys below)
``embeddings``        float32 ``[count, dim]``, row-major (``dim`` may be 0: custom embeddings, the
                      coordinator reads the CSV itself); rows of corrupt and unreadable files are zero
``digests``           ``count`` x 20 bytes: BLAKE2b-160 of each file's bytes (the exact-duplicate
                      check runs over all shards at assembly); zero bytes where ``has_digest`` is 0
``has_digest``        ``count`` bytes, 1 where the file has a digest (a readable image), else 0
====================  ==========================================================================

Header keys: ``index``, ``start``, ``stop``, ``count`` (= stop - start), ``dim``, ``dtype``
(``"float32"``), ``names_sha256`` (sha256 of the shard's filenames joined by newlines),
``corrupt`` (``{position: reason}``, position within the shard), ``unreadable`` (positions of files
that passed the check but could not be decoded while embedding), ``model`` (the embedder's name, or
``"custom"``), ``input_size`` (pixels, 0 for custom).

``decode`` validates everything and raises ``ShardFileError`` saying what is wrong; ``ShardResult.check``
verifies a decoded result against the shard the coordinator asked for.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"LWSHARD\0"
VERSION = 1
DIGEST_SIZE = 20
#: the header is small (the corrupt map is its only variable part); refuse absurd sizes before parsing
MAX_HEADER_BYTES = 64 * 1024**2
_PREFIX = struct.Struct("<8sHI")
_HEADER_KEYS = {
    "index",
    "start",
    "stop",
    "count",
    "dim",
    "dtype",
    "names_sha256",
    "corrupt",
    "unreadable",
    "model",
    "input_size",
}


class ShardFileError(ValueError):
    """A shard result that cannot be used; the message says what is wrong."""


def names_digest(names: list[str]) -> str:
    """sha256 (hex) of the filenames joined by newlines: ties a result to the exact file list."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


@dataclass
class ShardResult:
    """One shard's check and embedding results, rows in the shard's file order."""

    index: int
    start: int
    stop: int
    names_sha256: str
    embeddings: np.ndarray  # float32 [count, dim]
    digests: list[bytes | None]  # BLAKE2b-160 of each file, None when it has none
    corrupt: dict[int, str] = field(default_factory=dict)  # position -> reason
    unreadable: list[int] = field(default_factory=list)  # positions: passed the check, failed to decode
    model: str = ""
    input_size: int = 0

    @property
    def count(self) -> int:
        return self.stop - self.start

    def check(self, index: int, start: int, stop: int, names: list[str]) -> None:
        """Raise ``ShardFileError`` unless this is the result of shard ``index`` = files ``[start, stop)``
        with exactly these ``names``."""
        want = (index, start, stop)
        got = (self.index, self.start, self.stop)
        if got != want:
            raise ShardFileError(f"the result is for shard {got} (index, start, stop), expected {want}")
        if len(names) != stop - start:
            raise ShardFileError(f"{len(names)} names given for a shard of {stop - start} files")
        if self.names_sha256 != names_digest(names):
            raise ShardFileError(f"shard {index}: the result was computed for another file list (names_sha256 differs)")


def encode(result: ShardResult) -> bytes:
    """The bytes of ``result`` (see the module docstring)."""
    count = result.count
    emb = np.ascontiguousarray(result.embeddings, dtype="<f4")
    if emb.ndim != 2 or emb.shape[0] != count:
        raise ShardFileError(f"embeddings must be [count={count}, dim], got shape {list(emb.shape)}")
    if len(result.digests) != count:
        raise ShardFileError(f"{len(result.digests)} digests for {count} files")
    _check_positions(result.corrupt.keys(), count, "corrupt")
    _check_positions(result.unreadable, count, "unreadable")
    header = {
        "index": result.index,
        "start": result.start,
        "stop": result.stop,
        "count": count,
        "dim": int(emb.shape[1]),
        "dtype": "float32",
        "names_sha256": result.names_sha256,
        "corrupt": {str(k): v for k, v in sorted(result.corrupt.items())},
        "unreadable": sorted(result.unreadable),
        "model": result.model,
        "input_size": result.input_size,
    }
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    digests = bytearray()
    flags = bytearray()
    for d in result.digests:
        if d is not None and len(d) != DIGEST_SIZE:
            raise ShardFileError(f"a digest must be {DIGEST_SIZE} bytes, got {len(d)}")
        digests += d if d is not None else bytes(DIGEST_SIZE)
        flags.append(1 if d is not None else 0)
    return b"".join([_PREFIX.pack(MAGIC, VERSION, len(head)), head, emb.tobytes(), bytes(digests), bytes(flags)])


def _read_header(data: bytes) -> tuple[dict[str, Any], int]:
    """The JSON header after the fixed prefix (magic, version, its length), with its keys checked,
    and its length."""
    if len(data) < _PREFIX.size:
        raise ShardFileError(f"too short for a shard result ({len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ShardFileError("not a shard result (bad magic bytes)")
    if version != VERSION:
        raise ShardFileError(f"shard result version {version} is not supported (this worker reads {VERSION})")
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(data):
        raise ShardFileError(f"header length {head_len} does not fit the {len(data)} bytes")
    try:
        header = json.loads(data[_PREFIX.size : _PREFIX.size + head_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardFileError(f"the header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        got = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ShardFileError(f"the header must have exactly the keys {sorted(_HEADER_KEYS)}, got {got}")
    return header, head_len


def decode(data: bytes) -> ShardResult:
    """Parse and validate the bytes of a shard result; ``ShardFileError`` says what is wrong."""
    header, head_len = _read_header(data)
    for key in ("index", "start", "stop", "count", "dim", "input_size"):
        if not isinstance(header[key], int) or isinstance(header[key], bool) or header[key] < 0:
            raise ShardFileError(f"header {key} must be an integer >= 0, got {header[key]!r}")
    index, start, stop, count, dim = (header[k] for k in ("index", "start", "stop", "count", "dim"))
    if stop < start or count != stop - start:
        raise ShardFileError(f"header count {count} does not match start {start} and stop {stop}")
    if header["dtype"] != "float32":
        raise ShardFileError(f"header dtype must be 'float32', got {header['dtype']!r}")
    sha = header["names_sha256"]
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ShardFileError("header names_sha256 must be 64 lowercase hex digits")
    if not isinstance(header["model"], str):
        raise ShardFileError("header model must be a string")
    raw_corrupt = header["corrupt"]
    if not isinstance(raw_corrupt, dict) or not all(isinstance(v, str) for v in raw_corrupt.values()):
        raise ShardFileError("header corrupt must map positions to reasons (strings)")
    try:
        corrupt = {int(k): v for k, v in raw_corrupt.items() if str(int(k)) == k}
    except ValueError:
        raise ShardFileError("header corrupt: positions must be decimal integers") from None
    if len(corrupt) != len(raw_corrupt):
        raise ShardFileError("header corrupt: positions must be decimal integers without signs or zeros")
    unreadable = header["unreadable"]
    if not isinstance(unreadable, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in unreadable):
        raise ShardFileError("header unreadable must be a list of positions")
    _check_positions(corrupt.keys(), count, "corrupt")
    _check_positions(unreadable, count, "unreadable")
    body = _PREFIX.size + head_len
    emb_bytes = count * dim * 4
    expected = body + emb_bytes + count * DIGEST_SIZE + count
    if len(data) != expected:
        raise ShardFileError(f"{len(data)} bytes, expected {expected} for {count} files of dimension {dim}")
    emb = np.frombuffer(data, dtype="<f4", count=count * dim, offset=body).reshape(count, dim).astype(np.float32)
    if not np.isfinite(emb).all():
        raise ShardFileError(f"shard {index}: the embeddings contain NaN or infinite values")
    at = body + emb_bytes
    flags = data[at + count * DIGEST_SIZE : expected]
    if any(f not in (0, 1) for f in flags):
        raise ShardFileError("the has_digest flags must be 0 or 1")
    digests: list[bytes | None] = [
        bytes(data[at + i * DIGEST_SIZE : at + (i + 1) * DIGEST_SIZE]) if flags[i] else None for i in range(count)
    ]
    model, size = header["model"], header["input_size"]
    return ShardResult(index, start, stop, sha, emb, digests, corrupt, sorted(unreadable), model, size)


def _check_positions(positions: object, count: int, what: str) -> None:
    seen = list(positions)  # type: ignore[call-overload]
    bad = [p for p in seen if not 0 <= p < count]
    if bad:
        raise ShardFileError(f"{what} position {bad[0]} is outside the shard's {count} files")
    if len(set(seen)) != len(seen):
        raise ShardFileError(f"{what} positions repeat")
