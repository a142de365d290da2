"""The operator's Kubernetes calls (the official client, in threads), each with a timeout."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import kubernetes
from kubernetes.client import ApiException

from .policy import FleetPolicy, opt_in_hint, secret_opted_in


class SecretProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_client() -> kubernetes.client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig ($KUBECONFIG, read now)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]  # kubernetes.config: no types
        return kubernetes.client.ApiClient()
    config_file = os.environ.get("KUBECONFIG") or None
    client: kubernetes.client.ApiClient
    client = kubernetes.config.new_client_from_config(config_file=config_file)  # type: ignore[no-untyped-call]  # as above
    return client


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient, timeout: float) -> None:
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.timeout = timeout

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, _request_timeout=self.timeout, **kwargs)

    async def _run_raw(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """A call whose answer is not needed: not deserialized, but read, so that its connection goes back
        to the pool (an unread ``_preload_content=False`` response keeps it: every such call would open a
        new TLS connection to the apiserver)."""

        def call() -> None:
            resp = fn(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
            resp.drain_conn()
            resp.release_conn()

        await asyncio.to_thread(call)

    async def read_secret(self, namespace: str, name: str, field: str, policy: FleetPolicy) -> Any:
        """The Secret, if it exists and carries the policy's opt-in label; SecretProblem says what is wrong."""
        try:
            secret = await self._run(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise SecretProblem(
                    "SecretNotFound", f"Secret {namespace}/{name} (named by {field}) does not exist; create it"
                ) from None
            raise
        if not secret_opted_in(secret.metadata.labels, policy):
            raise SecretProblem(
                "SecretNotOptedIn",
                f"Secret {namespace}/{name} (named by {field}) lacks the label {policy.secret_label}=true that lets "
                f"LightlyWorkers use it; if this fleet may use it: {opt_in_hint(namespace, name, policy)}",
            )
        return secret

    async def read_secret_value(
        self, namespace: str, name: str, key: str, field: str, policy: FleetPolicy
    ) -> tuple[str, str]:
        """(decoded value, raw base64 value) of one key; SecretProblem says what is missing."""
        secret = await self.read_secret(namespace, name, field, policy)
        raw = (secret.data or {}).get(key)
        if not raw:
            raise SecretProblem(
                "SecretKeyMissing", f"Secret {namespace}/{name} has no key {key!r} (named by {field}); add it"
            )
        return base64.b64decode(raw).decode().strip(), raw

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> bool:
        """False if it already exists (a retried create)."""
        try:
            await self._run_raw(self.core.create_namespaced_pod, namespace, body)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self._run_raw(self.core.delete_namespaced_pod, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def apply_secret(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create or update a Secret we own (``ownerReferences`` of ``body``: a Secret of that name owned by
        anything else is refused with SecretProblem); True if something changed."""
        name = body["metadata"]["name"]
        try:
            current = await self._run(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await self._run(self.core.create_namespaced_secret, namespace, body)
            return True
        owners = {ref["uid"] for ref in body["metadata"].get("ownerReferences") or []}
        if not owners & {ref.uid for ref in current.metadata.owner_references or []}:
            owner = ", ".join(f"{r['kind']} {r['name']}" for r in body["metadata"].get("ownerReferences") or [])
            raise SecretProblem(
                "SecretNotOwned",
                f"Secret {namespace}/{name} exists and is not owned by {owner}; the operator never overwrites a "
                "Secret it did not create: delete or rename that Secret",
            )
        if (current.data or {}) == body["data"] and current.type == body["type"]:
            return False
        await self._run(self.core.patch_namespaced_secret, name, namespace, {"data": body["data"]})
        return True

    async def patch_fleet_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch a LightlyWorker's status subresource (outside kopf's handler patches)."""
        from .spec import GROUP, PLURAL, VERSION

        await self._run_raw(
            self.custom.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
