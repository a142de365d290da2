"""Paged listings of a bucket datasource through opaque cursors, with bounded memory.

A page is at most ``page_size`` names: the store is asked for exactly as many keys as the page still
lacks, one provider page after another, until the page is full, the listing ends or the time budget is
spent (then the page is answered short, with ``hasMore``). Nothing but the page is ever held, so a
listing of a million keys costs the server one page at a time. The cursor carries what continues the
listing: the provider's continuation token, the window, the sub-prefix, or the byte offset in a
relevant-filenames file (read by ranges, never whole).

Names are relative to the datasource root. Skipped, never answered: folder markers (``dir/``), names
with ``..`` parts, a leading ``/`` or control characters (logged, percent-escaped, with the reason),
Lightly's own ``.lightly/`` folder in INPUT listings unless a prefix asks for it, and objects modified
outside the ``from``/``to`` window.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import asdict, dataclass, replace

from .base import Bucket
from .errors import StoreError
from .keys import LIGHTLY_FOLDER, relative_key_problem, shown

log = logging.getLogger("lightly_server")

_CURSOR_PREFIX = "c1."
#: a relevant-filenames file is read this many bytes at a time (a longer line is refused)
RELEVANT_CHUNK = 1 << 20


@dataclass(frozen=True)
class ListState:
    """Where a listing stands: what a cursor carries."""

    #: the sub-prefix relative to the datasource root ('' or ending in '/'), e.g. '.lightly/metadata/'
    prefix: str = ""
    #: the provider's continuation token (None: from the start)
    token: str | None = None
    #: the modification-time window, unix seconds, both ends included
    start: int | None = None
    end: int | None = None
    #: list ``.lightly/`` too (a LIGHTLY listing, or a prefix below it)
    include_lightly: bool = False
    #: a relevant-filenames file (relative name) and the byte offset of its next line
    relevant: str | None = None
    offset: int = 0
    #: a relevant-filenames listing of metadata or predictions: each name ``a/b.jpg`` becomes
    #: ``{map_prefix}a/b.json`` (its file in the LIGHTLY datasource)
    map_prefix: str | None = None
    #: the datasource purpose the listing reads (INPUT or LIGHTLY)
    purpose: str = "INPUT"


def encode_cursor(state: ListState) -> str:
    raw = json.dumps(asdict(state), separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListState:
    """The state a cursor carries; ValueError for one this server did not make."""
    if not cursor.startswith(_CURSOR_PREFIX) or len(cursor) > 16384:
        raise ValueError("cursor: not a cursor of this server's listings; pass back the one the last page answered")
    text = cursor[len(_CURSOR_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        state = ListState(**data)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("cursor: malformed; pass back the one the last page answered") from None
    if state.prefix and relative_key_problem(state.prefix.rstrip("/")):
        raise ValueError("cursor: malformed prefix")
    return state


@dataclass
class PageResult:
    names: list[str]
    #: None: the listing is complete
    next_state: ListState | None
    skipped: int = 0


def list_page(bucket: Bucket, state: ListState, page_size: int, budget_s: float) -> PageResult:
    """One page of the listing ``state`` describes."""
    if state.relevant is not None:
        return _relevant_page(bucket, state, page_size)
    deadline = time.monotonic() + budget_s
    names: list[str] = []
    skipped = 0
    token = state.token
    full_prefix = bucket.location.key(state.prefix)
    while True:
        page = bucket.list_page(full_prefix, token, page_size - len(names))
        for obj in page.objects:
            if obj.key.endswith("/"):
                continue
            rel = bucket.location.relative(obj.key)
            problem = relative_key_problem(rel)
            if problem:
                skipped += 1
                log.warning("datasource %s: key %s skipped: it %s", bucket.location, shown(rel), problem)
                continue
            if not state.include_lightly and rel.startswith(LIGHTLY_FOLDER):
                continue
            if (state.start is not None and obj.modified < state.start) or (
                state.end is not None and obj.modified > state.end + 1
            ):
                continue
            names.append(rel)
        token = page.token
        if token is None or len(names) >= page_size or time.monotonic() >= deadline:
            break
    return PageResult(names, None if token is None else replace(state, token=token), skipped)


def _relevant_page(bucket: Bucket, state: ListState, page_size: int) -> PageResult:
    name = state.relevant or ""
    key = bucket.location.key(name)
    try:
        chunk = bucket.read(key, state.offset, RELEVANT_CHUNK)
    except StoreError as exc:
        if exc.status == 416:  # at the end already (the file shrank, or was empty)
            return PageResult([], None)
        raise
    at_end = len(chunk) < RELEVANT_CHUNK
    names: list[str] = []
    skipped = 0
    consumed = 0
    while len(names) < page_size:
        nl = chunk.find(b"\n", consumed)
        if nl < 0:
            if not at_end:
                if consumed == 0:
                    raise ValueError(
                        f"relevant filenames file {name}: a line at byte {state.offset} is longer than "
                        f"{RELEVANT_CHUNK} bytes; it must hold one filename a line"
                    )
                break
            line, consumed = chunk[consumed:], len(chunk)
        else:
            line, consumed = chunk[consumed:nl], nl + 1
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        if text.strip():
            problem = relative_key_problem(text) or ("is not UTF-8" if "\ufffd" in text else None)
            if problem:
                skipped += 1
                log.warning(
                    "datasource %s: %s: filename %s skipped: it %s", bucket.location, name, shown(text), problem
                )
            else:
                names.append(text)
        if consumed >= len(chunk):
            break
    done = at_end and consumed >= len(chunk)
    return PageResult(names, None if done else replace(state, offset=state.offset + consumed), skipped)
