"""What to do next for one fleet, decided by a pure function (job-safe, ARC-style).

Given the registered workers, the pods, which workers are busy and the desired size, ``plan``
returns the registrations, pod creations and deletions and deregistrations to perform now.
Rules: a busy worker is never removed or replaced under ``WhenIdle``; when shrinking, replicas
whose pod is gone or terminating go first (busy or not: no job runs there), then pods that do not
run (pending, unschedulable, failing), then idle workers (highest index first);
when growing, the lowest free indices are used; a replica's new pod is created only after its
old pod is gone, so two pods never act as one worker id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .status import PodView


@dataclass
class Plan:
    keep: list[int] = field(default_factory=list)
    register: list[int] = field(default_factory=list)
    create: list[int] = field(default_factory=list)
    delete: list[tuple[str, str]] = field(default_factory=list)  # (pod name, reason)
    deregister: list[int] = field(default_factory=list)
    waiting_busy: list[int] = field(default_factory=list)  # outdated or surplus, kept while busy
    backing_off: list[int] = field(default_factory=list)


def _has_live_pod(pods: list[PodView]) -> bool:
    return any(not p.deleting for p in pods)


def _removal_cost(index: int, pods: list[PodView], busy: bool) -> tuple[int, int]:
    # A replica whose pod is gone or terminating (deleted by an earlier scale-down, say) runs nothing: it
    # goes first, busy or not. Ranking it by its worker's busy flag instead let a later reconcile, one
    # that saw that worker busy (a run taken in its last seconds, an old API view, an unreachable API),
    # remove another replica and create the removed replica's pod again.
    if not _has_live_pod(pods):
        return 0, -index
    running = any(p.phase == "Running" and not p.problem and not p.deleting for p in pods)
    rank = 3 if busy else (2 if running else 1)
    return rank, -index


def plan(
    desired: int,
    registered: Iterable[int],
    pods: dict[int, list[PodView]],
    busy: set[int],
    checksum: str,
    strategy: str = "WhenIdle",
    blocked: set[int] | None = None,
) -> Plan:
    """``blocked``: indices whose pod creation is backing off after failures."""
    blocked = blocked or set()
    p = Plan()
    active = sorted(set(registered) | {i for i, ps in pods.items() if ps})
    surplus = len(active) - desired
    removing: set[int] = set()
    if surplus > 0:
        candidates = sorted(active, key=lambda i: _removal_cost(i, pods.get(i, []), i in busy))
        for i in candidates:
            if len(removing) == surplus:
                break
            if i in busy and strategy == "WhenIdle" and _has_live_pod(pods.get(i, [])):
                p.waiting_busy.append(i)
                continue
            removing.add(i)
    keep = [i for i in active if i not in removing]
    free = (i for i in range(len(active) + desired + 1) if i not in active)
    while len(keep) < desired:
        keep.append(next(free))
    p.keep = sorted(keep)

    registered_set = set(registered)
    for i in p.keep:
        if i not in registered_set:
            p.register.append(i)
        live = [x for x in pods.get(i, []) if not x.deleting]
        if any(x.deleting for x in pods.get(i, [])):
            continue  # wait until the old pod is gone
        if not live:
            if i in blocked:
                p.backing_off.append(i)
            else:
                p.create.append(i)
            continue
        current = [x for x in live if x.checksum == checksum]
        for x in live:
            if x.phase in ("Failed", "Succeeded"):
                p.delete.append((x.name, f"pod {x.phase.lower()}; it will be recreated"))
            elif x.checksum != checksum:
                if strategy == "Recreate" or i not in busy or x.phase == "Pending":
                    p.delete.append((x.name, "outdated spec; replacing"))
                else:
                    p.waiting_busy.append(i)
            elif len(current) > 1 and x is not current[0]:
                p.delete.append((x.name, "duplicate pod for one worker"))

    for i in sorted(removing):
        live = [x for x in pods.get(i, []) if not x.deleting]
        for x in live:
            p.delete.append((x.name, "scaled down"))
        if not pods.get(i) and i in registered_set:
            p.deregister.append(i)
    return p
