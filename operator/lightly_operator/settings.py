"""Operator settings: frozen objects in the one settings idiom (``lightly_protocol.options``), built once
by the CLI from flags, the environment and defaults, and passed in.

``OperatorSettings``: what the reconciler, the handlers and the policy use. ``ProcessOptions``: what the
process itself needs (ports, the metrics token file, leader election, the watched namespaces, logging).
Nothing is read from the environment at import time, nor by ``OperatorSettings()`` (its defaults): the
CLI hands ``os.environ`` to ``OperatorSettings.from_env`` and ``load(ProcessOptions, ...)``.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightly_protocol import tls
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
from lightly_protocol.options import OptionError, load, option

from . import __version__
from .policy import SECRET_LABEL, FleetPolicy

DEFAULT_IMAGE = f"ghcr.io/lightly-worker-fleet/worker:{__version__}"

#: the values ``--leader-election`` takes
LEADER_ELECTION = ("auto", "on", "off")


class SettingsError(OptionError):
    """A setting that cannot work; the message says which and what to change."""


@dataclass(frozen=True)
class OperatorSettings:
    api_url: str = option(
        "http://lightly-server:8080", env="LIGHTLY_SERVER_LOCATION", help="API URL when spec.api.url is unset"
    )
    worker_image: str = option(DEFAULT_IMAGE, env="LIGHTLY_WORKER_IMAGE", help="image when spec.image is unset")
    cluster_name: str = option(
        "default",
        env="LIGHTLY_CLUSTER_NAME",
        keep_empty=True,  # set but empty is refused (__post_init__), never silently "default"
        help="part of registered names k8s_<cluster>_<ns>_<name>_<index>: a DNS label of at most 40 characters",
    )
    resync_seconds: float = option(
        10.0,
        env="LIGHTLY_OPERATOR_RESYNC_SECONDS",
        help="reconcile every fleet this often (level-triggered; pods and the API are re-read)",
    )
    sweep_seconds: float = option(
        300.0, env="LIGHTLY_OPERATOR_SWEEP_SECONDS", help="look for orphaned API workers this often"
    )
    orphan_grace_seconds: float = option(
        600.0,
        env="LIGHTLY_OPERATOR_ORPHAN_GRACE_SECONDS",
        help="an API worker must be this old before the sweep may remove it (protects fleets being created)",
    )
    call_timeout_seconds: float = option(
        10.0,
        env="LIGHTLY_OPERATOR_CALL_TIMEOUT_SECONDS",
        help="timeout of every call to the Lightly API and to Kubernetes",
    )
    offline_grace_seconds: float = option(
        120.0,
        env="LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS",
        help="a worker OFFLINE this long while its pod is ready is reported as Degraded",
    )
    #: namespaces this operator watches (empty: all); the orphan sweep stays inside them (``--namespace``,
    #: a ``ProcessOptions`` flag, passed in by the CLI)
    namespaces: tuple[str, ...] = ()
    #: grace period of worker pods (a busy worker finishes or hands its run back within it)
    termination_grace_seconds: int = 300
    ca_certs: str = option(
        "",
        env=tls.CA_SETTING,
        help="PEM file of CA certificates trusted for https:// APIs besides the system's (a private CA); empty: none",
    )
    # what fleets may ask for (``policy.FleetPolicy``); an empty list means its narrow default
    allowed_api_urls: tuple[str, ...] = option(
        (), env="LIGHTLY_OPERATOR_ALLOWED_API_URLS", help="comma-separated URLs a fleet's spec.api.url may name"
    )
    allowed_images: tuple[str, ...] = option(
        (), env="LIGHTLY_OPERATOR_ALLOWED_IMAGES", help="comma-separated image patterns the pods' containers may run"
    )
    allowed_registries: tuple[str, ...] = option(
        (),
        env="LIGHTLY_OPERATOR_ALLOWED_REGISTRIES",
        help="comma-separated registries spec.registryCredentials.registry may name",
    )
    allowed_service_accounts: tuple[str, ...] = option(
        (),
        env="LIGHTLY_OPERATOR_ALLOWED_SERVICE_ACCOUNTS",
        help="comma-separated service accounts worker pods may run as",
    )
    allow_host_path: bool = option(False, env="LIGHTLY_OPERATOR_ALLOW_HOST_PATH", help="allow hostPath volumes")
    allow_host_namespaces: bool = option(
        False, env="LIGHTLY_OPERATOR_ALLOW_HOST_NAMESPACES", help="allow hostNetwork, hostPID, hostIPC"
    )
    allow_privileged: bool = option(
        False,
        env="LIGHTLY_OPERATOR_ALLOW_PRIVILEGED",
        help="allow privileged containers, privilege escalation, added capabilities, root users",
    )
    secret_label: str = option(
        SECRET_LABEL,
        env="LIGHTLY_OPERATOR_SECRET_LABEL",
        keep_empty=True,  # "": no label needed
        help='the label (value "true") a Secret needs before a fleet may use it; empty: none needed',
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> OperatorSettings:
        """The settings the environment gives (``load``), with ``overrides`` on top; a value that cannot be
        parsed is a ``SettingsError`` naming the variable."""
        try:
            return load(cls, os.environ if environ is None else environ, **overrides)
        except OptionError as exc:
            raise exc if isinstance(exc, SettingsError) else SettingsError(str(exc)) from None

    def __post_init__(self) -> None:
        problem = cluster_name_problem(self.cluster_name)
        if problem:
            raise SettingsError(f"LIGHTLY_CLUSTER_NAME: {problem}")
        if self.ca_certs:
            self.tls_verify()  # a missing or unreadable CA file is an error at start

    def tls_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify=``: the default CAs, or the system's plus those of ``ca_certs`` when set."""
        try:
            return tls.trust_context(self.ca_certs)
        except tls.TrustFileError as exc:
            raise SettingsError(str(exc)) from None

    @functools.cached_property
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


