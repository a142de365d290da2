"""What a run needs to reach its bucket datasources: the API's datasource calls and the worker's storage settings."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mirror import LightlyMirror
from .remote import DatasourceApi, RemoteSource
from .spill import Spill
from .store_http import StorePolicy, StoreTransport

__all__ = ["RemoteAccess"]


@dataclass(frozen=True)
class RemoteAccess:
    """The dataset's datasource API, the storage settings and the job's scratch folder."""

    api: DatasourceApi
    prefetch: int = 16
    mirror_max_bytes: int = 8 * 1024**3
    spill_max_bytes: int = 2 * 1024**3
    scratch: Path | None = None  # where a LIGHTLY mirror and the spill live (None: no bucket LIGHTLY datasource)

    @property
    def policy(self) -> StorePolicy:
        return self.api.policy

    def transport(self) -> StoreTransport:
        return StoreTransport(self.api.policy, verify=self.api.verify, stop=self.api.stop)

    def input_source(self, datasource: dict[str, Any]) -> RemoteSource:
        return RemoteSource(
            self.api,
            datasource,
            purpose="INPUT",
            transport=self.transport(),
            prefetch=self.prefetch,
            spill=self.spill(),
        )

    def spill(self) -> Spill | None:
        """The input files' local copies (sources.spill): capped by ``spill_max_bytes`` and by half the scratch
        disk's free space; none without a scratch folder or with a cap of 0."""
        if self.scratch is None or self.spill_max_bytes <= 0:
            return None
        self.scratch.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.scratch).free
        return Spill(self.scratch / "spill", min(self.spill_max_bytes, free // 2))

    def lightly_mirror(self, datasource: dict[str, Any]) -> LightlyMirror:
        if self.scratch is None:
            raise ValueError("a bucket LIGHTLY datasource needs a scratch folder for its .lightly/ files")
        return LightlyMirror(
            self.api,
            datasource,
            self.scratch / "lightly",
            transport=self.transport(),
            max_bytes=self.mirror_max_bytes,
            threads=self.prefetch,
        )
