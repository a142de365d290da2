"""Artifact storage on disk, with HMAC-signed upload and download URLs served by this server.

Several replicas need a shared directory (a ReadWriteMany volume). The signing key never lives in the
database: it is derived from the server's secret key, or kept in a file of the shared directory
(``crypto.url_signing_key``), so every replica accepts every other replica's URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path


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
        if expires < time.time() or not signature.isascii():
            return False
        return hmac.compare_digest(self.sign(action, artifact_id, expires), signature)

    def open_for_write(self, artifact_id: str) -> tuple[Path, Path]:
        """(temporary path, final path); the caller writes the temp file then renames it."""
        final = self.path(artifact_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        return final.with_suffix(f".upload-{os.getpid()}-{secrets.token_hex(4)}"), final
