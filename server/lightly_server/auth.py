"""Tokens: random, shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time

from sqlalchemy import select

from .db import Database, tokens, users
from .ids import new_id, now_ms


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: Database, user_name: str) -> str:
    """Create (or reuse) the user ``user_name`` and return a new token for it."""
    token = secrets.token_urlsafe(32)
    with db.write() as conn:
        row = conn.execute(select(users.c.id).where(users.c.name == user_name)).first()
        user_id = row.id if row else new_id()
        if not row:
            conn.execute(users.insert().values(id=user_id, name=user_name, created_at=now_ms()))
        conn.execute(tokens.insert().values(token_hash=hash_token(token), user_id=user_id, created_at=now_ms()))
    return token


class TokenCache:
    """token hash -> user id, cached briefly so a busy fleet does not hit the database per call."""

    def __init__(self, db: Database, ttl_s: float = 10.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str | None, float]] = {}

    def cached(self, token: str) -> tuple[bool, str | None]:
        """(True, user id or None) when the answer is cached and fresh; (False, None) when only
        ``user_for`` (a database read) can tell."""
        hit = self._cache.get(hash_token(token))
        if hit and hit[1] > time.monotonic():
            return True, hit[0]
        return False, None

    def user_for(self, token: str) -> str | None:
        hit, cached_user = self.cached(token)
        if hit:
            return cached_user
        h = hash_token(token)
        now = time.monotonic()
        with self.db.read() as conn:
            row = conn.execute(select(tokens.c.user_id).where(tokens.c.token_hash == h)).first()
        user_id = row.user_id if row else None
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[h] = (user_id, now + (self.ttl_s if user_id else 1.0))
        return user_id
