"""Where shard results (extension, /v1/ext/) live: files in the artifacts directory, shared by replicas like
run artifacts (``artifacts.ArtifactStore``); the database row says whether and how large one is."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


def result_path(root: Path, shard_id: str) -> Path:
    return root / "shards" / shard_id[-2:] / shard_id


def upload_paths(root: Path, shard_id: str) -> tuple[Path, Path]:
    """(temporary path, final path); the caller writes the temp file, then renames it under the row lock."""
    final = result_path(root, shard_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_suffix(f".upload-{os.getpid()}-{secrets.token_hex(4)}"), final


def delete_results(root: Path, shard_ids: Iterable[str]) -> None:
    for sid in shard_ids:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(result_path(root, sid))
