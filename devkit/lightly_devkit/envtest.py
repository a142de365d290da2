"""A real Kubernetes control plane for tests and benchmarks (envtest style): etcd + kube-apiserver
(+ kube-controller-manager), started from the binaries in ``KUBEBUILDER_ASSETS``, on free loopback ports.

No pytest dependency: tests wrap it in a session fixture (``tests/kube/``), benchmarks and scripts use it
directly::

    from lightly_devkit.envtest import ControlPlane, api_client

    with ControlPlane() as cp:                     # assets: $KUBEBUILDER_ASSETS (or ControlPlane(assets=...))
        cp.kubectl("apply", "-f", "crds/lightlyworkers.lightly.ai.yaml")
        core = kubernetes.client.CoreV1Api(cp.api_client())
        print(cp.url, cp.kubeconfig, cp.kubectl("get", "ns", "-o", "name").stdout)
    # or: cp = ControlPlane().start(); ...; cp.stop()

The binaries: ``/work/shared/k8s/unpack`` prints such a folder here; elsewhere ``setup-envtest use 1.28 -p path``
(that set has no ``kube-controller-manager``: ``cp.has_controller_manager`` is then False, and there is no
ownerReference garbage collection, no namespace deletion, no default ServiceAccounts).

What :meth:`ControlPlane.start` does (in ``work_dir``, a fresh temporary folder unless given):

* a CA and a serving certificate for ``127.0.0.1``/``localhost`` (``openssl``), service-account signing keys,
  a static admin token (``system:masters``) in ``tokens.csv``;
* etcd (data on ``/dev/shm`` when there is one), then kube-apiserver (RBAC on), waits for ``/readyz``, then
  kube-controller-manager when its binary is in the assets folder, and waits for its ``/healthz``;
* ``kubeconfig`` (YAML, CA embedded, admin token: for kubectl, the ``kubernetes`` client and kopf) and
  ``kubeconfig_for(namespace=..., token=...)`` writes more (e.g. a default namespace for plain ``kubectl get``,
  or a ServiceAccount's token from ``cp.kubectl("create", "token", SA, "-n", NS)``);
* every component logs to ``work_dir/<component>.log``; a failure raises :class:`ControlPlaneError` with the
  tail of every log.

:meth:`ControlPlane.stop` stops the components in reverse order by PID (SIGTERM, then SIGKILL) and removes the
temporary folders it created (kept when ``keep=True`` or the start failed). Children get SIGKILL when the thread
that started them dies (Linux ``PR_SET_PDEATHSIG``): start it from a thread that outlives its use (pytest's main
thread is fine), or pass ``die_with_parent=False``.

Other helpers: :func:`api_client` (a ``kubernetes.client.ApiClient`` from a kubeconfig file, no global state),
:func:`kubectl` (``$KUBECTL``, else ``/usr/bin/kubectl``, else the assets' or ``$PATH``'s; proxy variables
cleared), :meth:`ControlPlane.connection_info` (a ``kopf.ConnectionInfo`` for a pre-filled kopf vault), and
:func:`find_assets` (the folder, or None with :func:`assets_missing_reason`).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from .net import PROXY_VARS, free_port

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "KubectlError",
    "api_client",
    "assets_missing_reason",
    "find_assets",
    "kubectl",
    "kubectl_binary",
]

ASSETS_ENV = "KUBEBUILDER_ASSETS"
SERVICE_CIDR = "10.96.0.0/16"
LOOPBACK_NO_PROXY = "127.0.0.1,localhost"


class ControlPlaneError(RuntimeError):
    """The control plane could not start (the message holds the tail of every component's log)."""


class KubectlError(subprocess.CalledProcessError):
    """``kubectl`` exited non-zero; ``str()`` shows the command, stderr and stdout."""

    def __str__(self) -> str:
        cmd = " ".join(self.cmd[1:] if isinstance(self.cmd, list | tuple) else [str(self.cmd)])
        return f"kubectl failed ({self.returncode}): {cmd}\n{self.stderr or ''}{self.output or ''}".rstrip()


# ---------------------------------------------------------------------------- finding binaries


def find_assets(assets: str | os.PathLike[str] | None = None) -> Path | None:
    """The assets folder (argument, else ``$KUBEBUILDER_ASSETS``) if it holds etcd and kube-apiserver."""
    raw = assets if assets is not None else os.environ.get(ASSETS_ENV)
    if not raw:
        return None
    path = Path(raw)
    if all((path / b).is_file() and os.access(path / b, os.X_OK) for b in ("etcd", "kube-apiserver")):
        return path
    return None


def assets_missing_reason(assets: str | os.PathLike[str] | None = None) -> str | None:
    """None when :func:`find_assets` finds the binaries, else a sentence saying what is missing and how to fix it."""
    if find_assets(assets) is not None:
        return None
    raw = assets if assets is not None else os.environ.get(ASSETS_ENV)
    hint = "(here: KUBEBUILDER_ASSETS=$(/work/shared/k8s/unpack); elsewhere: setup-envtest use 1.28 -p path)"
    if not raw:
        return f"${ASSETS_ENV} is not set: no etcd/kube-apiserver binaries for a real control plane {hint}"
    return f"{ASSETS_ENV}={raw} does not hold executable etcd and kube-apiserver binaries {hint}"


def kubectl_binary(assets: str | os.PathLike[str] | None = None) -> str:
    """``$KUBECTL``, else ``/usr/bin/kubectl``, else ``kubectl`` in the assets folder, else on ``$PATH``."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    if os.access("/usr/bin/kubectl", os.X_OK):
        return "/usr/bin/kubectl"
    found = find_assets(assets)
    if found is not None and os.access(found / "kubectl", os.X_OK):
        return str(found / "kubectl")
    return shutil.which("kubectl") or "kubectl"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` without proxy variables (loopback traffic must not go through a proxy)."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(NO_PROXY=LOOPBACK_NO_PROXY, no_proxy=LOOPBACK_NO_PROXY)
    env.update(extra or {})
    return env


def kubectl(
    *args: str,
    kubeconfig: str | os.PathLike[str] | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    cache_dir: str | os.PathLike[str] | None = None,
    binary: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run kubectl (text in/out); raise :class:`KubectlError` (with stderr) on failure when ``check``."""
    cmd = [binary or kubectl_binary()]
    if kubeconfig is not None:
        cmd.append(f"--kubeconfig={kubeconfig}")
    if cache_dir is not None:
        cmd.append(f"--cache-dir={cache_dir}")
    cmd.extend(args)
    env = clean_env({"KUBECONFIG": str(kubeconfig)} if kubeconfig is not None else None)
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if check and proc.returncode != 0:
        raise KubectlError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc


def api_client(kubeconfig: str | os.PathLike[str], *, context: str | None = None) -> Any:
    """A ``kubernetes.client.ApiClient`` configured from ``kubeconfig`` only (no global default configuration)."""
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kubeconfig), context=context, client_configuration=configuration, persist_config=False
    )
    configuration.proxy = None
    return kubernetes.client.ApiClient(configuration)


