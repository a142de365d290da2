"""Reconciliation of one LightlyWorker fleet: level-triggered and idempotent.

Every run goes observe -> plan -> act -> status, KubeRay's shape:

* ``observe``: the spec, the token Secret, the fleet's pods (from a kopf index, no LIST) and the API's
  view of the workers (shared between fleets, one poll per interval); who is busy.
* ``plan``: a pure function decides the registrations, pod creations and deletions, deregistrations.
* ``FleetActions``: carries them out (and keeps the pull Secret and legacy names up to date), recording what
  it registered and deregistered and the problems it met in an ``ActResult``.
* ``compute_status``: a pure function turns the observation, the plan and the ``ActResult`` into the status
  (``None``: nothing changed).

Failures become conditions, Events and log lines with a reason a human can act on; nothing is retried in
a hot loop. The reconciler also owns the deregistration of deleted fleets and the orphan sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import kopf
from kubernetes.client import ApiException

from .actions import ActContext, ActResult, FleetActions
from .api_access import ApiAccess
from .builders import build_pod, ca_secret_name, pull_secret_name, spec_checksum
from .cleanup import Deregistration, OrphanSweep
from .fleet_status import FleetStatus, compute_status, invalid_spec_status
from .indexes import FleetIndex, PodIndex, pods_of
from .kube import Kube, SecretProblem
from .memo import FleetKey, FleetMemo, FleetMemos
from .metrics import OperatorMetrics
from .observe import Observation, observe
from .plan import Plan, plan
from .policy import check_fleet, secret_references
from .settings import OperatorSettings
from .sizing import desired_replicas
from .spec import LightlyWorkerSpec, SpecError, parse_spec
from .status import Condition, PodView, PullErrors, now_iso

log = logging.getLogger("lightly_operator")

#: pod events of one fleet within this many seconds are folded into one reconcile
POD_EVENT_DEBOUNCE_SECONDS = 0.2


class FleetReconciler:
    """The operator's state and logic: kopf's handlers hold one (in kopf's memo) and call its public methods."""

    def __init__(self, settings: OperatorSettings, kube: Kube, metrics: OperatorMetrics) -> None:
        self.settings = settings
        self.kube = kube
        self.metrics = metrics
        self.apis = ApiAccess(settings, kube)
        self.actions = FleetActions(settings, kube, metrics)
        self.deregistration = Deregistration(settings, kube, self.apis, metrics)
        self.sweep = OrphanSweep(settings, self.apis, metrics)
        self.memos = FleetMemos()
        self.pull_errors = PullErrors()
        self._pending: dict[FleetKey, asyncio.Task[None]] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """A (re)started operator starts afresh: memos hold asyncio objects of one event loop."""
        self.memos.clear()
        self._pending.clear()

    async def close(self) -> None:
        await self.apis.close()

    def memo(self, memo: MutableMapping[str, Any], key: FleetKey) -> FleetMemo:
        """The fleet's memo, kept in kopf's per-object ``memo`` (and by key, for pod events)."""
        return self.memos.of(memo, key)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(
        self, body: dict[str, Any], pods: Sequence[PodView], memo: FleetMemo, logger: kopf.Logger
    ) -> dict[str, Any] | None:
        """Reconcile one fleet; the status to write, None when it has not changed."""
        async with memo.lock:
            started = time.perf_counter()
            try:
                return await self._reconcile(body, pods, memo, logger)
            finally:
                self.metrics.reconcile_duration.observe(time.perf_counter() - started)

    async def _reconcile(
        self, body: dict[str, Any], pods: Sequence[PodView], memo: FleetMemo, logger: kopf.Logger
    ) -> dict[str, Any] | None:
        try:
            spec = parse_spec(body.get("spec") or {})
        except SpecError as exc:
            problem = Condition("Degraded", True, "InvalidSpec", str(exc))
            return self._publish(body, memo, invalid_spec_status(body, problem, now_iso()))
        refused = await self._refusal(body, spec)
        if refused is not None:
            return self._publish(body, memo, invalid_spec_status(body, refused, now_iso()))
        seen = await observe(body, spec, pods, memo, self.apis, self.metrics)
        ctx = None
        if seen.api is not None:
            ctx = ActContext(body, spec, memo, logger, seen.registered, seen.by_index, seen.api, seen.url)
        acted = ctx.done if ctx is not None else ActResult()  # what the actions did (nothing without the API)
        if ctx is not None and seen.view is not None:
            await self.actions.rename_legacy(ctx, seen.view, seen.busy)
        desired = desired_replicas(spec, seen.view, seen.busy, memo, time.monotonic())
        if ctx is not None and spec.registry_credentials:
            await self.actions.sync_pull_secret(ctx, seen.pods)
        ca_pem: str | None = ""
        if ctx is not None and self.settings.ca_certs:  # the workers get the CA the operator trusts
            ca_pem = await self.actions.sync_ca_secret(ctx)
        now = time.monotonic()
        the_plan = None
        if ctx is not None and seen.fp and ca_pem is not None:
            the_plan = await self._plan_and_act(ctx, seen, desired, now, ca_pem)
        status = compute_status(
            body,
            seen,
            the_plan,
            acted,
            desired=desired,
            settings=self.settings,
            offline_since=memo.offline_since,
            now=now,
            timestamp=now_iso(),
        )
        memo.offline_since = status.offline_since
        return self._publish(body, memo, status)

    async def _refusal(self, body: dict[str, Any], spec: LightlyWorkerSpec) -> Condition | None:
        """Why the operator's policy refuses this fleet (``policy.py``), else None: checked on the pod the
        operator would build, so ``podTemplate`` cannot get around it."""
        url = self.apis.url(spec)
        pod = build_pod(body, spec, 0, "policy-check", "policy", self.settings, url)["spec"]
        problems = check_fleet(body.get("spec") or {}, url, pod, self.settings.policy)
        if problems:
            return Condition("Degraded", True, "PolicyViolation", "; ".join(problems))
        # the token Secret is read (and its label checked) by observe; the pull Secret is the operator's own
        skip = {spec.api.token_secret_ref.name}
        if spec.registry_credentials:
            skip.add(pull_secret_name(body["metadata"]["name"]))
        if self.settings.ca_certs:
            skip.add(ca_secret_name(body["metadata"]["name"]))
        try:
            for name, where in dict(secret_references(pod)).items():
                if name not in skip:
                    await self.apis.check_secret(body["metadata"]["namespace"], name, where)
        except SecretProblem as exc:
            return Condition("Degraded", True, exc.reason, str(exc))
        except ApiException as exc:
            return Condition(
                "Degraded", True, "SecretUnreadable", f"cannot read a Secret the pods use: {exc.status} {exc.reason}"
            )
        return None

    async def _plan_and_act(
        self, ctx: ActContext, seen: Observation, desired: int, now: float, ca_pem: str = ""
    ) -> Plan:
        ctx.checksum = spec_checksum(ctx.body.get("spec") or {}, seen.fp, self.settings, seen.url, ca_pem)
        blocked = {i for i, t in ctx.memo.retry_at.items() if t > now}
        strategy = ctx.spec.update_strategy.type
        the_plan = plan(desired, ctx.registered, seen.by_index, seen.busy, ctx.checksum, strategy, blocked)
        await self.actions.apply(ctx, the_plan)
        if the_plan.deregister or the_plan.register:
            self.apis.invalidate(seen.url, seen.fp)
        return the_plan

    def _publish(self, body: Mapping[str, Any], memo: FleetMemo, status: FleetStatus) -> dict[str, Any] | None:
        """Events for new problems only (not on every reconcile), the metrics, and the status if it changed."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        for p in status.problems:
            if p.reason not in memo.warned:
                kopf.warn(
                    body,  # type: ignore[arg-type]  # kopf posts Events for a plain mapping's metadata too
                    reason=p.reason,
                    message=p.message[:1000],
                )
                log.warning("%s/%s: %s: %s", key[0], key[1], p.reason, p.message)
        memo.warned = {p.reason for p in status.problems}
        if status.worker_states is not None:
            self.metrics.snapshot.workers[key] = status.worker_states
        if status.pending_reasons is not None:
            self.metrics.snapshot.pending[key] = status.pending_reasons
        self.metrics.snapshot.phase[key] = status.phase
        return status.patch(body.get("status") or {})

    # ------------------------------------------------------------------ pod events

    def reconcile_soon(self, key: FleetKey, fleets: FleetIndex, pods: PodIndex) -> None:
        """A fleet's pod changed (scheduled, ready, failed, gone): reconcile that fleet now, not at the next
        timer tick. Bursts of pod events are folded into one reconcile per fleet."""
        if key not in self._pending:
            self._pending[key] = asyncio.create_task(self._react(key, fleets, pods))

    async def _react(self, key: FleetKey, fleets: FleetIndex, pods: PodIndex) -> None:
        await asyncio.sleep(POD_EVENT_DEBOUNCE_SECONDS)
        self._pending.pop(key, None)
        entries = fleets.get(key)
        memo = self.memos.get(key)
        if not entries or memo is None:
            return
        body = next(iter(entries)).body
        if body["metadata"].get("deletionTimestamp"):
            return
        # kopf's logger reads the plain dict's metadata like a Body's
        logger = kopf.LocalObjectLogger(body=body, settings=kopf.OperatorSettings())  # type: ignore[arg-type]
        try:
            new_status = await self.reconcile(body, pods_of(pods, key), memo, logger)
            if new_status:
                await self.kube.patch_fleet_status(key[0], key[1], new_status)
        except Exception as exc:  # the timer retries; never let a pod event crash the operator
            log.warning("reconcile of %s/%s after a pod change failed: %s", key[0], key[1], exc)

    # ------------------------------------------------------------------ cleanup

    async def deregister(self, body: Mapping[str, Any], pods: Sequence[PodView], logger: kopf.Logger) -> None:
        """A fleet is being deleted: stop its pods and deregister its workers (see ``Deregistration``)."""
        meta = body["metadata"]
        self.memos.forget((meta["namespace"], meta["name"]))
        await self.deregistration.run(body, pods, logger)

    async def sweep_orphans(
        self, body: Mapping[str, Any], fleets: FleetIndex, pods: PodIndex, logger: kopf.Logger
    ) -> None:
        """Deregister API workers that no fleet replica owns (see ``OrphanSweep``)."""
        await self.sweep.run(body, fleets, pods, logger)
