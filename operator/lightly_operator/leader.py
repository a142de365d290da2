"""Leader election with a coordination.k8s.io Lease, so two operator replicas never both act.

The replica holding the Lease runs kopf; the others wait. A leader that cannot renew within the
lease duration stops acting (the process exits and is restarted), so at most one replica acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
from typing import Any, cast

import kubernetes
from kubernetes.client import ApiException, V1Lease, V1LeaseSpec, V1ObjectMeta

log = logging.getLogger("lightly_operator.leader")


def _spec_and_meta(lease: V1Lease) -> tuple[V1LeaseSpec, V1ObjectMeta]:
    """A Lease read from the apiserver has both (its spec is a struct, never left out)."""
    return cast(V1LeaseSpec, lease.spec), cast(V1ObjectMeta, lease.metadata)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaseLock:
    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        name: str = "lightly-operator",
        identity: str | None = None,
        duration: int = 15,
        timeout: float = 10.0,
    ) -> None:
        self.api = kubernetes.client.CoordinationV1Api(api_client)
        self.namespace, self.name = namespace, name
        self.identity = identity or socket.gethostname()
        self.duration = duration
        self.timeout = timeout

    def _body(self, resource_version: str | None, transitions: int, acquired: dt.datetime) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.duration,
                "acquireTime": acquired.isoformat(),
                "renewTime": _now().isoformat(),
                "leaseTransitions": transitions,
            },
        }

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True while we hold it."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            try:
                self.api.create_namespaced_lease(
                    self.namespace,
                    self._body(None, 0, _now()),  # type: ignore[arg-type]  # the client sends a dict body as is
                    _request_timeout=self.timeout,
                )
                return True
            except ApiException as exc2:
                if exc2.status == 409:
                    return False
                raise
        spec, meta = _spec_and_meta(lease)
        holder = spec.holder_identity
        renew = spec.renew_time
        expired = renew is None or (_now() - renew).total_seconds() > (spec.lease_duration_seconds or self.duration)
        if holder != self.identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
        acquired = spec.acquire_time if holder == self.identity and spec.acquire_time else _now()
        try:
            self.api.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(meta.resource_version, transitions, acquired),  # type: ignore[arg-type]  # a dict body
                _request_timeout=self.timeout,
            )
            return True
        except ApiException as exc:
            if exc.status == 409:  # somebody else renewed or took it first
                return False
            raise

    def release(self) -> None:
        """Give the Lease up on a clean shutdown (best effort), so a successor takes over at once."""
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.timeout)
            spec, meta = _spec_and_meta(lease)
            if spec.holder_identity != self.identity:
                return
            body = self._body(meta.resource_version, spec.lease_transitions or 0, _now())
            body["spec"]["holderIdentity"] = None
            body["spec"]["renewTime"] = (_now() - dt.timedelta(days=1)).isoformat()
            self.api.replace_namespaced_lease(
                self.name,
                self.namespace,
                body,  # type: ignore[arg-type]  # the client sends a dict body as is
                _request_timeout=self.timeout,
            )
            log.info("released the leader Lease")
        except Exception as exc:
            log.warning("could not release the leader Lease: %s", exc)

    async def acquire(self, stop: asyncio.Event) -> bool:
        while not stop.is_set():
            try:
                if await asyncio.to_thread(self.try_acquire):
                    log.info("became the leader (Lease %s/%s, identity %s)", self.namespace, self.name, self.identity)
                    return True
            except Exception as exc:
                log.warning("leader election: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.duration / 3)
        return False

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew until ``stop``; return (so the caller stops acting) if the Lease is lost."""
        last_ok = asyncio.get_running_loop().time()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.duration / 3)
                return
            except TimeoutError:
                pass
            try:
                if await asyncio.to_thread(self.try_acquire):
                    last_ok = asyncio.get_running_loop().time()
                    continue
                log.error("lost the leader Lease to another replica; stopping")
                return
            except Exception as exc:
                log.warning("could not renew the leader Lease: %s", exc)
            if asyncio.get_running_loop().time() - last_ok > self.duration * 2 / 3:
                log.error("could not renew the leader Lease in time; stopping")
                return
