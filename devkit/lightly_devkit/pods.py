"""Pod statuses as the kubelet writes them, for tests and benchmarks that play the kubelet on a
control plane without nodes (envtest): PATCH one into ``pods/{name}/status``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["pod_running"]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_running(
    container: str = "worker",
    *,
    ready: bool = True,
    image: str = "worker",
    image_id: str = "docker-pullable://worker@sha256:" + "0" * 64,
) -> dict[str, Any]:
    """``pods/status`` of a started pod: phase Running, PodScheduled/Ready conditions, a running container."""
    now, flag = _now(), "True" if ready else "False"
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": [
            {
                "name": container,
                "ready": ready,
                "started": True,
                "restartCount": 0,
                "image": image,
                "imageID": image_id,
                "state": {"running": {"startedAt": now}},
            }
        ],
        "startTime": now,
    }
