"""Artifact storage on disk, with HMAC-signed upload and download URLs served by this server.

Several replicas need a shared directory (a ReadWriteMany volume); the signing key lives in the
database so every replica accepts every other replica's URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from sqlalchemy import select

from .db import Database, settings


def signing_key(db: Database) -> bytes:
    with db.write() as conn:
        row = conn.execute(select(settings.c.value).where(settings.c.key == "artifact_signing_key")).first()
        if row:
            return bytes.fromhex(row.value)
        key = secrets.token_bytes(32)
        conn.execute(settings.insert().values(key="artifact_signing_key", value=key.hex()))
        return key


class ArtifactStore:
    def __init__(self, root: Path, key: bytes, url_ttl_s: int = 24 * 3600) -> None:
        self.root = root
        self.key = key
        self.url_ttl_s = url_ttl_s
        root.mkdir(parents=True, exist_ok=True)

    def path(self, artifact_id: str) -> Path:
        return self.root / artifact_id[-2:] / artifact_id

    def sign(self, action: str, artifact_id: str, expires: int) -> str:
        msg = f"{action}:{artifact_id}:{expires}".encode()
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def signed_query(self, action: str, artifact_id: str) -> str:
        expires = int(time.time()) + self.url_ttl_s
        return f"expires={expires}&signature={self.sign(action, artifact_id, expires)}"

    def verify(self, action: str, artifact_id: str, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        return hmac.compare_digest(self.sign(action, artifact_id, expires), signature)

    def open_for_write(self, artifact_id: str) -> tuple[Path, Path]:
        """(temporary path, final path); the caller writes the temp file then renames it."""
        final = self.path(artifact_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_suffix(f".upload-{os.getpid()}-{secrets.token_hex(4)}"), final