# ---------------------------------------------------------------------------- processes


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Component:
    def __init__(self, name: str, cmd: list[str], log_path: Path) -> None:
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: Mapping[str, str], die_with_parent: bool) -> None:
        preexec: Callable[[], None] | None = _die_with_parent if die_with_parent and sys.platform == "linux" else None
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                preexec_fn=preexec,  # only prctl in the child: no locks
            )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")


def _make_pki(d: Path) -> None:
    """ca.{crt,key}, apiserver.{crt,key} (127.0.0.1, localhost, kubernetes.default...), sa.{key,pub}."""
    if shutil.which("openssl") is None:
        raise ControlPlaneError("openssl is needed to make the control plane's certificates (apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
        "-subj", "/CN=envtest-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=d,
    )  # fmt: skip
    sans = [
        "IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
    ]  # fmt: skip
    (d / "apiserver.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr",
        "-subj", "/CN=kube-apiserver", cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "apiserver.crt", "-days", "3650", "-extfile", "apiserver.ext", cwd=d,
    )  # fmt: skip
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=d)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)
    for key in ("ca.key", "apiserver.key", "sa.key"):
        (d / key).chmod(0o600)


ETCD_DATA_PREFIX = "envtest-etcd-"
OWNER_FILE = "owner.pid"  # the PID of the Python process that made the folder (next to etcd's member/ folder)


