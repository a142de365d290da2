"""Files a run read once from a bucket, kept on the run's local disk for their next read.

The corruptness check reads every input file whole; the embedding then reads them again. Without a
spill the bucket serves every image twice (measured in docs/benchmarks.md, "Data in buckets"). The
check's process keeps what it downloads here, up to a byte cap; later reads, in that process or in the
loader's worker processes, take the copy. Over the cap a file is simply not kept: it is read from the
bucket again, so a cap too small costs time, never correctness.

A spill lives in the run's scratch folder and goes with it. Its file names are digests of the keys, so a
hostile key (``..``, a very long name) never names a path.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["Spill"]


class Spill:
    """A byte-capped folder of whole files, keyed by their datasource key."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._owner = os.getpid()  # only this process adds: the cap is counted in one place
        self._used = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # the loader's processes read, never add
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()

    @property
    def used(self) -> int:
        return self._used

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> bool:
        """Keep ``data`` for ``key`` unless the cap would be passed; whether it was kept."""
        if os.getpid() != self._owner or self.max_bytes <= 0:
            return False
        with self._lock:
            if self._used + len(data) > self.max_bytes:
                return False
            self._used += len(data)
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{threading.get_ident()}.part")
        try:
            tmp.write_bytes(data)
            tmp.replace(path)  # a reader sees the whole file or none
        except OSError:  # a full disk: the file is read from the bucket again
            tmp.unlink(missing_ok=True)
            with self._lock:
                self._used -= len(data)
            return False
        return True
