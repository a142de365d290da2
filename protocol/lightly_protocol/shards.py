"""Extension (not in Lightly's protocol; docs/server.md, Shards): one scheduled run embedded by many workers in shards.

The worker that locks a scheduled run (its coordinator) lists the input once and publishes it to the
server (``PUT /v1/ext/scheduled/{scheduledId}/shards``, body: the gzip of the UTF-8 listing, one
relative filename per line, ``encode_listing``). The server splits it into contiguous shards of
``shardSize`` files; idle workers take shards through ``GET /v1/ext/workers/{workerId}/work``, heartbeat
them, and upload each shard's binary result. Shards belong to the scheduled run, so a retried run
resumes. docs/server.md "Shards (extension, /v1/ext/)" has the rules; paths are in ``paths.py``.

Besides the wire models this module holds the pure parts both sides must agree on: the listing's
encoding and name rules, its digest and how a listing is split. No I/O.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from typing import Annotated, Literal

from pydantic import Field, Strict, StrictBool, StrictStr

from .enums import ShardState
from .models import (
    MAX_MESSAGE_LENGTH,
    Oid,
    Request,
    ScheduledRunData,
    Ts,
    Wire,
    WorkerConfigV4,
    filename_problem,
)

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "ListingError",
    "Parallelism",
    "ShardAssignment",
    "ShardData",
    "ShardPlanData",
    "ShardState",
    "ShardSummary",
    "ShardUpdateRequest",
    "WorkData",
    "decode_listing",
    "encode_listing",
    "listing_digest",
    "listing_name_problem",
    "shard_ranges",
]

#: files per shard when the config names no ``docker.shard_size``
DEFAULT_SHARD_SIZE = 2000

Count = Annotated[int, Strict(), Field(ge=0)]
Digest = Annotated[str, Strict(), Field(pattern=r"^[a-f0-9]{64}$")]
#: how many workers may hold a run's shards at once; "auto": every idle matching worker (no cap)
Parallelism = Annotated[int, Strict(), Field(ge=1)] | Literal["auto"]


class ShardData(Wire):
    """One shard: the files ``[start, stop)`` of the published listing, ``index`` in input order."""

    id: Oid
    scheduled_id: Oid
    #: the coordinator's current run (updated when a retried run republishes)
    run_id: Oid | None = None
    index: Count
    start: Count
    stop: Count
    state: ShardState
    #: the lease holder (LEASED), else the last holder or None
    worker_id: Oid | None = None
    #: how many times a worker took it (each reopen after a lost lease counts)
    attempts: Count
    #: files done, as the holder last reported
    processed: Count
    #: size of the stored result (DONE), else None
    result_bytes: Count | None = None
    #: why it is FAILED or CANCELED
    message: StrictStr | None = None
    updated_at: Ts


class ShardPlanData(Wire):
    """A scheduled run's published plan. ``total``: files in the listing; ``len(shards)``: the shard count."""

    input_digest: Digest
    total: Count
    shard_size: Annotated[int, Strict(), Field(ge=1)]
    parallelism: Parallelism
    #: True when this publish made a new plan (an older plan and its results were replaced)
    created: StrictBool
    shards: list[ShardData]


class ShardAssignment(Wire):
    """A shard handed to a worker, with what it needs to run it."""

    shard: ShardData
    dataset_id: Oid
    #: the scheduled run's worker config (wire form)
    config: WorkerConfigV4
    input_digest: Digest


class WorkData(Wire):
    """Answer of the extended long poll: a shard first, else the scheduled runs (as ``.../schedule``)."""

    shard: ShardAssignment | None = None
    scheduled: list[ScheduledRunData]


class ShardUpdateRequest(Request):
    """``PUT /v1/ext/shards/{shardId}``: LEASED = heartbeat (renews the lease), OPEN = hand it back."""

    worker_id: Oid
    state: Literal["LEASED", "OPEN"]
    processed: Count | None = None


class ShardSummary(Wire):
    """Shard counts of one unfinished scheduled run (the operator's queue depth). ``total``: all its shards."""

    scheduled_id: Oid
    dataset_id: Oid
    runs_on: list[StrictStr]
    open: Count
    leased: Count
    done: Count
    failed: Count
    total: Count
    #: the plan's cap on LEASED shards ("auto": none), so a queue of OPEN shards is not over-counted
    parallelism: Parallelism
    #: the worker holding each LEASED shard (one entry per shard): who is busy with shards
    holders: list[Oid]

    def demand(self) -> int:
        """How many more workers this run's OPEN shards could use now (within the parallelism cap)."""
        if self.parallelism == "auto":
            return self.open
        return max(0, min(self.open, self.parallelism - self.leased))


# ---------------------------------------------------------------- the listing


class ListingError(ValueError):
    """A listing that cannot be published; the message says which line and what to fix."""


#: the longest message a shard keeps (FAILED / CANCELED reasons)
MAX_SHARD_MESSAGE_LENGTH = MAX_MESSAGE_LENGTH


def listing_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be one line of a listing (a relative filename below the input), or None."""
    problem = filename_problem(name)
    if problem:
        return problem
    if name.startswith("/"):
        return "must be a relative path (no leading '/')"
    if any(part == ".." for part in name.replace("\\", "/").split("/")):
        return "must not contain a '..' path part"
    return None


def encode_listing(names: list[str]) -> bytes:
    """The publish body: gzip of the UTF-8 names joined by newlines (deterministic bytes)."""
    return gzip.compress("\n".join(names).encode("utf-8"), mtime=0)


def listing_digest(names: list[str]) -> str:
    """sha256 (hex) of the uncompressed listing, the names joined by newlines."""
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


def decode_listing(body: bytes, max_bytes: int) -> list[str]:
    """The names of a publish body; at most ``max_bytes`` uncompressed. One trailing newline is allowed.

    Raises ``ListingError`` naming the first bad line (1-based).
    """
    inflater = zlib.decompressobj(wbits=31)  # gzip framing only
    try:
        raw = inflater.decompress(body, max_bytes + 1)
        if len(raw) <= max_bytes and not inflater.eof:
            raw += inflater.flush(max_bytes + 1 - len(raw))
    except zlib.error as exc:
        raise ListingError(f"the body must be the gzip of the listing (application/octet-stream): {exc}") from exc
    if len(raw) > max_bytes:
        raise ListingError(f"the uncompressed listing must be at most {max_bytes} bytes; publish fewer files")
    if not inflater.eof or inflater.unused_data:
        raise ListingError("the body must be exactly one complete gzip stream")
    if not raw:
        return []
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    names = []
    for i, line in enumerate(raw.split(b"\n"), start=1):
        try:
            name = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ListingError(f"line {i}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        problem = listing_name_problem(name)
        if problem:
            raise ListingError(f"line {i}: filename {name[:200]!r} {problem}")
        names.append(name)
    return names


def shard_ranges(n_files: int, shard_size: int) -> list[tuple[int, int]]:
    """The contiguous ``[start, stop)`` ranges of ``ceil(n_files / shard_size)`` shards, in input order."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    return [(start, min(start + shard_size, n_files)) for start in range(0, n_files, shard_size)]
