"""Tokens: random, shown once, stored only as SHA-256 hashes; listed and revoked by a fingerprint.

A token's **fingerprint** is the first ``FINGERPRINT_CHARS`` hex characters of its stored hash: it names
the token in ``list-tokens`` and ``revoke-token`` and reveals nothing about the token itself.

Each server process caches token -> user (``TokenCache``) for at most ``TOKEN_TTL_S`` seconds, so a
revoked token is refused by every process and replica at most that long after ``revoke-token``
committed, whatever the backend (the CLI is another process: the TTL, not a notification, is the bound).
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select

from .db import Database
from .ids import new_id, now_ms
from .schema import DbRow, tokens, users

log = logging.getLogger(__name__)

#: how long a process serves token -> user from memory: the bound on revocation (docs/server.md)
TOKEN_TTL_S = 5.0
#: how long "no such token" is remembered
UNKNOWN_TTL_S = 1.0
#: known-good tokens a process keeps (least recently used first out); unknown ones have their own, smaller LRU
MAX_VALID = 10_000
MAX_UNKNOWN = 1_000
#: ``last_used_at`` is written at most this often per token and process
LAST_USED_RESOLUTION_MS = 60_000

FINGERPRINT_CHARS = 12
FINGERPRINT = re.compile(r"^[0-9a-f]{8,64}$")
MAX_LABEL = 200


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def fingerprint(token_hash: str) -> str:
    return token_hash[:FINGERPRINT_CHARS]


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a token's label, or None."""
    if not 1 <= len(label) <= MAX_LABEL or not label.isprintable() or label != label.strip():
        return f"--label must be 1 to {MAX_LABEL} printable characters without leading or trailing spaces"
    return None


