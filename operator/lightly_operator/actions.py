"""What a reconcile does to Kubernetes and the API: registrations, pods, the pull Secret.

Every action takes one ``ActContext`` (the fleet, its spec and what was observed) and records what it
changed in the context's ``ActResult`` (the workers it registered and deregistered, the problems it met:
what the status reads) and in the fleet's memo. Failures are logged and retried by the next reconcile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
from kubernetes.client import ApiException

from .api_access import ApiView
from .builders import CredentialsError, build_ca_secret, build_pod, build_pull_secret
from .kube import Kube, SecretProblem
from .lightly_api import ApiProblem, LightlyApi
from .memo import FleetMemo
from .metrics import OperatorMetrics
from .plan import Plan
from .settings import OperatorSettings
from .spec import LightlyWorkerSpec
from .status import Condition, PodView

#: the longest backoff before a failed replica's pod is created again
MAX_BACKOFF_SECONDS = 300.0


def apiserver_message(exc: ApiException) -> str:
    """The apiserver's own words from a refused call (its Status's message), cut to 800 characters."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.body or exc.reason)[:800]


@dataclass
class ActResult:
    """What one reconcile's actions did, for the status: the registrations they made and undid, the problems."""

    registered: dict[int, str] = field(default_factory=dict)  # replica index -> worker id registered (or renamed)
    deregistered: dict[int, str] = field(default_factory=dict)  # replica index -> worker id deregistered
    problems: list[Condition] = field(default_factory=list)  # Degraded: pull or CA Secret, a refused pod, ...
    registration_problem: Condition | None = None  # Registered: a registration failed

    def applied_to(self, observed: Mapping[int, str]) -> dict[int, str]:
        """Replica index -> worker id after the actions: ``observed`` with what they (de)registered
        (deregistrations come last in a reconcile)."""
        after = {**observed, **self.registered}
        for i in self.deregistered:
            after.pop(i, None)
        return after


@dataclass
class ActContext:
    """One fleet's reconcile as its actions see it; what they change is recorded in ``done``."""

    body: dict[str, Any]
    spec: LightlyWorkerSpec
    memo: FleetMemo
    logger: kopf.Logger
    observed: Mapping[int, str]  # replica index -> worker id, as observed (the actions never write it)
    by_index: dict[int, list[PodView]]
    api: LightlyApi
    url: str
    checksum: str = ""
    done: ActResult = field(default_factory=ActResult)

    @property
    def registered(self) -> dict[int, str]:
        """Replica index -> worker id now: the observed registrations, changed by what the actions did."""
        return self.done.applied_to(self.observed)

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])


