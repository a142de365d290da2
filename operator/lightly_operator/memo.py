"""What the operator remembers about each fleet between reconciles.

``FleetMemo`` lives in kopf's per-object memo; ``FleetMemos`` also finds it by (namespace, name), for
reconciles that do not come from a handler of the fleet itself (pod events).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .status import PodView

FleetKey = tuple[str, str]  # (namespace, name)


@dataclass
class FleetMemo:
    """What the operator remembers about one fleet between reconciles (kopf's per-object memo)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    failures: dict[int, int] = field(default_factory=dict)
    retry_at: dict[int, float] = field(default_factory=dict)
    seen_failed: set[str] = field(default_factory=set)
    offline_since: dict[int, float] = field(default_factory=dict)
    autoscale_high_since: float = 0.0
    autoscale_desired: int | None = None
    warned: set[str] = field(default_factory=set)
    # registrations this process made or undid, for when the body's status is older than our last write
    registered: dict[int, str] = field(default_factory=dict)
    deregistered: set[str] = field(default_factory=set)
    # pods created but not yet seen in the pods index: pod name -> (when, its view)
    created: dict[str, tuple[float, PodView]] = field(default_factory=dict)
    # pods this process deleted while the index still shows them alive: pod name -> when
    deleted: dict[str, float] = field(default_factory=dict)


class FleetMemos:
    """Every fleet's ``FleetMemo`` by key; they hold asyncio objects of one event loop (``clear`` on start)."""

    def __init__(self) -> None:
        self._by_key: dict[FleetKey, FleetMemo] = {}

    def of(self, memo: MutableMapping[str, Any], key: FleetKey) -> FleetMemo:
        """The fleet's memo, kept in kopf's per-object ``memo`` and here by key."""
        if "fleet" not in memo:
            memo["fleet"] = self._by_key.setdefault(key, FleetMemo())
        fleet: FleetMemo = memo["fleet"]
        return fleet

    def get(self, key: FleetKey) -> FleetMemo | None:
        return self._by_key.get(key)

    def forget(self, key: FleetKey) -> None:
        self._by_key.pop(key, None)

    def clear(self) -> None:
        self._by_key.clear()
