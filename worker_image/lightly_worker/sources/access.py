"""What a run needs to reach its bucket datasources: the API's datasource calls and the worker's storage settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .mirror import LightlyMirror
from .remote import DatasourceApi, RemoteSource
from .store_http import StorePolicy, StoreTransport

__all__ = ["RemoteAccess"]


@dataclass(frozen=True)
class RemoteAccess:
    """The dataset's datasource API, the storage settings and the job's scratch folder."""

    api: DatasourceApi
    prefetch: int = 16
    mirror_max_bytes: int = 8 * 1024**3
    scratch: Path | None = None  # where a LIGHTLY mirror lives (None: no bucket LIGHTLY datasource allowed)

    @property
    def policy(self) -> StorePolicy:
        return self.api.policy

    def transport(self) -> StoreTransport:
        return StoreTransport(self.api.policy, verify=self.api.verify, stop=self.api.stop)

    def input_source(self, datasource: dict[str, Any]) -> RemoteSource:
        return RemoteSource(self.api, datasource, purpose="INPUT", transport=self.transport(), prefetch=self.prefetch)

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
