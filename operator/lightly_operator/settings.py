"""Operator settings: CLI flags and environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import __version__

DEFAULT_IMAGE = f"ghcr.io/lightly-worker-fleet/worker:{__version__}"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class OperatorSettings:
    api_url: str = field(
        default_factory=lambda: os.environ.get("LIGHTLY_SERVER_LOCATION", "http://lightly-server:8080")
    )
    worker_image: str = field(default_factory=lambda: os.environ.get("LIGHTLY_WORKER_IMAGE", DEFAULT_IMAGE))
    cluster_name: str = field(default_factory=lambda: os.environ.get("LIGHTLY_CLUSTER_NAME", "default"))
    #: reconcile every fleet this often (level-triggered; pods and the API are re-read)
    resync_seconds: float = field(default_factory=lambda: _float("LIGHTLY_OPERATOR_RESYNC_SECONDS", 10.0))
    #: look for orphaned API workers this often
    sweep_seconds: float = field(default_factory=lambda: _float("LIGHTLY_OPERATOR_SWEEP_SECONDS", 300.0))
    #: an API worker must be this old before the sweep may remove it (protects fleets being created)
    orphan_grace_seconds: float = field(default_factory=lambda: _float("LIGHTLY_OPERATOR_ORPHAN_GRACE_SECONDS", 600.0))
    #: timeout of every call to the Lightly API and to Kubernetes
    call_timeout_seconds: float = field(default_factory=lambda: _float("LIGHTLY_OPERATOR_CALL_TIMEOUT_SECONDS", 10.0))
    #: a worker OFFLINE this long while its pod is ready is reported as Degraded
    offline_grace_seconds: float = field(
        default_factory=lambda: _float("LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS", 120.0)
    )
    #: namespaces this operator watches (empty: all); the orphan sweep stays inside them
    namespaces: tuple[str, ...] = ()
    #: grace period of worker pods (a busy worker finishes or hands its run back within it)
    termination_grace_seconds: int = 300

    def name_prefix(self) -> str:
        return f"k8s.{self.cluster_name}."

    def worker_name(self, namespace: str, name: str, index: int) -> str:
        """Stable API name of one replica: a crash mid-registration can never create a duplicate."""
        return f"k8s.{self.cluster_name}.{namespace}.{name}.{index}"

    def parse_worker_name(self, worker_name: str) -> tuple[str, str, int] | None:
        """(namespace, name, index) of a name this cluster's operator registered, else None."""
        prefix = self.name_prefix()
        if not worker_name.startswith(prefix):
            return None
        parts = worker_name[len(prefix) :].split(".")
        # namespaces have no dots; resource names may have dots; the index is last
        if len(parts) < 3 or not parts[-1].isdigit():
            return None
        return parts[0], ".".join(parts[1:-1]), int(parts[-1])
