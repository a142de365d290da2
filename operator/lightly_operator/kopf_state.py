"""Where kopf keeps its handler state: in the operator's memory, not in annotations on every fleet.

The change handlers (create, update, resume) all run the same level-triggered reconcile, so kopf's
"last handled configuration" (the diff base) and its per-handler progress need not survive a restart: a
restarted operator sees every fleet as new and reconciles it once, as a resume would. Kept in annotations,
each would cost an extra write of the fleet (metadata, next to the status write) per handled change, and
an extra watch event with a full body for kopf to process.

A handler that fails and must be retried later still gets kopf's ``touch-dummy`` annotation written (the
annotation storage's ``touch``): that write makes the watch deliver the event that retries it.
"""

from __future__ import annotations

from typing import Any

import kopf

PREFIX = "lightly.ai"


def _uid(body: kopf.Body) -> str:
    return str(body.get("metadata", {}).get("uid") or "")


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The essence kopf last handled, per object uid (dropped once the object is being deleted)."""

    def __init__(self) -> None:
        super().__init__()
        self._essences: dict[str, Any] = {}

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        # objects that an older operator handled carry these; they are not part of the spec
        annotations = essence.get("metadata", {}).get("annotations", {})
        for key in [k for k in annotations if k.startswith(f"{PREFIX}/")]:
            del annotations[key]
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> Any:
        return self._essences.get(_uid(body))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        if body.get("metadata", {}).get("deletionTimestamp"):
            self._essences.pop(_uid(body), None)  # deletion causes never compare essences
        else:
            self._essences[_uid(body)] = essence

    def __len__(self) -> int:
        return len(self._essences)


class MemoryProgressStorage(kopf.AnnotationsProgressStorage):
    """Each handler's progress record per object uid; only ``touch`` (retries) writes an annotation."""

    def __init__(self) -> None:
        super().__init__(prefix=PREFIX)
        self._records: dict[tuple[str, str], Any] = {}

    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        return self._records.get((_uid(body), str(key)))

    def store(self, *, key: Any, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records[(_uid(body), str(key))] = dict(record)

    def purge(self, *, key: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self._records.pop((_uid(body), str(key)), None)

    def __len__(self) -> int:
        return len(self._records)
