"""``lightly-operator``: runs the LightlyWorker operator (kopf).

Settings come from flags and the environment: LIGHTLY_SERVER_LOCATION (default API URL),
LIGHTLY_WORKER_IMAGE (default worker image), LIGHTLY_CLUSTER_NAME (prefix of registered worker
names), LIGHTLY_OPERATOR_RESYNC_SECONDS, LIGHTLY_OPERATOR_SWEEP_SECONDS, ... (see settings.py).
Kubernetes access: the in-cluster service account, else the standard kubeconfig ($KUBECONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from lightly_protocol.logsafe import configure_logging

from . import __version__

if TYPE_CHECKING:
    from .settings import OperatorSettings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightly-operator", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeatable); default: all namespaces",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("LIGHTLY_OPERATOR_METRICS_PORT", "8080")),
        help="port of /metrics (Prometheus); 0 disables",
    )
    p.add_argument(
        "--metrics-token-file",
        default=os.environ.get("LIGHTLY_OPERATOR_METRICS_TOKEN_FILE") or None,
        help="file with a token: /metrics then answers only 'Authorization: Bearer <token>' (401 otherwise); "
        "read at every scrape [env LIGHTLY_OPERATOR_METRICS_TOKEN_FILE]",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ.get("LIGHTLY_OPERATOR_HEALTH_PORT", "8081")),
        help="port of the /healthz liveness endpoint; 0 disables",
    )
    p.add_argument(
        "--leader-election",
        choices=["auto", "on", "off"],
        default="auto",
        help="hold a coordination.k8s.io Lease before acting (auto: on inside a cluster)",
    )
    p.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    p.add_argument("--log-level", default=os.environ.get("LIGHTLY_OPERATOR_LOG_LEVEL", "INFO"))
    p.add_argument("--version", action="version", version=f"lightly-operator {__version__}")
    return p


class Health:
    """``/healthz`` for every replica: 200 while waiting for the Lease (standby) or while kopf runs."""

    def __init__(self) -> None:
        self.role = "starting"
        self.operator: asyncio.Task[Any] | None = None

    async def handle(self, _request: Any) -> Any:
        from aiohttp import web

        if self.operator is not None and self.operator.done():
            return web.json_response({"status": "failed", "role": self.role}, status=500)
        return web.json_response({"status": "ok", "role": self.role})

    async def serve(self, port: int) -> Any:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/healthz", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", port).start()
        return runner


async def run(args: argparse.Namespace) -> int:
    import kopf

    from .handlers import build_operator
    from .kube import load_client
    from .leader import LeaseLock
    from .metrics_http import MetricsEndpoint

    app = build_operator(operator_settings(args))
    metrics = MetricsEndpoint(app.reconciler.metrics.registry, args.metrics_token_file)
    metrics_runner = await metrics.serve(args.metrics_port) if args.metrics_port else None
    health = Health()
    runner = await health.serve(args.health_port) if args.health_port else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the operator runs on Linux (a container)
        loop.add_signal_handler(sig, stop.set)

    elect = args.leader_election == "on" or (
        args.leader_election == "auto" and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    )
    lease = LeaseLock(load_client(), args.lease_namespace) if elect else None
    try:
        health.role = "standby" if lease else "leader"
        if lease and not await lease.acquire(stop):
            return 0
        health.role = "leader"
        operator = asyncio.create_task(
            kopf.operator(
                **watch_scope(args.namespace),
                registry=app.registry,
                memo=app.memo(),
                standalone=True,  # leader election above replaces kopf's peering
                stop_flag=stop,
            )
        )
        health.operator = operator
        keeper = asyncio.create_task(lease.keep(stop)) if lease else None
        waiters = [operator] + ([keeper] if keeper else [])
        done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if keeper in done and not stop.is_set():
            stop.set()  # lost leadership: stop acting
            await operator
            return 3
        stop.set()
        await operator
        return 0
    finally:
        if lease:
            await asyncio.to_thread(lease.release)  # a successor need not wait for the Lease to expire
        if runner is not None:
            await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    """The operator's settings: the environment's (see ``settings.ENV``), the watched namespaces from flags."""
    from .settings import OperatorSettings

    return OperatorSettings.from_env(namespaces=tuple(args.namespace))


def watch_scope(namespaces: list[str] | None) -> dict[str, Any]:
    """kopf's scope arguments: the listed namespaces, else cluster-wide.

    kopf wants a collection for ``namespaces`` even when cluster-wide (``None`` crashes its namespace
    observer with ``TypeError: 'NoneType' object is not iterable``).
    """
    names = tuple(namespaces or ())
    return {"clusterwide": not names, "namespaces": names}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)  # tokens redacted; httpx's request lines (?token=...) silenced
    import kubernetes

    from .settings import SettingsError

    try:
        return asyncio.run(run(args))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except kubernetes.config.ConfigException as exc:
        print(
            f"error: no Kubernetes credentials ({exc}); run inside a cluster (service account) or set KUBECONFIG "
            "to a kubeconfig file",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
