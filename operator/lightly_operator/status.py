"""Status logic: Kubernetes-style conditions, pod problems, phases. Pure functions."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def merge_conditions(
    old: list[dict[str, Any]] | None, new: list[Condition], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """KubeRay-style conditions; lastTransitionTime moves only when a condition's status flips."""
    previous = {c.get("type"): c for c in old or []}
    out = []
    for cond in new:
        status = "True" if cond.status else "False"
        before = previous.get(cond.type)
        ltt = before.get("lastTransitionTime") if before and before.get("status") == status else now
        entry = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": ltt or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


@dataclass(frozen=True)
class PodView:
    """What the operator needs to know about one of its pods (kept in a kopf index)."""

    name: str
    index: int
    checksum: str
    worker_id: str
    phase: str
    ready: bool
    deleting: bool
    problem: tuple[str, str] | None  # (reason, message)


def pod_problem(status: dict[str, Any]) -> tuple[str, str] | None:
    """A pod's trouble as (reason, message a human can act on), or None."""
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "PodScheduled"
            and cond.get("status") == "False"
            and cond.get("reason") == "Unschedulable"
        ):
            msg = cond.get("message") or "no node fits"
            hint = " (no node offers nvidia.com/gpu: add GPU nodes or change spec.resources)" if "gpu" in msg else ""
            return "Unschedulable", f"{msg}{hint}"
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
            return reason, (
                f"{waiting.get('message') or 'cannot pull the image'}; check spec.image and the registry "
                "credentials (spec.registryCredentials or spec.imagePullSecrets)"
            )
        if reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            detail = f" (last exit code {last.get('exitCode')}, {last.get('reason', 'unknown')})" if last else ""
            return reason, f"the worker container keeps crashing{detail}; see kubectl logs"
        if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
            return reason, waiting.get("message") or reason
    return None


def pod_view(
    name: str, labels: dict[str, str], annotations: dict[str, str], meta: dict[str, Any], status: dict[str, Any]
) -> PodView | None:
    from .builders import ANN_CHECKSUM, ANN_WORKER_ID, LABEL_INDEX

    try:
        index = int(labels.get(LABEL_INDEX, ""))
    except ValueError:
        return None
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodView(
        name=name,
        index=index,
        checksum=annotations.get(ANN_CHECKSUM, ""),
        worker_id=annotations.get(ANN_WORKER_ID, ""),
        phase=status.get("phase") or "Pending",
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        problem=pod_problem(status),
    )
