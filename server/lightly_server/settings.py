"""Server settings (CLI flags with environment fallbacks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class ServerSettings:
    database_url: str
    artifacts_dir: Path | None = None  # default: next to the SQLite file, else ./lightly-artifacts
    lease_seconds: float = 120.0  # a worker silent this long is OFFLINE and loses its run
    max_attempts: int = 3  # a scheduled run lost this many times ends DONE with the failure recorded
    max_wait_seconds: float = 60.0  # cap of the long-poll extension's waitSeconds
    public_url: str | None = None  # base of signed artifact URLs; default: the request's own base URL
    max_upload_bytes: int = 20 * 1024**3  # one artifact upload (streamed to disk)
    max_body_bytes: int = 8 * 1024**2  # any other request body (413 beyond)
    max_selection_bytes: int = 256 * 1024**2  # PUT /v1/docker/runs/{id}/selection (800k filenames fit)
    #: a shard listing (gzip body and uncompressed) and a shard result (extension, /v1/ext/)
    max_shard_bytes: int = 256 * 1024**2
    #: file with the secret key(s), one a line; None: LIGHTLY_SERVER_SECRET_KEY_FILE, LIGHTLY_SERVER_SECRET_KEY
    secret_key_file: Path | None = None
    #: file with the bearer token /metrics asks for (read at every scrape); None: /metrics is open
    metrics_token_file: Path | None = None

    def resolved_artifacts_dir(self) -> Path:
        if self.artifacts_dir is not None:
            return self.artifacts_dir
        u = make_url(self.database_url)
        if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
            p = Path(u.database).expanduser().resolve()
            return p.parent / f"{p.stem}-artifacts"
        return Path("lightly-artifacts").resolve()
