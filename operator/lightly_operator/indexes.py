"""What the operator's kopf indexes hold per fleet, so that reconciles never LIST.

``fleet_pods``: (namespace, fleet) -> the ``PodView`` of each of its pods (see ``status.pod_view``).
``fleets``: (namespace, fleet) -> one ``FleetEntry``: its latest body and the replicas its status lists.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .memo import FleetKey
from .status import PodView

PodIndex = Mapping[FleetKey, Collection[PodView]]


@dataclass(frozen=True)
class FleetEntry:
    body: dict[str, Any]
    indices: frozenset[int]

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> FleetEntry:
        status = body.get("status") or {}
        indices = frozenset(w.get("index") for w in status.get("workers") or [] if "index" in w)
        return cls(plain_body(body), indices)

    def status_worker_id(self, index: int) -> str | None:
        """The worker id the fleet's status lists for replica ``index`` (None: not listed)."""
        for w in (self.body.get("status") or {}).get("workers") or []:
            if w.get("index") == index:
                return w.get("workerId")
        return None


FleetIndex = Mapping[FleetKey, Collection[FleetEntry]]


def plain_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot of a kopf body in plain dicts (kopf's body views change as new versions arrive)."""
    meta = dict(body["metadata"])
    meta["namespace"] = body["metadata"]["namespace"]
    return {"metadata": meta, "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def pods_of(index: PodIndex, key: FleetKey) -> list[PodView]:
    """The indexed pods of one fleet."""
    return list(index.get(key, []))
