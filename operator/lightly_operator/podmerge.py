"""``podTemplate.spec`` merged into the pod the operator builds, the way ``kubectl patch`` (a strategic
merge) does it: dicts merge recursively, and the lists Kubernetes keys by a field merge item by item on
that field (``containers`` by ``name``, ``volumeMounts`` by ``mountPath``, ...): an item with the same key
is merged into the operator's, a new one is added. Other lists, and scalars, are replaced.

So a template can add a volume and mount it into the ``worker`` container, or add an environment
variable, without dropping the operator's own volumes, arguments and environment (a plain deep merge
replaced whole lists: one volume in the template removed the token volume and the pod could not start).
"""

from __future__ import annotations

import copy
from typing import Any

#: list fields merged item by item, and the field that identifies an item (Kubernetes' patchMergeKey)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}


def merge_pod_spec(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged into a copy of ``base`` (see the module's docstring)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = merge_pod_spec(current, value)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(current, list):
            out[key] = _merge_items(current, value, MERGE_KEYS[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_items(base: list[Any], override: list[Any], field: str) -> list[Any]:
    out = copy.deepcopy(base)
    where = {item.get(field): i for i, item in enumerate(out) if isinstance(item, dict) and field in item}
    for item in override:
        if isinstance(item, dict) and item.get(field) in where:
            i = where[item[field]]
            out[i] = merge_pod_spec(out[i], item)
        else:
            out.append(copy.deepcopy(item))
    return out
