"""Status logic: Kubernetes-style conditions, pod problems, phases. Pure functions."""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
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
    image_pull: bool = False  # never started: its image cannot be pulled (safe to replace)


PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")


def registry_host(image: str) -> str:
    """The registry an image reference pulls from (Docker's rule: a first part with '.' or ':' or
    ``localhost`` names a host, anything else is Docker Hub)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def pull_failure(message: str, image: str) -> str:
    """The kubelet's image pull error in a few words, with what to check.

    ``ImagePullBackOff`` only says "Back-off pulling image"; the cause is in the preceding
    ``ErrImagePull`` message (401, 404, unreachable), so callers pass that one when they have it.
    """
    host = registry_host(image) if image else "the registry"
    low = message.lower()
    if "401 unauthorized" in low or "unauthorized" in low or "authentication required" in low:
        return (
            f"401 Unauthorized from {host}: check registryCredentials (the container-credentials.json in its "
            "Secret, and spec.registryCredentials.registry) or spec.imagePullSecrets"
        )
    if "403 forbidden" in low or "denied" in low:
        return (
            f"access denied by {host}: the key in registryCredentials (or spec.imagePullSecrets) may not read "
            f"{image or 'the image'}; check its permissions"
        )
    if "not found" in low or "manifest unknown" in low:
        return f"{image} not found in {host}: check spec.image (repository and tag)"
    if any(w in low for w in ("connection refused", "no such host", "i/o timeout", "dial tcp", "no route")):
        return f"{host} is unreachable from the node: check the registry address and the node's network"
    if "back-off pulling image" in low:
        return f"cannot pull {image} (retrying); check spec.image and registryCredentials or spec.imagePullSecrets"
    return f"{message or 'cannot pull the image'}; check spec.image and registryCredentials or spec.imagePullSecrets"


def pod_problem(status: dict[str, Any], pull_error: str | None = None) -> tuple[str, str] | None:
    """A pod's trouble as (reason, message a human can act on), or None.

    ``pull_error``: the pod's last ``ErrImagePull`` message, which explains a later ``ImagePullBackOff``.
    """
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
        if reason in PULL_REASONS:
            message = waiting.get("message") or ""
            if reason == "ImagePullBackOff" and pull_error:
                message = pull_error
            return reason, pull_failure(message, cs.get("image") or "")
        if reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            detail = f" (last exit code {last.get('exitCode')}, {last.get('reason', 'unknown')})" if last else ""
            return reason, f"the worker container keeps crashing{detail}; see kubectl logs"
        if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
            return reason, waiting.get("message") or reason
    return None


def pull_error_of(status: dict[str, Any]) -> str | None:
    """The ``ErrImagePull`` message in a pod's status, if that is its state now."""
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "ErrImagePull" and waiting.get("message"):
            return str(waiting["message"])
    return None


class PullErrors:
    """The last ``ErrImagePull`` message of each pod (by uid), bounded: it explains the pod's later
    ``ImagePullBackOff``, whose own message says only "Back-off pulling image"."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._by_pod: OrderedDict[str, str] = OrderedDict()

    def note(self, pod: str, error: str | None) -> str | None:
        """Remember ``error`` (when given) and return the pod's last known pull error."""
        if error:
            self._by_pod[pod] = error
            self._by_pod.move_to_end(pod)
            while len(self._by_pod) > self.limit:
                self._by_pod.popitem(last=False)
        return self._by_pod.get(pod)


def waiting_for_image(status: dict[str, Any]) -> bool:
    """True while a pod's container has never started because its image cannot be pulled."""
    for cs in status.get("containerStatuses") or []:
        if ((cs.get("state") or {}).get("waiting") or {}).get("reason") in PULL_REASONS:
            return True
    return False


def pod_view(
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    meta: dict[str, Any],
    status: dict[str, Any],
    pull_error: str | None = None,
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
        problem=pod_problem(status, pull_error),
        image_pull=waiting_for_image(status),
    )
