"""A bucket LIGHTLY datasource as a bounded local copy of the ``.lightly/`` files a run needs.

Before the run, ``pull`` copies the named files and prefixes (``.lightly/metadata/``, the datapool, a
relevant-filenames file, ...) from the bucket into ``root`` (the job's scratch folder), listed with
``purpose=LIGHTLY&prefix=`` and read through ``readUrl?purpose=LIGHTLY``; the worker's Path-based
readers then work on ``root`` as on a mounted LIGHTLY datasource. After the run, ``push`` uploads the
files under ``root/.lightly/`` that are new or changed (by content hash) through ``writeUrl``.

Bounded: each file by ``StorePolicy.max_object_bytes``, all of them by ``max_bytes`` (a clear error
naming the setting); unsafe keys (``..``, absolute, control characters) and keys outside ``.lightly/``
are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import ObjectMissing, SourceAccessError, StorageError, key_problem
from .remote import ApiRefused, DatasourceApi, ListedFile, datasource_label
from .store_http import StoreTransport, UrlRefused

__all__ = ["LightlyMirror", "MirrorTooLarge"]

log = logging.getLogger("lightly_worker.run")

LIGHTLY_PREFIX = ".lightly/"


class MirrorTooLarge(SourceAccessError):
    """The ``.lightly/`` files a run needs are more than ``storage.mirror_max_bytes``."""


@dataclass
class _Copied:
    digest: str


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class LightlyMirror:
    """``root/.lightly/...``: the run's copy of a bucket LIGHTLY datasource's ``.lightly/`` files."""

    purpose = "LIGHTLY"

    def __init__(
        self,
        api: DatasourceApi,
        datasource: dict[str, Any],
        root: Path,
        *,
        transport: StoreTransport | None = None,
        max_bytes: int = 8 * 1024**3,
        threads: int = 16,
    ) -> None:
        self.api = api
        self.label = datasource_label(datasource)
        # Azure's Put Blob needs its blob type; S3, OBS and GCS take the signed URL as it is
        self.put_headers = {"x-ms-blob-type": "BlockBlob"} if datasource.get("type") == "AZURE" else {}
        self.root = Path(root)
        self.transport = transport or StoreTransport(api.policy, verify=api.verify)
        self.max_bytes = max_bytes
        self.threads = max(1, threads)
        self._copied: dict[str, _Copied] = {}
        self.bytes_pulled = 0

    def __repr__(self) -> str:
        return f"LightlyMirror({self.label} -> {self.root})"

    # ------------------------------------------------------------ down

    def _listed(self, wanted: str) -> list[ListedFile]:
        """The files of ``wanted``: a prefix ending in '/' (every file under it, listed), else that one file
        (read by its own URL; one that does not exist is left out)."""
        if not wanted.endswith("/"):
            return [ListedFile(wanted, None)]
        try:
            files = list(self.api.list_all(self.purpose, prefix=wanted))
        except ApiRefused as exc:
            raise SourceAccessError(f"the LIGHTLY datasource ({self.label}) cannot be listed: {exc}") from None
        kept = []
        for f in files:
            problem = key_problem(f.name) or (
                None if f.name.startswith(LIGHTLY_PREFIX) else "not under .lightly/ (what the listing was asked for)"
            )
            if problem:
                log.warning("LIGHTLY datasource: skipping %r: %s", f.name, problem)
                continue
            kept.append(f)
        return kept

    def pull(self, wanted: list[str]) -> list[str]:
        """Copy the files of ``wanted`` (keys or prefixes under ``.lightly/``) into ``root``; the keys copied."""
        self.root.mkdir(parents=True, exist_ok=True)
        files: dict[str, ListedFile] = {}
        for item in dict.fromkeys(wanted):
            if key_problem(item.rstrip("/")) or not item.startswith(LIGHTLY_PREFIX):
                continue  # the readers refuse such a setting with their own message
            for f in self._listed(item):
                files.setdefault(f.name, f)
        if not files:
            return []
        with ThreadPoolExecutor(min(self.threads, len(files)), thread_name_prefix="mirror") as pool:
            for _ in pool.map(self._download, files.values()):
                pass
        copied = sorted(k for k in files if k in self._copied)
        log.info("copied %d .lightly/ file(s) (%d bytes) from %s", len(copied), self.bytes_pulled, self.label)
        return copied

    def _read_url(self, key: str) -> str:
        try:
            return self.api.read_url(self.purpose, key)
        except ApiRefused as exc:
            raise StorageError(f"{key}: no read URL from the API ({exc})") from None

    def _download(self, f: ListedFile) -> None:
        url = f.read_url or self._read_url(f.name)
        try:
            try:
                fetched = self.transport.get(url, f.name)
            except UrlRefused:
                fetched = self.transport.get(self._read_url(f.name), f.name)
        except ObjectMissing:
            return  # a named file that is not there: the reader says what is missing, as with a mount
        except StorageError as exc:
            raise SourceAccessError(f"the LIGHTLY datasource ({self.label}): {exc}") from None
        self.bytes_pulled += len(fetched.data)  # the GIL makes this add atomic enough for a cap check
        if self.bytes_pulled > self.max_bytes:
            raise MirrorTooLarge(
                f"the .lightly/ files this run needs from {self.label} are more than {self.max_bytes} bytes "
                "(storage.mirror_max_bytes); raise the setting or keep fewer files under .lightly/"
            )
        target = self.root / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part")
        tmp.write_bytes(fetched.data)
        os.replace(tmp, target)
        self._copied[f.name] = _Copied(hashlib.blake2b(fetched.data, digest_size=20).hexdigest())

    # ------------------------------------------------------------ up

    def changed(self) -> list[str]:
        """Keys of the files under ``root/.lightly/`` that are new or differ from what was pulled."""
        base = self.root / LIGHTLY_PREFIX.rstrip("/")
        if not base.is_dir():
            return []
        out = []
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                path = Path(dirpath) / name
                if (name.startswith(".") and name.endswith(".part")) or path.is_symlink():
                    continue
                key = path.relative_to(self.root).as_posix()
                copied = self._copied.get(key)
                if copied is None or copied.digest != _digest(path):
                    out.append(key)
        return sorted(out)

    def push(self) -> list[str]:
        """Upload the new and changed ``.lightly/`` files through the API's write URLs; the keys written."""
        keys = self.changed()
        for key in keys:
            path = self.root / key
            try:
                try:
                    self.transport.put(self.api.write_url(key), key, path, self.put_headers)
                except UrlRefused:
                    self.transport.put(self.api.write_url(key), key, path, self.put_headers)
            except (ApiRefused, StorageError) as exc:
                raise SourceAccessError(f"cannot write {key} to the LIGHTLY datasource ({self.label}): {exc}") from None
            self._copied[key] = _Copied(_digest(path))
        if keys:
            log.info("wrote %d .lightly/ file(s) to %s: %s", len(keys), self.label, ", ".join(keys[:5]))
        return keys