def _remove_stale_etcd_data(base: Path) -> None:
    """Remove etcd data folders (on tmpfs: memory) whose owner process is gone (killed before ``stop()``)."""
    for d in base.glob(f"{ETCD_DATA_PREFIX}*"):
        try:
            pid = int((d / OWNER_FILE).read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (OSError, ValueError):
            continue  # no owner file (yet), or another user's: leave it


def _get(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None, timeout: float = 2.0) -> str:
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with opener.open(req, timeout=timeout) as resp:
        return resp.read().decode(errors="replace")


# ---------------------------------------------------------------------------- the control plane


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on free loopback ports; see the module docstring.

    Attributes after :meth:`start`: ``url`` (``https://127.0.0.1:PORT``), ``token`` (admin, ``system:masters``),
    ``ca_file``, ``kubeconfig`` (a Path), ``work_dir``, ``has_controller_manager``, ``pids`` (name -> PID).
    """

    def __init__(
        self,
        assets: str | os.PathLike[str] | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        controller_manager: bool | None = None,
        startup_timeout: float = 90.0,
        keep: bool = False,
        die_with_parent: bool = True,
        apiserver_args: Sequence[str] = (),
        controller_manager_args: Sequence[str] = (),
        attempts: int = 3,
    ) -> None:
        found = find_assets(assets)
        if found is None:
            raise ControlPlaneError(assets_missing_reason(assets) or "no assets")
        self.assets = found
        kcm = found / "kube-controller-manager"
        has_kcm = kcm.is_file() and os.access(kcm, os.X_OK)
        if controller_manager and not has_kcm:
            raise ControlPlaneError(f"controller_manager=True but {kcm} is missing")
        self.has_controller_manager = has_kcm if controller_manager is None else bool(controller_manager)
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="envtest-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout = startup_timeout
        self.keep = keep
        self.die_with_parent = die_with_parent
        self.apiserver_args = list(apiserver_args)
        self.controller_manager_args = list(controller_manager_args)
        self.attempts = max(1, attempts)
        self.token = secrets.token_hex(24)
        self.ca_file = self.work_dir / "pki" / "ca.crt"
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.url = ""
        self.etcd_url = ""
        self._etcd_data: Path | None = None
        self._components: list[_Component] = []
        self._started = False

    # -- lifecycle

    def start(self) -> Self:
        if self._started:
            return self
        _make_pki(self.work_dir / "pki")
        (self.work_dir / "tokens.csv").write_text(f"{self.token},admin,admin,system:masters\n")
        for attempt in range(1, self.attempts + 1):
            try:
                self._start_once()
                break
            except ControlPlaneError as exc:
                self._stop_components()
                logs = " ".join(c.tail(200) for c in self._components)
                self._components = []
                if attempt < self.attempts and "address already in use" in logs:
                    continue  # a free port was taken between choosing and binding it: choose again
                self.keep = True  # keep the logs for a look (etcd's data is not needed for that)
                self._remove_etcd_data()
                raise ControlPlaneError(f"{exc}\n(work dir kept: {self.work_dir})") from None
            except BaseException:
                self._stop_components()
                self._remove_etcd_data()
                raise
        self._started = True
        atexit.register(self.stop)
        return self

    def _start_once(self) -> None:
        env = clean_env()
        # etcd: data on tmpfs when there is one (fsync on a disk makes every write slow)
        shm = Path("/dev/shm")
        self._remove_etcd_data()
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.work_dir
        _remove_stale_etcd_data(base)
        self._etcd_data = Path(tempfile.mkdtemp(prefix=ETCD_DATA_PREFIX, dir=base))
        (self._etcd_data / OWNER_FILE).write_text(str(os.getpid()))
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        etcd = self._component(
            "etcd",
            [
                str(self.assets / "etcd"), "--name=default", f"--data-dir={self._etcd_data}",
                f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=default={peer}", "--initial-cluster-state=new", "--log-level=warn",
            ],
        )  # fmt: skip
        etcd.start(env, self.die_with_parent)
        deadline = time.monotonic() + self.startup_timeout
        self._wait("etcd", etcd, deadline, lambda: '"health":"true"' in _get(f"{self.etcd_url}/health"))

        pki = self.work_dir / "pki"
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        apiserver = self._component(
            "kube-apiserver",
            [
                str(self.assets / "kube-apiserver"), "--bind-address=127.0.0.1", f"--secure-port={port}",
                "--advertise-address=127.0.0.1", f"--etcd-servers={self.etcd_url}",
                f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={self.work_dir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC", f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--endpoint-reconciler-type=none", "--profiling=false", "--allow-privileged=true",
                # without the controller-manager no default ServiceAccount appears: pods could not be created
                *([] if self.has_controller_manager else ["--disable-admission-plugins=ServiceAccount"]),
                *self.apiserver_args,
            ],
        )  # fmt: skip
        apiserver.start(env, self.die_with_parent)
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self._wait(
            "kube-apiserver", apiserver, deadline, lambda: _get(f"{self.url}/readyz", context=ctx, token=self.token)
        )
        self.write_kubeconfig(self.kubeconfig)

        if self.has_controller_manager:
            kcm_port = free_port()
            kcm_dir = self.work_dir / "controller-manager"
            (kcm_dir / "flexvolume").mkdir(parents=True, exist_ok=True)
            kubeconfig = str(self.kubeconfig)
            kcm = self._component(
                "kube-controller-manager",
                [
                    str(self.assets / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                    "--authentication-skip-lookup=true", "--bind-address=127.0.0.1", f"--secure-port={kcm_port}",
                    "--leader-elect=false", "--use-service-account-credentials=false",
                    f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
                    f"--flex-volume-plugin-dir={kcm_dir / 'flexvolume'}", f"--cert-dir={kcm_dir}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--controllers=*,-service-lb-controller,-cloud-node-lifecycle-controller,-node-route-controller",
                    *self.controller_manager_args,
                ],
            )  # fmt: skip
            kcm.start(env, self.die_with_parent)
            insecure = ssl.create_default_context()
            insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # its own self-signed cert
            self._wait(
                "kube-controller-manager",
                kcm,
                deadline,
                lambda: _get(f"https://127.0.0.1:{kcm_port}/healthz", context=insecure).strip() == "ok",
            )

    def _component(self, name: str, cmd: list[str]) -> _Component:
        c = _Component(name, cmd, self.work_dir / f"{name}.log")
        self._components.append(c)
        return c

    def _wait(self, what: str, comp: _Component, deadline: float, check: Callable[[], Any]) -> None:
        last: object = None
        while True:
            if not comp.alive():
                code = comp.proc.returncode if comp.proc is not None else None
                raise ControlPlaneError(f"{what} exited with {code} while starting\n{self.logs_tail()}")
            try:
                if check():
                    return
            except (OSError, urllib.error.URLError, ssl.SSLError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} was not ready within {self.startup_timeout:.0f}s (last: {last!r})\n{self.logs_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the components in reverse order (by PID) and remove the temporary folders this object made."""
        atexit.unregister(self.stop)
        self._stop_components()
        self._started = False
        self._remove_etcd_data()
        if self._own_work_dir and not self.keep:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _remove_etcd_data(self) -> None:
        if self._etcd_data is not None:
            shutil.rmtree(self._etcd_data, ignore_errors=True)
            self._etcd_data = None

    def _stop_components(self) -> None:
        for comp in reversed(self._components):
            comp.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self._components if c.pid is not None}

    def alive(self) -> bool:
        return self._started and all(c.alive() for c in self._components)

    def logs_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of every component's log, each under a header with its path."""
        return "\n".join(f"--- {c.name} ({c.log_path}):\n{c.tail(lines)}" for c in self._components)

    # -- clients

    def write_kubeconfig(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str | None = None,
        token: str | None = None,
        user: str = "admin",
    ) -> Path:
        """Write a kubeconfig (CA embedded; the admin token unless ``token``; a default ``namespace``)."""
        ca = base64.b64encode(self.ca_file.read_bytes()).decode()
        context: dict[str, Any] = {"cluster": "envtest", "user": user}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": {"server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": user, "user": {"token": token or self.token}}],
            "contexts": [{"name": "envtest", "context": context}],
            "current-context": "envtest",
            "preferences": {},
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        path.chmod(0o600)
        return path

    def kubeconfig_for(self, *, namespace: str | None = None, token: str | None = None, name: str = "") -> Path:
        """A further kubeconfig in the work dir, e.g. with a default namespace or a ServiceAccount's token."""
        label = name or f"{namespace or 'all'}-{secrets.token_hex(3)}"
        return self.write_kubeconfig(self.work_dir / "kubeconfigs" / label, namespace=namespace, token=token)

    def api_client(self, kubeconfig: str | os.PathLike[str] | None = None) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this control plane (admin unless another kubeconfig)."""
        return api_client(kubeconfig or self.kubeconfig)

    def kubectl(
        self, *args: str, kubeconfig: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """:func:`kubectl` with this control plane's kubeconfig and a private discovery cache."""
        kwargs.setdefault("cache_dir", self.work_dir / "kubectl-cache")
        kwargs.setdefault("binary", kubectl_binary(self.assets))
        return kubectl(*args, kubeconfig=kubeconfig or self.kubeconfig, **kwargs)

    def connection_info(self, *, token: str | None = None, namespace: str | None = None) -> Any:
        """A ``kopf.ConnectionInfo`` (CA-verified, admin token) for a pre-filled kopf credentials vault."""
        import kopf

        return kopf.ConnectionInfo(
            server=self.url, ca_path=str(self.ca_file), token=token or self.token, default_namespace=namespace
        )

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<ControlPlane {self.url or '-'} {state} work_dir={self.work_dir}>"
