"""Bring-up time, API calls and memory of the LightlyWorker operator with N resources, on a real control plane.

Processes besides this driver, each measured from /proc:

* a real Kubernetes control plane, started for every N by ``lightly_devkit.envtest.ControlPlane`` from the
  binaries in ``$KUBEBUILDER_ASSETS`` (etcd, kube-apiserver, kube-controller-manager); the apiserver writes an
  audit log (level Metadata), which this driver reads to count every request by client (``User-Agent``: kopf,
  the operator's ``kubernetes`` client, this driver, the controller-manager) and by verb/resource/status code;
* ``lightly-server serve`` on a fresh SQLite database (``/metrics`` is scraped for request counts by route);
* the operator itself, ``lightly-operator --namespace bench --leader-election off`` with ``KUBECONFIG``
  pointing at the control plane (admin token) and the default resync interval (``--resync`` to change it).

There is no scheduler and no kubelet: this driver plays the kubelet. For every N: apply the CRD with kubectl,
create N ``LightlyWorker`` resources (replicas=1, one shared token Secret, one namespace) over
``--create-concurrency`` connections; a marker task watches pods and patches each new pod's ``pods/status``
to Running+Ready as soon as it appears (concurrently; its own time is reported); a status watcher records when
each resource first reports Registered=True and Ready=True. Then the operator idles for ``--idle`` seconds and
the API calls, Kubernetes requests, reconciles and CPU in that window are counted.

Run: ``KUBEBUILDER_ASSETS=$(/work/shared/k8s/unpack) .venv/bin/python bench/operator_scale.py --resources 100 1000``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightly_devkit import servers
from lightly_devkit.envtest import ControlPlane, assets_missing_reason
from lightly_devkit.net import PROXY_VARS, free_port
from lightly_devkit.pods import pod_running
from lightly_devkit.processes import proc_cpu_s, proc_mem_mb

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "lightlyworkers.lightly.ai.yaml"
VENV_BIN = Path(sys.executable).parent
NS = "bench"
GROUP, VERSION, PLURAL = "lightly.ai", "v1alpha1", "lightlyworkers"
DRIVER_UA = "bench-driver"
K8S_PROCS = {"apiserver": "kube-apiserver", "etcd": "etcd", "kcm": "kube-controller-manager"}
PROCS = ("operator", "apiserver", "etcd", "kcm", "server", "driver")
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
"""


def now() -> float:
    return time.monotonic()


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


# ------------------------------------------------------------------------------------- audit log

HTTP_VERB = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "update": "PUT", "patch": "PATCH"}
HTTP_VERB |= {"delete": "DELETE", "deletecollection": "DELETE"}


def who(user_agent: str) -> str:
    """Which client sent a request: this driver, kopf, the operator's ``kubernetes`` client, kcm, other."""
    if user_agent.startswith(DRIVER_UA):
        return "driver"
    if user_agent.startswith("kopf"):
        return "kopf"
    if user_agent.startswith("OpenAPI-Generator"):
        return "client"
    if user_agent.startswith("kube-controller-manager"):
        return "kcm"
    return "other"


def classify(event: dict[str, Any]) -> str | None:
    """``"kopf|PATCH lightlyworkers/status"``, ``"client|GET secrets"``, ``"kopf|GET pods (watch)"``,
    ``"client|POST pods 409"``... for one audit event, or None for a stage that is not counted (a watch counts
    when its response starts, every other request when it completes)."""
    verb, stage = event.get("verb", ""), event.get("stage")
    if stage != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
        return None
    ref = event.get("objectRef")
    if ref:
        label = f"{HTTP_VERB.get(verb, verb.upper())} {ref.get('resource', '?')}"
        if ref.get("subresource"):
            label += f"/{ref['subresource']}"
        if verb in ("list", "watch"):
            label += f" ({verb})"
    else:
        path = event.get("requestURI", "").split("?", 1)[0]
        label = f"{HTTP_VERB.get(verb, verb.upper())} {'/'.join(path.split('/')[:3]) or '/'} (discovery)"
    code = (event.get("responseStatus") or {}).get("code", 200)
    if code >= 300 and stage == "ResponseComplete":
        label += f" {code}"
    return f"{who(event.get('userAgent', ''))}|{label}"


