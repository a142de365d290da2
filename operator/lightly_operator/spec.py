"""The LightlyWorker spec with its defaults, parsed once per reconcile.

The CRD's schema defaults and validates on a real cluster; the operator applies the same defaults
itself so it behaves the same where no defaulting happens (older API servers, tests), and reports
an invalid spec as a condition that names the field.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

GROUP = "lightly.ai"
VERSION = "v1alpha1"
PLURAL = "lightlyworkers"
KIND = "LightlyWorker"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SecretKeyRef(_Spec):
    name: str = Field(min_length=1)
    key: str = Field("token", min_length=1)


class ApiRef(_Spec):
    url: str | None = Field(None, pattern=r"^https?://[^/?#]+")
    token_secret_ref: SecretKeyRef = Field(alias="tokenSecretRef")


class RegistrySecretRef(_Spec):
    name: str = Field(min_length=1)
    key: str = Field("container-credentials.json", min_length=1)


class RegistryCredentials(_Spec):
    registry: str = Field("eu.gcr.io", min_length=1)
    secret_ref: RegistrySecretRef = Field(alias="secretRef")


class UpdateStrategy(_Spec):
    type: Literal["WhenIdle", "Recreate"] = "WhenIdle"


class Autoscaling(_Spec):
    enabled: bool = False
    min_replicas: int = Field(default=0, ge=0, alias="minReplicas")
    max_replicas: int = Field(default=10, ge=0, alias="maxReplicas")
    scale_down_delay_seconds: int = Field(default=300, ge=0, alias="scaleDownDelaySeconds")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class Deregistration(_Spec):
    timeout_seconds: int = Field(default=300, ge=0, alias="timeoutSeconds")


class PodTemplateMeta(_Spec):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplate(_Spec):
    metadata: PodTemplateMeta = Field(default_factory=PodTemplateMeta)
    spec: dict[str, Any] = Field(default_factory=dict)


class LightlyWorkerSpec(_Spec):
    replicas: int = Field(1, ge=0)
    labels: list[str] = Field(default_factory=list)
    api: ApiRef
    image: str | None = Field(None, min_length=1)  # empty: refused (not "the default image")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(None, alias="imagePullPolicy")
    image_pull_secrets: list[dict[str, str]] = Field(default_factory=list, alias="imagePullSecrets")
    registry_credentials: RegistryCredentials | None = Field(None, alias="registryCredentials")
    resources: dict[str, Any] | None = None
    shm_size: str = Field("1024Mi", alias="shmSize", pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")
    output: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    lightly: dict[str, Any] | None = None
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class_name: str | None = Field(None, alias="priorityClassName", min_length=1)
    runtime_class_name: str | None = Field(None, alias="runtimeClassName", min_length=1)
    service_account_name: str | None = Field(None, alias="serviceAccountName", min_length=1)
    env: list[dict[str, Any]] = Field(default_factory=list)
    pod_template: PodTemplate = Field(default_factory=PodTemplate, alias="podTemplate")
    worker_config: dict[str, str | int | float | bool] = Field(default_factory=dict, alias="workerConfig")
    update_strategy: UpdateStrategy = Field(default_factory=UpdateStrategy, alias="updateStrategy")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    deregistration: Deregistration = Field(default_factory=Deregistration)

    @model_validator(mode="after")
    def _checks(self) -> LightlyWorkerSpec:
        for key in self.worker_config:
            if key in ("token", "worker.worker_id") or key.startswith("worker.worker_id"):
                raise ValueError(f"workerConfig.{key} is set by the operator; remove it")
        if any(not label.strip() for label in self.labels):
            raise ValueError("labels must not contain empty strings")
        for e in self.env:
            if e.get("name") in ("LIGHTLY_TOKEN", "LIGHTLY_TOKEN_FILE", "LIGHTLY_SERVER_LOCATION"):
                raise ValueError(f"env {e.get('name')} is set by the operator; remove it")
        return self


class SpecError(ValueError):
    """An invalid spec, with a message that names the fields to fix."""


def parse_spec(spec: dict[str, Any]) -> LightlyWorkerSpec:
    try:
        return LightlyWorkerSpec.model_validate(dict(spec))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"spec.{loc}: {msg}" if loc else msg)
        raise SpecError("; ".join(parts)) from None
