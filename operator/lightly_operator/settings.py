"""Operator settings: one frozen object, built once by the CLI (``from_env`` and flags) and passed in.

Nothing is read from the environment at import time, nor by ``OperatorSettings()`` (its defaults).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightly_protocol.names import (
    PREFIX,
    K8sWorkerName,
    cluster_name_problem,
    k8s_worker_name,
    legacy_k8s_worker_name,
    parse_k8s_worker_name,
    parse_legacy_k8s_worker_name,
    parse_renamed_k8s_worker_name,
)

from . import __version__
from .policy import SECRET_LABEL, FleetPolicy

DEFAULT_IMAGE = f"ghcr.io/lightly-worker-fleet/worker:{__version__}"


#: the environment variable of each setting (``OperatorSettings.from_env``)
ENV = {
    "api_url": "LIGHTLY_SERVER_LOCATION",
    "worker_image": "LIGHTLY_WORKER_IMAGE",
    "cluster_name": "LIGHTLY_CLUSTER_NAME",
    "resync_seconds": "LIGHTLY_OPERATOR_RESYNC_SECONDS",
    "sweep_seconds": "LIGHTLY_OPERATOR_SWEEP_SECONDS",
    "orphan_grace_seconds": "LIGHTLY_OPERATOR_ORPHAN_GRACE_SECONDS",
    "call_timeout_seconds": "LIGHTLY_OPERATOR_CALL_TIMEOUT_SECONDS",
    "offline_grace_seconds": "LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS",
    "ca_certs": "LIGHTLY_CA_CERTS",
    "allowed_api_urls": "LIGHTLY_OPERATOR_ALLOWED_API_URLS",
    "allowed_images": "LIGHTLY_OPERATOR_ALLOWED_IMAGES",
    "allowed_registries": "LIGHTLY_OPERATOR_ALLOWED_REGISTRIES",
    "allowed_service_accounts": "LIGHTLY_OPERATOR_ALLOWED_SERVICE_ACCOUNTS",
    "allow_host_path": "LIGHTLY_OPERATOR_ALLOW_HOST_PATH",
    "allow_host_namespaces": "LIGHTLY_OPERATOR_ALLOW_HOST_NAMESPACES",
    "allow_privileged": "LIGHTLY_OPERATOR_ALLOW_PRIVILEGED",
    "secret_label": "LIGHTLY_OPERATOR_SECRET_LABEL",
}
_STRINGS = {"api_url", "worker_image", "cluster_name", "ca_certs", "secret_label"}
#: comma-separated lists
_LISTS = {"allowed_api_urls", "allowed_images", "allowed_registries", "allowed_service_accounts"}
_FLAGS = {"allow_host_path", "allow_host_namespaces", "allow_privileged"}


class SettingsError(ValueError):
    """A setting that cannot work; the message says which and what to change."""


def _flag(var: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{var}={raw!r}: use true or false")


@dataclass(frozen=True)
class OperatorSettings:
    api_url: str = "http://lightly-server:8080"
    worker_image: str = DEFAULT_IMAGE
    cluster_name: str = "default"
    #: reconcile every fleet this often (level-triggered; pods and the API are re-read)
    resync_seconds: float = 10.0
    #: look for orphaned API workers this often
    sweep_seconds: float = 300.0
    #: an API worker must be this old before the sweep may remove it (protects fleets being created)
    orphan_grace_seconds: float = 600.0
    #: timeout of every call to the Lightly API and to Kubernetes
    call_timeout_seconds: float = 10.0
    #: a worker OFFLINE this long while its pod is ready is reported as Degraded
    offline_grace_seconds: float = 120.0
    #: namespaces this operator watches (empty: all); the orphan sweep stays inside them
    namespaces: tuple[str, ...] = ()
    #: grace period of worker pods (a busy worker finishes or hands its run back within it)
    termination_grace_seconds: int = 300
    #: PEM file of CA certificates trusted for https:// APIs besides the system's (a private CA); "": none
    ca_certs: str = ""
    #: what fleets may ask for (``policy.FleetPolicy``); an empty list means its narrow default
    allowed_api_urls: tuple[str, ...] = ()
    allowed_images: tuple[str, ...] = ()
    allowed_registries: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    allow_host_path: bool = False
    allow_host_namespaces: bool = False
    allow_privileged: bool = False
    #: the label (value "true") a Secret needs before a fleet may use it; "": none needed
    secret_label: str = SECRET_LABEL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OperatorSettings:
        """The settings the environment gives (see ``ENV``), with ``overrides`` (e.g. from flags) on top.

        A number's variable that is set but empty means its default."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in ENV.items():
            if name in _STRINGS:
                if var in env:
                    values[name] = env[var]
            elif name in _LISTS:
                values[name] = tuple(x.strip() for x in env.get(var, "").split(",") if x.strip())
            elif name in _FLAGS:
                values[name] = _flag(var, env.get(var, ""))
            elif env.get(var):
                values[name] = float(env[var])
        return cls(**{**values, **overrides})

    def __post_init__(self) -> None:
        problem = cluster_name_problem(self.cluster_name)
        if problem:
            raise SettingsError(f"LIGHTLY_CLUSTER_NAME: {problem}")
        if self.ca_certs:
            self.tls_verify()  # a missing or unreadable CA file is an error at start

    def tls_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify=``: the system's CAs, plus those of ``ca_certs`` when set."""
        if not self.ca_certs:
            return True
        ctx = ssl.create_default_context()
        try:
            ctx.load_verify_locations(cafile=self.ca_certs)
        except FileNotFoundError:
            raise SettingsError(f"LIGHTLY_CA_CERTS={self.ca_certs}: no such file; mount the CA's PEM file") from None
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise SettingsError(
                f"LIGHTLY_CA_CERTS={self.ca_certs} cannot be used ({why}); it must be a readable file of PEM "
                "CA certificates (-----BEGIN CERTIFICATE-----)"
            ) from None
        return ctx

    def policy(self) -> FleetPolicy:
        """What fleets may ask for: these settings, each empty allowlist narrowed to its default."""
        return FleetPolicy.defaults_for(
            self.api_url,
            self.worker_image,
            api_urls=self.allowed_api_urls,
            images=self.allowed_images,
            registries=self.allowed_registries,
            service_accounts=self.allowed_service_accounts,
            allow_host_path=self.allow_host_path,
            allow_host_namespaces=self.allow_host_namespaces,
            allow_privileged=self.allow_privileged,
            secret_label=self.secret_label,
        )

    def name_prefix(self) -> str:
        """Every API worker name this operator makes starts with this (see ``lightly_protocol.names``)."""
        return f"{PREFIX}_{self.cluster_name}_"

    def worker_name(self, namespace: str, name: str, index: int) -> str:
        """Stable API name of one replica: a crash mid-registration can never create a duplicate."""
        return k8s_worker_name(self.cluster_name, namespace, name, index)

    def legacy_worker_name(self, namespace: str, name: str, index: int) -> str:
        """The name operators before the current scheme registered (dots; the real API rejects it)."""
        return legacy_k8s_worker_name(self.cluster_name, namespace, name, index)

    def parse_worker_name(self, worker_name: str, fleets: Iterable[tuple[str, str]] = ()) -> K8sWorkerName | None:
        """The replica a name of this cluster's operator stands for, else None.

        ``legacy`` is set for names of the old dotted scheme and for such registrations the server
        renamed to ``<current name>-<6 hex>``: the reconciler replaces them, the sweep removes unused ones.

        ``fleets``: the (namespace, name) pairs known to exist; they resolve shortened names, which
        otherwise come back with ``name=None`` (a fleet that is not known: gone).
        """
        fleets = fleets if isinstance(fleets, (list, tuple)) else list(fleets)
        return (
            parse_k8s_worker_name(worker_name, self.cluster_name, fleets)
            or parse_legacy_k8s_worker_name(worker_name, self.cluster_name)
            or parse_renamed_k8s_worker_name(worker_name, self.cluster_name, fleets)
        )