def create_token(db: Database, user_name: str, label: str | None = None) -> str:
    """Create (or reuse) the user ``user_name`` and return a new token for it."""
    token = secrets.token_urlsafe(32)
    with db.write() as conn:
        row = conn.execute(select(users.c.id).where(users.c.name == user_name)).first()
        user_id = row.id if row else new_id()
        if not row:
            conn.execute(users.insert().values(id=user_id, name=user_name, created_at=now_ms()))
        conn.execute(
            tokens.insert().values(token_hash=hash_token(token), user_id=user_id, created_at=now_ms(), label=label)
        )
    return token


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the token, nor its full hash."""

    fingerprint: str
    label: str | None
    user: str
    created_at: int  # ms
    last_used_at: int | None  # ms, to the minute


def _info(row: DbRow) -> TokenInfo:
    return TokenInfo(
        fingerprint(row.token_hash),
        row.label,
        row.name,
        row.created_at,
        row.last_used_at,
    )


def _token_rows() -> Select[Any, Any, Any, Any, Any]:
    return select(
        tokens.c.token_hash, tokens.c.label, users.c.name, tokens.c.created_at, tokens.c.last_used_at
    ).join_from(tokens, users, tokens.c.user_id == users.c.id)


def list_tokens(db: Database) -> list[TokenInfo]:
    """Every token, oldest first."""
    with db.read() as conn:
        rows = conn.execute(_token_rows().order_by(tokens.c.created_at, tokens.c.token_hash)).all()
    return [_info(r) for r in rows]


class TokenNotFound(LookupError):
    pass


def revoke_token(db: Database, *, fingerprint_or_hash: str | None = None, token: str | None = None) -> TokenInfo:
    """Delete one token, named by its fingerprint (a prefix of its hash, at least 8 hex characters) or
    given itself. Raises ``TokenNotFound`` (with what to pass instead) when no single token matches."""
    if token is not None:
        match = tokens.c.token_hash == hash_token(token)
        what = "the given token"
    else:
        prefix = (fingerprint_or_hash or "").lower()
        if not FINGERPRINT.match(prefix):
            raise TokenNotFound(  # the argument is never echoed: it may be the token itself
                "the argument is not a token fingerprint: pass the FINGERPRINT column of "
                "'lightly-server list-tokens' (hex, at least 8 characters), or the token itself with --token-file"
            )
        match = tokens.c.token_hash.startswith(prefix, autoescape=True)
        what = f"fingerprint {prefix}"
    with db.write() as conn:
        rows = conn.execute(_token_rows().where(match).limit(2)).all()
        if not rows:
            raise TokenNotFound(
                f"no token with {what}: pass a FINGERPRINT that 'lightly-server list-tokens' shows "
                "(on the same --database)"
            )
        if len(rows) > 1:
            raise TokenNotFound(f"{what} matches more than one token: pass more of the fingerprint")
        conn.execute(tokens.delete().where(tokens.c.token_hash == rows[0].token_hash))
    return _info(rows[0])


class TokenCache:
    """token hash -> user id, cached for at most ``ttl_s`` so a busy fleet does not hit the database per call.

    Two bounded LRUs: known-good tokens (up to ``max_valid``) and unknown ones (up to ``max_unknown``,
    for ``unknown_ttl_s``). A flood of random tokens only churns the second: it never evicts a valid one.
    ``ttl_s`` bounds how long a revoked token keeps working on this process.
    """

    def __init__(
        self,
        db: Database,
        ttl_s: float = TOKEN_TTL_S,
        *,
        unknown_ttl_s: float = UNKNOWN_TTL_S,
        max_valid: int = MAX_VALID,
        max_unknown: int = MAX_UNKNOWN,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.unknown_ttl_s = unknown_ttl_s
        self.max_valid = max_valid
        self.max_unknown = max_unknown
        self._lock = threading.Lock()
        self._valid: OrderedDict[str, tuple[str, float]] = OrderedDict()  # hash -> (user id, expires)
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> expires
        self._used_written: dict[str, int] = {}  # hash -> when this process last wrote last_used_at (ms)

    def cached(self, token: str) -> tuple[bool, str | None]:
        """(True, user id or None) when the answer is cached and fresh; (False, None) when only
        ``user_for`` (a database read) can tell."""
        h = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._valid.get(h)
            if hit is not None:
                if hit[1] > now:
                    self._valid.move_to_end(h)
                    return True, hit[0]
                return False, None
            expires = self._unknown.get(h)
            if expires is not None and expires > now:
                return True, None
        return False, None

    def user_for(self, token: str) -> str | None:
        hit, cached_user = self.cached(token)
        if hit:
            return cached_user
        h = hash_token(token)
        now = time.monotonic()
        with self.db.read() as conn:
            row = conn.execute(select(tokens.c.user_id, tokens.c.last_used_at).where(tokens.c.token_hash == h)).first()
        user_id = row.user_id if row else None
        with self._lock:
            if user_id is None:
                self._valid.pop(h, None)  # revoked
                self._used_written.pop(h, None)
                self._unknown[h] = now + self.unknown_ttl_s
                self._unknown.move_to_end(h)
                while len(self._unknown) > self.max_unknown:
                    self._unknown.popitem(last=False)
            else:
                self._unknown.pop(h, None)
                self._valid[h] = (user_id, now + self.ttl_s)
                self._valid.move_to_end(h)
                while len(self._valid) > self.max_valid:
                    old, _ = self._valid.popitem(last=False)
                    self._used_written.pop(old, None)
        if row is not None:
            self._note_use(h, row.last_used_at)
        return user_id

    def _note_use(self, token_hash: str, stored: int | None) -> None:
        """``last_used_at`` to the minute: one small write per token and process at most once a minute."""
        now = now_ms()
        with self._lock:  # checked and claimed at once: concurrent misses of one token write once
            last = max(stored or 0, self._used_written.get(token_hash, 0))
            if now - last < LAST_USED_RESOLUTION_MS:
                return
            self._used_written[token_hash] = now
        try:
            with self.db.write() as conn:
                conn.execute(tokens.update().where(tokens.c.token_hash == token_hash).values(last_used_at=now))
        except Exception as exc:  # bookkeeping only: the request goes on
            log.warning("could not record a token's last use (%s)", type(exc).__name__)
