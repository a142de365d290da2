"""How many replicas a fleet wants: ``spec.replicas``, or the autoscaler's answer from the API's queue."""

from __future__ import annotations

from .api_access import ApiView
from .memo import FleetMemo
from .spec import LightlyWorkerSpec


def desired_replicas(spec: LightlyWorkerSpec, view: ApiView | None, busy: set[int], memo: FleetMemo, now: float) -> int:
    """Autoscaling: open runs, open shards of split runs (within each run's parallelism) plus busy workers,
    within the bounds; it grows at once and shrinks only after ``scaleDownDelaySeconds`` of lower demand.
    ``now``: time.monotonic()."""
    a = spec.autoscaling
    if not a.enabled:
        return spec.replicas
    if view is None:  # cannot see the queue: hold the current size
        return memo.autoscale_desired if memo.autoscale_desired is not None else a.min_replicas
    need = max(a.min_replicas, min(a.max_replicas, view.open_runs + view.open_shards + len(busy)))
    current = memo.autoscale_desired
    if current is None or need >= current:
        memo.autoscale_high_since = now
        current = need
    elif now - memo.autoscale_high_since >= a.scale_down_delay_seconds:
        current = need
    memo.autoscale_desired = current
    return current
