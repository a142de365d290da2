"""Run the emulator and kopf operators in background threads, each with its own event loop.

Nothing here depends on pytest; the fixtures in :mod:`tests.k8s.fixtures` wrap these helpers.

* :class:`EmulatorServer` serves a :class:`~tests.k8s.emulator.K8sEmulator` over plain http on a random
  loopback port from a daemon thread (so the test's own code may block: ``time.sleep``, ``subprocess.run``,
  the sync ``kubernetes`` client, ``kubectl`` -- none of it can stall the API server).
* :func:`write_kubeconfig` writes a kubeconfig (JSON, which is valid YAML) pointing at that URL; kopf's
  default login, ``kubernetes.config.load_kube_config(config_file=...)`` and ``kubectl --kubeconfig`` use it.
* :class:`OperatorThread` runs ``kopf.operator(...)`` in its own thread and loop with a pre-populated
  credentials vault (``kopf.ConnectionInfo(server=url, insecure=True)``), so no login handler and no
  ``$KUBECONFIG`` is needed; it stops through ``stop_flag`` and re-raises what the operator raised.
* :func:`fast_settings` shortens kopf's production delays (error backoffs, cancellation polling).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Self, TypeVar

import aiohttp.web

from .emulator import K8sEmulator

T = TypeVar("T")


class EmulatorServer:
    """A :class:`K8sEmulator` served on ``http://127.0.0.1:<random port>`` from a background thread."""

    def __init__(self, emulator: K8sEmulator | None = None, *, host: str = "127.0.0.1") -> None:
        self.emulator = emulator if emulator is not None else K8sEmulator()
        self.host = host
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: aiohttp.web.BaseRunner | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        self._thread = threading.Thread(target=self._main, name=f"k8s-emulator-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error is not None:
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        return self

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except BaseException as e:
            self._error = e
            self._started.set()
            loop.close()
            raise
        self._started.set()
        try:
            loop.run_forever()
        finally:
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _setup(self) -> None:
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=2.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        self.call(self.emulator.close_watches)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 10.0) -> T:
        """Run a plain function in the emulator's loop (e.g. to mutate its state atomically)."""
        assert self._loop is not None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except BaseException as e:
                future.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return future.result(timeout)

    def wait_watching(self, group: str, plural: str, *, count: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``count`` watch streams are open for the resource."""
        wait_until(lambda: self.emulator.watch_count(group, plural) >= count, timeout, f"a watch on {plural}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, what: str = "the condition", step=0.01) -> T:
    """Poll ``predicate`` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def write_kubeconfig(path: str | Path, url: str, *, namespace: str = "default") -> Path:
    """Write a kubeconfig with one context (``emulator``) pointing at ``url`` without auth or TLS."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [
            {"name": "emulator", "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace}}
        ],
        "current-context": "emulator",
        "preferences": {},
    }
    path = Path(path)
    path.write_text(json.dumps(config, indent=2))
    return path


def fast_settings(settings: Any = None) -> Any:
    """kopf settings with test-friendly delays (applied before the operator's own ``on.startup`` tweaks)."""
    import kopf

    settings = settings if settings is not None else kopf.OperatorSettings()
    settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1.0]
    settings.networking.request_timeout = 30
    settings.queueing.error_delays = [0.1, 0.2, 0.5, 1.0]
    settings.watching.reconnect_backoff = 0.05
    settings.background.cancellation_polling = 0.2
    settings.background.instant_exit_timeout = 0.5
    settings.queueing.exit_timeout = 1.0
    return settings


class OperatorThread:
    """``kopf.operator(...)`` in its own thread and event loop, connected to ``url`` via a pre-filled vault.

    Use as a context manager: entering waits for kopf's ready flag; exiting raises the stop flag, joins
    the thread and re-raises whatever the operator raised. Handlers come from ``registry`` (default:
    kopf's global registry, i.e. everything decorated with ``@kopf.on...`` at import time).
    """

    def __init__(
        self,
        url: str,
        *,
        registry: Any = None,
        settings: Any = None,
        namespaces: Collection[str] = (),
        clusterwide: bool | None = None,
        standalone: bool = True,
        memo: object | None = None,
        fast: bool = True,
        login: bool = False,
        startup_timeout: float = 15.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.url = url
        self.registry = registry
        self.settings = fast_settings(settings) if fast else settings
        self.namespaces = tuple(namespaces)
        self.clusterwide = (not self.namespaces) if clusterwide is None else clusterwide
        self.standalone = standalone
        self.memo = memo
        self.login = login  # True: let kopf log in itself (login handlers / $KUBECONFIG) instead of the vault
        self.startup_timeout, self.stop_timeout = startup_timeout, stop_timeout
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._main, name=f"kopf-operator-{id(self):x}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.ready_flag.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop_flag.set()
                raise RuntimeError(f"the kopf operator did not get ready: {self.error!r}") from self.error
        return self

    def _main(self) -> None:
        import kopf

        async def main() -> None:
            vault = None
            if not self.login:
                try:  # kopf does not export Vault; without it, kopf logs in itself via $KUBECONFIG
                    from kopf._cogs.structs.credentials import Vault
                except ImportError:  # pragma: no cover
                    pass
                else:
                    vault = Vault({"emulator": kopf.ConnectionInfo(server=self.url, insecure=True)})
            await kopf.operator(
                registry=self.registry,
                settings=self.settings,
                standalone=self.standalone,
                clusterwide=self.clusterwide,
                namespaces=self.namespaces,
                memo=self.memo,
                vault=vault,
                stop_flag=self.stop_flag,
                ready_flag=self.ready_flag,
            )

        try:
            asyncio.run(main())
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self.stop_flag.set()
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the kopf operator did not stop within {self.stop_timeout}s")
        if self.error is not None:
            raise RuntimeError(f"the kopf operator failed: {self.error!r}") from self.error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(Exception):  # do not mask the test's own failure
                self.stop()