@dataclass(frozen=True)
class ProcessOptions:
    """What the ``lightly-operator`` process needs besides ``OperatorSettings``: its flags and variables."""

    #: ``--namespace``/``-n`` is repeatable (the CLI replaces the flag ``add_flags`` makes with one that is)
    namespace: tuple[str, ...] = option(
        (), flag="--namespace", help="watch this namespace (repeatable); default: all namespaces"
    )
    metrics_port: int = option(
        8080,
        env="LIGHTLY_OPERATOR_METRICS_PORT",
        flag="--metrics-port",
        help="port of /metrics (Prometheus); 0 disables",
    )
    metrics_token_file: str | None = option(
        None,
        env="LIGHTLY_OPERATOR_METRICS_TOKEN_FILE",
        flag="--metrics-token-file",
        help="file with a token: /metrics then answers only 'Authorization: Bearer <token>' (401 otherwise); "
        "read at every scrape",
    )
    health_port: int = option(
        8081,
        env="LIGHTLY_OPERATOR_HEALTH_PORT",
        flag="--health-port",
        help="port of the /healthz liveness endpoint; 0 disables",
    )
    leader_election: str = option(
        "auto",
        flag="--leader-election",
        help="hold a coordination.k8s.io Lease before acting: auto, on or off (auto: on inside a cluster)",
    )
    lease_namespace: str = option(
        "default", env="POD_NAMESPACE", flag="--lease-namespace", help="namespace of the Lease (the operator's own)"
    )
    log_level: str = option("INFO", env="LIGHTLY_OPERATOR_LOG_LEVEL", flag="--log-level", help="log level")
    kubernetes_service_host: str = option(
        "", env="KUBERNETES_SERVICE_HOST", help="set inside a cluster (by the kubelet): --leader-election auto elects"
    )

    def __post_init__(self) -> None:
        if self.leader_election not in LEADER_ELECTION:
            raise OptionError(f"--leader-election={self.leader_election!r}: use {', '.join(LEADER_ELECTION)}")

    def elects_leader(self) -> bool:
        """Whether to hold the Lease before acting: ``on``, or ``auto`` inside a cluster."""
        return self.leader_election == "on" or (self.leader_election == "auto" and bool(self.kubernetes_service_host))