class FleetActions:
    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics

    async def sync_pull_secret(self, ctx: ActContext, pods: Sequence[PodView]) -> None:
        """Keep the dockerconfigjson pull Secret equal to the key file; pods that never got their image
        retry at once after a change, not after the kubelet's backoff. A problem goes into ``ctx.done``.

        Running pods are not restarted for a changed key: the kubelet reads pull Secrets only to pull.
        """
        creds = ctx.spec.registry_credentials
        assert creds is not None
        try:
            key, _ = await self.kube.read_secret_value(
                ctx.namespace,
                creds.secret_ref.name,
                creds.secret_ref.key,
                "spec.registryCredentials.secretRef",
                self.settings.policy,
            )
            changed = await self.kube.apply_secret(ctx.namespace, build_pull_secret(ctx.body, creds.registry, key))
        except SecretProblem as exc:
            ctx.done.problems.append(Condition("Degraded", True, f"Registry{exc.reason}", str(exc)))
            return
        except CredentialsError as exc:
            ctx.done.problems.append(Condition("Degraded", True, "RegistryCredentialsInvalid", str(exc)))
            return
        if changed:
            await self._retry_image_pulls(ctx, pods)

    async def sync_ca_secret(self, ctx: ActContext) -> str | None:
        """Keep the Secret ``<fleet>-api-ca`` equal to the CA file the operator trusts (LIGHTLY_CA_CERTS);
        its PEM text, None after a problem (in ``ctx.done``). A new CA changes the pods' checksum: the fleet rolls."""
        path = self.settings.ca_certs
        try:
            pem = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            ctx.done.problems.append(
                Condition(
                    "Degraded",
                    True,
                    "ApiCaUnreadable",
                    f"cannot read the operator's LIGHTLY_CA_CERTS={path} ({exc}); workers would not trust the API",
                )
            )
            return None
        try:
            await self.kube.apply_secret(ctx.namespace, build_ca_secret(ctx.body, pem))
        except SecretProblem as exc:
            ctx.done.problems.append(Condition("Degraded", True, f"ApiCa{exc.reason}", str(exc)))
            return None
        except ApiException as exc:
            ctx.done.problems.append(
                Condition(
                    "Degraded", True, "ApiCaSecretFailed", f"cannot write the CA Secret: {apiserver_message(exc)}"
                )
            )
            return None
        return pem

    async def _retry_image_pulls(self, ctx: ActContext, pods: Sequence[PodView]) -> None:
        """Delete the pods whose container never started for want of its image (no job can run in them):
        they are recreated at once and pull with the new credentials."""
        for pod in pods:
            if pod.image_pull and not pod.deleting:
                try:
                    await self._delete_pod(ctx, pod.name)
                    self.metrics.pod_actions.labels("delete").inc()
                    ctx.logger.info(
                        f"deleted pod {pod.name}: it could not pull its image; retrying with new credentials"
                    )
                except ApiException as exc:
                    ctx.logger.warning(f"could not delete pod {pod.name} ({exc.status} {exc.reason}); kubelet retries")

    async def rename_legacy(self, ctx: ActContext, view: ApiView, busy: set[int]) -> None:
        """Move idle replicas registered under the old name scheme (dots) to the current one.

        Register the new name, delete the replica's pod (it is recreated with the new worker id) and
        deregister the old worker. A busy replica keeps its old registration until it is idle. What
        fails here is retried next time or, for the old registration, removed by the orphan sweep.
        """
        namespace, name, api = ctx.namespace, ctx.name, ctx.api
        for i, wid in sorted(ctx.registered.items()):
            w = view.states.get(wid)
            if w is None:
                continue
            ref = self.settings.parse_worker_name(w.name, [(namespace, name)])
            if ref is None or not ref.legacy or (ref.namespace, ref.name, ref.index) != (namespace, name, i):
                continue
            if i in busy:
                continue
            new_name = self.settings.worker_name(namespace, name, i)
            try:
                new_id = await api.register(new_name, ctx.spec.labels, "")
            except ApiProblem as exc:
                ctx.logger.warning(f"could not re-register legacy-named worker {wid} ({w.name}): {exc}; will retry")
                continue
            ctx.done.registered[i] = ctx.memo.registered[i] = new_id
            self.metrics.registrations.labels("register", "ok").inc()
            try:
                for pod in ctx.by_index.get(i, []):
                    if pod.worker_id == wid and not pod.deleting:
                        await self._delete_pod(ctx, pod.name)
                await api.delete_worker(wid)
            except (ApiException, ApiProblem) as exc:
                ctx.logger.warning(f"legacy-named worker {wid} ({w.name}) not removed yet ({exc}); the sweep will")
                continue
            ctx.memo.deregistered.add(wid)
            self.metrics.registrations.labels("deregister", "ok").inc()
            ctx.logger.info(f"replica {i}: legacy-named worker {wid} ({w.name}) replaced by {new_id} ({new_name})")

    async def apply(self, ctx: ActContext, p: Plan) -> None:
        """Carry the plan out: register, then delete and create pods, then deregister.

        What it did goes into ``ctx.done``: a refused pod, then the problem that stopped the registrations."""
        problem = await self._register(ctx, p)
        ctx.memo.registered.update({i: ctx.done.registered[i] for i in p.register if i in ctx.done.registered})
        self._note_failures(ctx)
        await self._delete_pods(ctx, p)
        refused = await self._create_pods(ctx, p)
        await self._deregister(ctx, p)
        if refused:
            ctx.done.problems.append(refused)
        if problem:
            ctx.done.problems.append(problem)
            ctx.done.registration_problem = Condition("Registered", False, problem.reason, problem.message)

    async def _register(self, ctx: ActContext, p: Plan) -> Condition | None:
        for i in p.register:
            try:
                ctx.done.registered[i] = await ctx.api.register(
                    self.settings.worker_name(ctx.namespace, ctx.name, i), ctx.spec.labels, ""
                )
                self.metrics.registrations.labels("register", "ok").inc()
            except ApiProblem as exc:
                self.metrics.registrations.labels("register", exc.reason).inc()
                self.metrics.api_errors.labels(exc.reason).inc()
                return Condition("Degraded", True, exc.reason, str(exc))
        return None

    def _note_failures(self, ctx: ActContext) -> None:
        """Count each failed pod once per replica; a failed replica backs off (2^n s) before its next pod."""
        memo, now = ctx.memo, time.monotonic()
        for pods in ctx.by_index.values():
            for pod in pods:
                if pod.phase == "Failed" and pod.name not in memo.seen_failed:
                    memo.seen_failed.add(pod.name)
                    n = memo.failures[pod.index] = memo.failures.get(pod.index, 0) + 1
                    memo.retry_at[pod.index] = now + min(MAX_BACKOFF_SECONDS, 2.0**n)
                elif pod.ready:
                    memo.failures.pop(pod.index, None)

    async def _delete_pod(self, ctx: ActContext, name: str) -> None:
        """Delete one of the fleet's pods; it counts as terminating until the pod index shows it so
        (``memo.deleted``), so a stale index cannot make it look alive."""
        await self.kube.delete_pod(ctx.namespace, name)
        ctx.memo.deleted[name] = time.monotonic()

    async def _delete_pods(self, ctx: ActContext, p: Plan) -> None:
        for pod_name, reason in p.delete:
            try:
                await self._delete_pod(ctx, pod_name)
                self.metrics.pod_actions.labels("delete").inc()
                ctx.logger.info(f"deleted pod {pod_name}: {reason}")
            except ApiException as exc:
                ctx.logger.warning(f"could not delete pod {pod_name} ({exc.status} {exc.reason}); will retry")

    async def _create_pods(self, ctx: ActContext, p: Plan) -> Condition | None:
        """Create the plan's pods; the last refusal of the apiserver (its message), for the status and an Event."""
        refused = None
        registered = ctx.registered
        for i in p.create:
            wid = registered.get(i)
            if not wid:
                continue
            pod = build_pod(ctx.body, ctx.spec, i, wid, ctx.checksum, self.settings, ctx.url)
            name = pod["metadata"]["name"]
            try:
                created = await self.kube.create_pod(ctx.namespace, pod)
                view = PodView(name, i, ctx.checksum, wid, "Pending", False, False, None)
                ctx.memo.created[name] = (time.monotonic(), view)
                if created:
                    self.metrics.pod_actions.labels("create").inc()
                    ctx.logger.info(f"created pod {name} for worker {wid}")
            except ApiException as exc:
                message = apiserver_message(exc)
                ctx.logger.warning(f"could not create pod {name} ({exc.status} {exc.reason}: {message}); will retry")
                refused = Condition(
                    "Degraded",
                    True,
                    "PodRejected",
                    f"the apiserver refused pod {name} ({exc.status} {exc.reason}): {message}",
                )
        return refused

    async def _deregister(self, ctx: ActContext, p: Plan) -> None:
        registered = ctx.registered
        for i in p.deregister:
            wid = registered[i]
            try:
                await ctx.api.delete_worker(wid)
                self.metrics.registrations.labels("deregister", "ok").inc()
                ctx.done.deregistered[i] = wid
                ctx.memo.registered.pop(i, None)
                ctx.memo.deregistered.add(wid)
                ctx.logger.info(f"deregistered worker {wid} (replica {i} removed)")
            except ApiProblem as exc:
                self.metrics.registrations.labels("deregister", exc.reason).inc()
                ctx.logger.warning(f"could not deregister worker {wid}: {exc}; will retry")
