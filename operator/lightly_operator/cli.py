"""``lightly-operator``: runs the LightlyWorker operator (kopf).

Settings come from flags and the environment: LIGHTLY_SERVER_LOCATION (default API URL),
LIGHTLY_WORKER_IMAGE (default worker image), LIGHTLY_CLUSTER_NAME (prefix of registered worker
names), LIGHTLY_OPERATOR_RESYNC_SECONDS, LIGHTLY_OPERATOR_SWEEP_SECONDS, ... (see settings.py:
OperatorSettings and ProcessOptions).
Kubernetes access: the in-cluster service account, else the standard kubeconfig ($KUBECONFIG).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightly_protocol.logsafe import configure_logging
from lightly_protocol.options import add_flags, flag_values, load

from . import __version__

if TYPE_CHECKING:
    from .settings import OperatorSettings, ProcessOptions


def build_parser() -> argparse.ArgumentParser:
    """One flag per setting of ``ProcessOptions``; each flag's default is None, so ``process_options``
    looks further (the environment, the default)."""
    from .settings import ProcessOptions

    p = argparse.ArgumentParser(
        prog="lightly-operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        conflict_handler="resolve",  # --namespace below replaces the one add_flags makes
    )
    add_flags(p, ProcessOptions)  # OperatorSettings has variables only, no flags
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        dest="namespace",
        default=None,
        help="watch this namespace (repeatable); default: all namespaces",
    )
    p.add_argument("--version", action="version", version=f"lightly-operator {__version__}")
    return p


def process_options(args: argparse.Namespace) -> ProcessOptions:
    """The process's options: the flags given, else the environment, else the defaults."""
    from .settings import ProcessOptions

    given = flag_values(args, ProcessOptions)
    given["namespace"] = tuple(args.namespace or ())
    return load(ProcessOptions, os.environ, given)


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


async def run(args: argparse.Namespace, process: ProcessOptions) -> int:
    import kopf

    from .handlers import build_operator
    from .kube import load_client
    from .leader import LeaseLock
    from .metrics_http import MetricsEndpoint

    app = build_operator(operator_settings(args))
    metrics = MetricsEndpoint(app.reconciler.metrics.registry, process.metrics_token_file)
    metrics_runner = await metrics.serve(process.metrics_port) if process.metrics_port else None
    health = Health()
    runner = await health.serve(process.health_port) if process.health_port else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # the operator runs on Linux (a container)
        loop.add_signal_handler(sig, stop.set)

    lease = LeaseLock(load_client(), process.lease_namespace) if process.elects_leader() else None
    try:
        health.role = "standby" if lease else "leader"
        if lease and not await lease.acquire(stop):
            return 0
        health.role = "leader"
        operator = asyncio.create_task(
            kopf.operator(
                **watch_scope(process.namespace),
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
    """The operator's settings: the environment's (``OperatorSettings.from_env``), the watched namespaces
    from flags."""
    from .settings import OperatorSettings

    return OperatorSettings.from_env(os.environ, namespaces=tuple(args.namespace or ()))


def watch_scope(namespaces: Sequence[str] | None) -> dict[str, Any]:
    """kopf's scope arguments: the listed namespaces, else cluster-wide.

    kopf wants a collection for ``namespaces`` even when cluster-wide (``None`` crashes its namespace
    observer with ``TypeError: 'NoneType' object is not iterable``).
    """
    names = tuple(namespaces or ())
    return {"clusterwide": not names, "namespaces": names}


def main(argv: list[str] | None = None) -> int:
    from lightly_protocol.options import OptionError

    args = build_parser().parse_args(argv)
    try:
        process = process_options(args)
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(process.log_level)  # tokens redacted; httpx's request lines (?token=...) silenced
    import kubernetes

    try:
        return asyncio.run(run(args, process))
    except OptionError as exc:  # a SettingsError too
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
