"""What the operator's kopf indexes hold per fleet, so that reconciles never LIST.

``fleet_pods``: (namespace, fleet) -> the ``PodView`` of each of its pods (see ``status.pod_view``).
``fleets``: (namespace, fleet) -> one ``FleetEntry``: its latest body and the replicas its status lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from .memo import FleetKey
from .status import PodView

#: kopf's index of every fleet's pods (tests may pass a plain dict of lists)
PodIndex = kopf.Index[FleetKey, PodView]


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
                worker_id: str | None = w.get("workerId")
                return worker_id
        return None


#: kopf's index of every fleet (one entry per key)
FleetIndex = kopf.Index[FleetKey, FleetEntry]


def plain_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot of a kopf body in plain dicts (kopf's body views change as new versions arrive)."""
    meta = dict(body["metadata"])
    meta["namespace"] = body["metadata"]["namespace"]
    return {"metadata": meta, "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def pods_of(index: PodIndex, key: FleetKey) -> list[PodView]:
    """The indexed pods of one fleet."""
    return list(index.get(key, []))