class AuditCounter:
    """Counts the apiserver's audit log incrementally (the log backend writes each event before answering)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rest = path, 0, b""
        self.counts: Counter[str] = Counter()
        self.watching: Counter[str] = Counter()  # "who|resource|namespace" -> watches started

    def read(self) -> Counter[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return Counter(self.counts)
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            label = classify(event)
            if label is None:
                continue
            self.counts[label] += 1
            if event.get("verb") == "watch":
                ref = event.get("objectRef") or {}
                self.watching[f"{label.split('|')[0]}|{ref.get('resource')}|{ref.get('namespace', '')}"] += 1
        return Counter(self.counts)


# ------------------------------------------------------------------------------------- snapshots

PROM_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prom(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for line in text.splitlines():
        m = PROM_LINE.match(line)
        if m:
            labels = tuple(sorted(PROM_LABEL.findall(m.group(2) or "")))
            out[m.group(1), labels] = float(m.group(3))
    return out


@dataclass
class Snapshot:
    t: float
    api: Counter[str]  # "METHOD route" -> requests served by lightly-server
    k8s: Counter[str]  # "who|METHOD resource [code]" -> requests served by the apiserver (audit log)
    reconciles: float
    reconcile_s: float
    cpu: dict[str, float]
    mem: dict[str, float]


def diff(a: Counter[str], b: Counter[str]) -> Counter[str]:
    return Counter({k: b[k] - a.get(k, 0) for k in b if b[k] - a.get(k, 0)})


# ------------------------------------------------------------------------------------- one run


@dataclass
class World:
    tmp: Path
    cp: ControlPlane | None = None
    audit: AuditCounter | None = None
    kube_url: str = ""
    kube_token: str = ""
    ssl_ctx: ssl.SSLContext | None = None
    api_url: str = ""
    op_metrics: str = ""
    op_health: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def pid(self, name: str) -> int | None:
        if name in K8S_PROCS:
            return self.cp.pids.get(K8S_PROCS[name]) if self.cp is not None else None
        return self.procs[name].pid if name in self.procs else os.getpid()

    def stop(self) -> None:
        for name in ("operator", "server"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.cp is not None:
            self.cp.stop()


def start(world: World, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    log = world.tmp / f"{name}.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env or clean_env(), cwd=world.tmp)
    world.procs[name], world.logs[name] = proc, log
    return proc


async def wait_http(http: Any, url: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = now() + timeout
    while now() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            async with http.get(url) as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {timeout}s")


class Bench:
    def __init__(self, args: argparse.Namespace, n: int) -> None:
        self.args, self.n = args, n
        self.world = World(Path(tempfile.mkdtemp(prefix=f"opscale-{n}-")))
        self.http: Any = None
        # bring-up observations (monotonic times)
        self.t0 = 0.0
        self.created_at: dict[str, float] = {}
        self.pod_at: dict[str, float] = {}
        self.registered_at: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        self.marked: set[str] = set()
        self.mark_latency: list[float] = []
        self.mark_busy_s = 0.0
        self.all_ready = asyncio.Event()
        self.watch_errors: list[str] = []

    # -------------------------------------------------------------- setup

    def start_control_plane(self) -> None:
        """etcd + kube-apiserver (audit log on) + kube-controller-manager, the CRD, the namespace.

        Runs in the main thread on purpose: the components die with the thread that started them."""
        w, a = self.world, self.args
        kdir = w.tmp / "k8s"
        kdir.mkdir()
        (kdir / "audit-policy.yaml").write_text(AUDIT_POLICY)
        audit_log = kdir / "audit.log"
        w.cp = ControlPlane(
            work_dir=kdir,
            apiserver_args=[
                f"--audit-policy-file={kdir / 'audit-policy.yaml'}",
                f"--audit-log-path={audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=0",
                "--audit-log-maxbackup=0",
                *a.apiserver_arg,
            ],
        ).start()
        w.audit = AuditCounter(audit_log)
        w.kube_url, w.kube_token = w.cp.url, w.cp.token
        w.ssl_ctx = ssl.create_default_context(cafile=str(w.cp.ca_file))
        w.cp.kubectl("apply", "-f", str(a.crd))
        w.cp.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}", "--timeout=60s")
        w.cp.kubectl("create", "namespace", NS)

    async def setup(self) -> None:
        import aiohttp

        w = self.world
        self.start_control_plane()
        self.http = aiohttp.ClientSession(
            headers={"User-Agent": DRIVER_UA},
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            read_bufsize=2**22,
        )
        # pods need the namespace's default ServiceAccount (made by kube-controller-manager)
        deadline = now() + 60
        while w.cp is not None and w.cp.has_controller_manager:
            try:
                await self.k8s("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/default")
                break
            except RuntimeError:
                if now() > deadline:
                    raise
                await asyncio.sleep(0.2)

        db = f"sqlite:///{w.tmp / 'lightly.sqlite3'}"
        token = servers.create_token(db, "bench", env=clean_env(), timeout=None)
        srv = await asyncio.to_thread(
            servers.start_server,
            db,
            w.tmp / "server.log",
            artifacts_dir=w.tmp / "artifacts",
            env=clean_env(),
            timeout=60,
        )
        w.procs["server"], w.logs["server"] = srv.proc, srv.log_path
        w.api_url = srv.url

        secret = {"metadata": {"name": "lightly-token"}, "data": {"token": base64.b64encode(token.encode()).decode()}}
        await self.k8s("POST", f"/api/v1/namespaces/{NS}/secrets", secret)

        assert w.cp is not None
        kubeconfig = w.cp.kubeconfig_for(namespace=NS, name="operator")
        mport, hport = free_port(), free_port()
        env = clean_env()
        env.update(
            KUBECONFIG=str(kubeconfig),
            LIGHTLY_SERVER_LOCATION=w.api_url,
            LIGHTLY_WORKER_IMAGE="lightly-worker:bench",
            LIGHTLY_CLUSTER_NAME=f"bench{secrets.token_hex(2)}",
            # no worker process runs: its API worker stays OFFLINE; keep that from turning fleets Degraded
            LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS=str(self.args.offline_grace),
        )
        env.update(kv.split("=", 1) for kv in self.args.operator_env)
        if self.args.resync:
            env["LIGHTLY_OPERATOR_RESYNC_SECONDS"] = str(self.args.resync)
        if self.args.sweep:
            env["LIGHTLY_OPERATOR_SWEEP_SECONDS"] = str(self.args.sweep)
        op_cmd = [str(VENV_BIN / "lightly-operator"), "--namespace", NS, "--metrics-port", str(mport)]
        op_cmd += ["--health-port", str(hport), "--leader-election", "off", "--log-level", self.args.operator_log_level]
        op = start(w, "operator", op_cmd, env)
        w.op_metrics, w.op_health = f"http://127.0.0.1:{mport}/metrics", f"http://127.0.0.1:{hport}/healthz"
        await wait_http(self.http, w.op_health, op, "the operator")
        deadline = now() + 30
        assert w.audit is not None
        while True:
            w.audit.read()
            watches = {r: w.audit.watching[f"kopf|{r}|{NS}"] for r in ("pods", PLURAL)}
            if all(watches.values()):
                break
            if op.poll() is not None or now() > deadline:
                raise RuntimeError(f"the operator does not watch: {watches}; log: {w.logs['operator']}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # let startup finish (kopf's initial lists, imports) before the baseline

    async def k8s(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        w = self.world
        headers = {"Content-Type": ctype, "Authorization": f"Bearer {w.kube_token}"}
        async with self.http.request(
            method, f"{w.kube_url}{path}", data=json.dumps(body) if body is not None else None,
            headers=headers, ssl=w.ssl_ctx,
        ) as r:  # fmt: skip
            data = await r.json(content_type=None)
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status}: {data}")
            return data

    async def snapshot(self) -> Snapshot:
        w = self.world
        async with self.http.get(f"{w.api_url}/metrics") as r:
            api_prom = parse_prom(await r.text())
        async with self.http.get(w.op_metrics) as r:
            op_prom = parse_prom(await r.text())
        api: Counter[str] = Counter()
        for (name, labels), v in api_prom.items():
            if name == "lightly_server_http_request_duration_seconds_count":
                d = dict(labels)
                if d.get("route") not in ("/metrics", "/healthz"):
                    api[f"{d.get('method')} {d.get('route')} {d.get('status')}"] += int(v)
        assert w.audit is not None
        k8s = w.audit.read()
        rec = op_prom.get(("lightly_operator_reconcile_duration_seconds_count", ()), 0.0)
        rec_s = op_prom.get(("lightly_operator_reconcile_duration_seconds_sum", ()), 0.0)
        cpu = {name: proc_cpu_s(w.pid(name)) for name in PROCS}
        return Snapshot(now(), api, k8s, rec, rec_s, cpu, proc_mem_mb(w.pid("operator") or 0))

    # -------------------------------------------------------------- watchers

    async def watch(self, path: str, on_event: Any, started: asyncio.Event) -> None:
        """List, then watch from that resourceVersion; on any end of the stream (timeout, ERROR event, a
        dropped connection) list and watch again, as informers do. Handlers are idempotent."""
        w = self.world
        headers = {"Authorization": f"Bearer {w.kube_token}"}
        while True:
            try:
                listing = await self.k8s("GET", path)
                for obj in listing.get("items") or []:
                    await on_event("ADDED", obj)
                rv = listing["metadata"]["resourceVersion"]
                url = f"{w.kube_url}{path}?watch=true&resourceVersion={rv}&timeoutSeconds=1800"
                async with self.http.get(url, headers=headers, ssl=w.ssl_ctx) as r:
                    started.set()
                    while True:
                        line = await r.content.readline()
                        if not line:
                            raise ConnectionError("stream ended")
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev["type"] == "ERROR":
                            raise RuntimeError(f"ERROR event {ev['object']}")
                        await on_event(ev["type"], ev["object"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.watch_errors.append(f"{path}: {exc!r}")
                print(f"  (driver watch {path} restarts: {exc!r})", file=sys.stderr, flush=True)
                await asyncio.sleep(0.2)

    async def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        fleet = (meta.get("labels") or {}).get("lightly.ai/fleet")
        if kind == "DELETED" or not fleet or meta.get("deletionTimestamp") or meta["name"] in self.marked:
            return
        self.pod_at.setdefault(fleet, now())
        self.marked.add(meta["name"])
        self.mark_tasks.append(asyncio.create_task(self.mark(meta["name"])))

    async def mark(self, name: str) -> None:
        t = now()
        async with self.mark_sem:
            started = now()
            status = pod_running(image="lightly-worker:bench", image_id="x")
            await self.k8s(
                "PATCH",
                f"/api/v1/namespaces/{NS}/pods/{name}/status",
                {"status": status},
                "application/merge-patch+json",
            )
            self.mark_busy_s += now() - started
        self.mark_latency.append(now() - t)

    async def on_fleet(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        if conds.get("Registered") == "True" and any(w.get("workerId") for w in status.get("workers") or []):
            self.registered_at.setdefault(name, now())
        if conds.get("Ready") == "True" and status.get("readyReplicas") == 1:
            self.ready_at.setdefault(name, now())
            if len(self.ready_at) >= self.n:
                self.all_ready.set()

    # -------------------------------------------------------------- phases

    async def bring_up(self) -> dict[str, Any]:
        a = self.args
        self.mark_sem = asyncio.Semaphore(8)
        self.mark_tasks: list[asyncio.Task[None]] = []
        started = [asyncio.Event(), asyncio.Event()]
        watchers = [
            asyncio.create_task(self.watch(f"/api/v1/namespaces/{NS}/pods", self.on_pod, started[0])),
            asyncio.create_task(
                self.watch(f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", self.on_fleet, started[1])
            ),
        ]
        await asyncio.gather(*(e.wait() for e in started))
        s0 = await self.snapshot()
        names = [f"fleet-{i:04d}" for i in range(self.n)]
        queue = list(reversed(names))

        rate = self.args.create_rate
        order = {name: i for i, name in enumerate(names)}

        async def creator() -> None:
            while queue:
                name = queue.pop()
                if rate:  # paced: resource i is created no earlier than i / rate seconds after the start
                    await asyncio.sleep(max(0.0, self.t0 + order[name] / rate - now()))
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "LightlyWorker",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {"replicas": 1, "api": {"tokenSecretRef": {"name": "lightly-token"}}},
                }
                await self.k8s("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}", body)
                self.created_at[name] = now()

        self.t0 = now()
        await asyncio.gather(*(creator() for _ in range(a.create_concurrency)))
        t_created = now()
        s_created = await self.snapshot()
        timed_out = False
        try:
            await asyncio.wait_for(self.all_ready.wait(), a.timeout)
        except TimeoutError:
            timed_out = True
        s1 = await self.snapshot()
        await asyncio.gather(*self.mark_tasks)
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return {"s0": s0, "s_created": s_created, "s1": s1, "t_created": t_created, "timed_out": timed_out}

    async def idle(self) -> dict[str, Any]:
        await asyncio.sleep(self.args.settle)
        s2 = await self.snapshot()
        mem_samples = [s2.mem.get("VmRSS", 0.0)]
        end = now() + self.args.idle
        while now() < end:
            await asyncio.sleep(min(5.0, max(0.0, end - now())))
            mem_samples.append(proc_mem_mb(self.world.pid("operator")).get("VmRSS", 0.0))
        s3 = await self.snapshot()
        return {"s2": s2, "s3": s3, "rss_max_idle": max(mem_samples)}

    async def run(self) -> dict[str, Any]:
        keep = True
        try:
            await self.setup()
            base = await self.snapshot()
            profiler = None
            if self.args.py_spy and self.n == max(self.args.resources):
                out = Path(self.args.py_spy).with_suffix("") / f"operator-{self.n}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                pid = str(self.world.pid("operator"))
                profiler = subprocess.Popen(
                    [self.args.py_spy_bin, "record", "--format", "raw", "--rate", "50", "-o", str(out), "--pid", pid],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                await asyncio.sleep(1.0)
            up = await self.bring_up()
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(30)
            idle = await self.idle()
            result = self.report(base, up, idle)
            keep = self.args.keep or up["timed_out"]
            if not keep:
                result["logs"] = None
            return result
        except BaseException:
            keep = True
            print(f"N={self.n}: failed; logs in {self.world.tmp}", file=sys.stderr)
            raise
        finally:
            if self.http is not None:
                await self.http.close()
            self.world.stop()
            if not keep:
                shutil.rmtree(self.world.tmp, ignore_errors=True)

    # -------------------------------------------------------------- report

    def report(self, base: Snapshot, up: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
        n = self.n
        s0, s1, s2, s3 = up["s0"], up["s1"], idle["s2"], idle["s3"]

        def last(d: dict[str, float]) -> float | None:
            return max(d.values()) - self.t0 if len(d) >= n else None

        def pct(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            values = sorted(values)
            pick = lambda q: values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]  # noqa: E731
            return {"p50": pick(0.5), "p95": pick(0.95), "max": values[-1]}

        wall_up = s1.t - s0.t
        cpu_up = {k: s1.cpu[k] - s0.cpu[k] for k in s1.cpu}
        api_up, k8s_up = diff(s0.api, s1.api), diff(s0.k8s, s1.k8s)
        minutes = (s3.t - s2.t) / 60
        api_idle, k8s_idle = diff(s2.api, s3.api), diff(s2.k8s, s3.k8s)
        cpu_idle = {k: s3.cpu[k] - s2.cpu[k] for k in s3.cpu}
        k8s_up_op = Counter({k: v for k, v in k8s_up.items() if k.split("|")[0] in ("kopf", "client")})
        k8s_idle_op = Counter({k: v for k, v in k8s_idle.items() if k.split("|")[0] in ("kopf", "client")})
        times = {
            "created": up["t_created"] - self.t0,
            "registered": last(self.registered_at),
            "pods": last(self.pod_at),
            "ready": last(self.ready_at),
        }
        return {
            "resources": n,
            "resync_seconds": self.args.resync or 10.0,
            "sweep_seconds": self.args.sweep or 300.0,
            "timed_out": up["timed_out"],
            "counts": {
                "registered": len(self.registered_at),
                "pods": len(self.pod_at),
                "ready": len(self.ready_at),
            },
            "times_s": times,
            "rates_per_s": {k: (n / v if v else None) for k, v in times.items()},
            "latency_s": {
                "create_to_pod": pct(
                    [self.pod_at[k] - self.created_at[k] for k in self.pod_at if k in self.created_at]
                ),
                "pod_to_ready": pct([self.ready_at[k] - self.pod_at[k] for k in self.ready_at if k in self.pod_at]),
                "create_to_ready": pct(
                    [self.ready_at[k] - self.created_at[k] for k in self.ready_at if k in self.created_at]
                ),
                "marker_patch": pct(self.mark_latency),
            },
            "marker": {"patches": len(self.mark_latency), "busy_s": self.mark_busy_s},
            "bringup": {
                "wall_s": wall_up,
                "cpu_s": cpu_up,
                "api_calls": sum(api_up.values()),
                "api_calls_per_resource": sum(api_up.values()) / n,
                "api_by_route": dict(api_up.most_common()),
                "k8s_operator_requests": sum(k8s_up_op.values()),
                "k8s_operator_requests_per_resource": sum(k8s_up_op.values()) / n,
                "k8s_by_kind": dict(k8s_up.most_common()),
                "reconciles": s1.reconciles - s0.reconciles,
                "reconcile_mean_ms": 1000 * (s1.reconcile_s - s0.reconcile_s) / max(1, s1.reconciles - s0.reconciles),
            },
            "idle": {
                "window_s": s3.t - s2.t,
                "api_calls": sum(api_idle.values()),
                "api_calls_per_resource_per_min": sum(api_idle.values()) / n / minutes,
                "api_by_route": dict(api_idle.most_common()),
                "k8s_operator_requests_per_resource_per_min": sum(k8s_idle_op.values()) / n / minutes,
                "k8s_by_kind": dict(k8s_idle.most_common()),
                "reconciles_per_resource_per_min": (s3.reconciles - s2.reconciles) / n / minutes,
                "reconcile_mean_ms": 1000 * (s3.reconcile_s - s2.reconcile_s) / max(1, s3.reconciles - s2.reconciles),
                "cpu_s": cpu_idle,
                "operator_cpu_pct": 100 * cpu_idle["operator"] / (s3.t - s2.t),
            },
            "memory_mb": {
                "operator_rss_start": base.mem.get("VmRSS"),
                "operator_rss_after_bringup": s1.mem.get("VmRSS"),
                "operator_rss_end": s3.mem.get("VmRSS"),
                "operator_rss_max_idle": idle["rss_max_idle"],
                "operator_peak_hwm": s3.mem.get("VmHWM"),
            },
            "driver_watch_restarts": self.watch_errors,
            "logs": str(self.world.tmp),
        }


# ------------------------------------------------------------------------------------- output


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_report(results: list[dict[str, Any]]) -> None:
    cols = [str(r["resources"]) for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any, digits: int = 1) -> None:
        rows.append((label, [fmt(fn(r), digits) for r in results]))

    row("created all (s)", lambda r: r["times_s"]["created"], 2)
    row("all registered (s)", lambda r: r["times_s"]["registered"], 2)
    row("all pods created (s)", lambda r: r["times_s"]["pods"], 2)
    row("all Ready in status (s)", lambda r: r["times_s"]["ready"], 2)
    row("registered+pods / s", lambda r: r["rates_per_s"]["pods"])
    row("Ready / s", lambda r: r["rates_per_s"]["ready"])
    row(
        "create->pod p50/p95 (s)",
        lambda r: "/".join(fmt(r["latency_s"]["create_to_pod"].get(k), 2) for k in ("p50", "p95")),
    )
    row(
        "pod->Ready p50/p95 (s)",
        lambda r: "/".join(fmt(r["latency_s"]["pod_to_ready"].get(k), 2) for k in ("p50", "p95")),
    )
    row("marker patches / busy s", lambda r: f"{r['marker']['patches']} / {r['marker']['busy_s']:.1f}")
    row("bring-up wall (s)", lambda r: r["bringup"]["wall_s"])
    for proc in PROCS:
        row(f"bring-up CPU s {proc}", lambda r, w=proc: r["bringup"]["cpu_s"][w])
    row("API calls / resource", lambda r: r["bringup"]["api_calls_per_resource"], 2)
    row("k8s req (operator) / resource", lambda r: r["bringup"]["k8s_operator_requests_per_resource"], 2)
    row("reconciles (bring-up)", lambda r: int(r["bringup"]["reconciles"]))
    row("reconcile mean ms (bring-up)", lambda r: r["bringup"]["reconcile_mean_ms"])
    row("idle window (s)", lambda r: r["idle"]["window_s"])
    row("idle API calls/res/min", lambda r: r["idle"]["api_calls_per_resource_per_min"], 4)
    row("idle k8s req/res/min", lambda r: r["idle"]["k8s_operator_requests_per_resource_per_min"], 2)
    row("idle reconciles/res/min", lambda r: r["idle"]["reconciles_per_resource_per_min"], 2)
    row("idle reconcile mean ms", lambda r: r["idle"]["reconcile_mean_ms"])
    row("idle operator CPU %", lambda r: r["idle"]["operator_cpu_pct"])
    row("idle apiserver CPU s", lambda r: r["idle"]["cpu_s"]["apiserver"])
    row("idle etcd CPU s", lambda r: r["idle"]["cpu_s"]["etcd"])
    row("operator RSS start (MB)", lambda r: r["memory_mb"]["operator_rss_start"])
    row("operator RSS after bring-up", lambda r: r["memory_mb"]["operator_rss_after_bringup"])
    row("operator RSS end of idle", lambda r: r["memory_mb"]["operator_rss_end"])
    row("operator peak RSS (HWM)", lambda r: r["memory_mb"]["operator_peak_hwm"])
    width = max(len(label) for label, _ in rows)
    print(f"\n{'resources':<{width}}  " + "  ".join(f"{c:>12}" for c in cols))
    for label, values in rows:
        print(f"{label:<{width}}  " + "  ".join(f"{v:>12}" for v in values))
    for r in results:
        print(f"\nN={r['resources']}: API calls during bring-up by route: {r['bringup']['api_by_route']}")
        print(f"N={r['resources']}: API calls while idle by route: {r['idle']['api_by_route']}")
        print(f"N={r['resources']}: k8s requests during bring-up: {r['bringup']['k8s_by_kind']}")
        print(f"N={r['resources']}: k8s requests while idle: {r['idle']['k8s_by_kind']}")
        if r["driver_watch_restarts"]:
            print(f"N={r['resources']}: driver watch restarts: {r['driver_watch_restarts']}")
        if r["timed_out"]:
            print(f"N={r['resources']}: TIMED OUT: {r['counts']}; logs in {r['logs']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resources", type=int, nargs="+", default=[100, 1000], help="resource counts N")
    p.add_argument("--idle", type=float, default=60.0, help="idle measurement window (s)")
    p.add_argument("--settle", type=float, default=5.0, help="wait after bring-up before the idle window (s)")
    p.add_argument("--resync", type=float, default=None, help="LIGHTLY_OPERATOR_RESYNC_SECONDS (default: 10)")
    p.add_argument("--sweep", type=float, default=None, help="LIGHTLY_OPERATOR_SWEEP_SECONDS (default: 300)")
    p.add_argument(
        "--offline-grace",
        type=float,
        default=3600.0,
        help="LIGHTLY_OPERATOR_OFFLINE_GRACE_SECONDS (default: %(default)s; no worker process ever reports, so the "
        "operator's 120 s default marks every fleet Degraded on a slow bring-up)",
    )
    p.add_argument("--create-concurrency", type=int, default=8, help="concurrent resource creations")
    p.add_argument(
        "--create-rate", type=float, default=0.0, help="create at most this many resources/s (default: no limit)"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for Ready after this (s)")
    p.add_argument("--operator-log-level", default="INFO")
    p.add_argument(
        "--operator-env", action="append", default=[], metavar="KEY=VALUE", help="extra operator environment"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: --resources 20 --idle 15 --settle 2")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--py-spy", help="record the operator during the largest N's bring-up into DIR/operator-N.txt")
    p.add_argument("--py-spy-bin", default=str(VENV_BIN / "py-spy"))
    p.add_argument("--crd", type=Path, default=CRD, help="CRD manifest to apply (default: %(default)s)")
    p.add_argument(
        "--apiserver-arg", action="append", default=[], help="extra kube-apiserver flag (repeatable), e.g. =--v=2"
    )
    p.add_argument("--keep", action="store_true", help="keep every run's folder (logs, audit log, kubeconfig)")
    args = p.parse_args()
    reason = assets_missing_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.quick:
        args.resources, args.idle, args.settle = [20], 15.0, 2.0
    results = []
    for n in args.resources:
        print(f"--- N={n} resources", flush=True)
        result = asyncio.run(Bench(args, n).run())
        results.append(result)
        print(json.dumps({k: result[k] for k in ("times_s", "counts", "memory_mb")}, default=str), flush=True)
    print_report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
