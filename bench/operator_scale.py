"""Bring-up time, API calls and memory of the LightlyWorker operator with N resources.

Three processes besides this driver, each measured from /proc:

* the Kubernetes emulator (``tests/k8s/emulator.py``), served by this script in a **separate process**
  (``--serve-emulator PORT``), so the driver's own work never shares a GIL with the API server it measures;
  it counts every request by client (``User-Agent``: kopf, the operator's ``kubernetes`` client, this driver)
  and by verb/resource;
* ``lightly-server serve`` on a fresh SQLite database (``/metrics`` is scraped for request counts by route);
* the operator itself, ``lightly-operator --namespace bench --leader-election off`` with ``KUBECONFIG``
  pointing at the emulator and the default resync interval (``--resync`` to change it).

For every N: create N ``LightlyWorker`` resources (replicas=1, one shared token Secret, one namespace) over
``--create-concurrency`` connections; a marker task in this driver watches pods and marks each new pod
Running+Ready through ``/status`` as soon as it appears (concurrently; its own time is reported); a status
watcher records when each resource first reports Registered=True and Ready=True. Then the operator idles for
``--idle`` seconds and the API calls, Kubernetes requests, reconciles and CPU in that window are counted.

Run: ``.venv/bin/python bench/operator_scale.py --resources 100 1000`` (``--quick`` for a smoke run).
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
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "crds" / "lightlyworkers.lightly.ai.yaml"
VENV_BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
NS = "bench"
GROUP, VERSION, PLURAL = "lightly.ai", "v1alpha1", "lightlyworkers"
DRIVER_UA = "bench-driver"
PROXY_VARS = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy")


def now() -> float:
    return time.monotonic()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak RSS) in MB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


# ------------------------------------------------------------------------------------- emulator process


def classify(method: str, path: str, query: Any) -> str:
    """``"PATCH lightlyworkers/status"``, ``"GET pods (watch)"``, ``"GET secrets"``... for one request."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]
    elif parts[:1] == ["apis"]:
        rest = parts[3:]
    else:
        return f"{method} /{'/'.join(parts[:2])}"
    watch = query.get("watch") in ("true", "1")
    if rest[:1] == ["watch"]:
        watch, rest = True, rest[1:]
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return f"{method} (discovery)"
    label = f"{method} {rest[0]}" + (f"/{rest[2]}" if len(rest) > 2 else "")
    if method == "GET" and len(rest) == 1:
        label += " (watch)" if watch else " (list)"
    return label


def serve_emulator(port: int) -> None:
    """The emulator on 127.0.0.1:PORT, with request counts at ``GET /_bench/stats`` (runs forever)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import aiohttp.web
    from k8s.emulator import K8sEmulator

    emulator = K8sEmulator()
    counts: Counter[str] = Counter()

    async def handler(request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if request.path == "/_bench/stats":
            watches = {p: emulator.watch_count(g, p) for g, p in (("", "pods"), (GROUP, PLURAL))}
            return aiohttp.web.json_response({"counts": dict(counts), "watches": watches})
        ua = request.headers.get("User-Agent", "")
        who = "driver" if ua.startswith(DRIVER_UA) else "kopf" if ua.startswith("kopf") else "client"
        counts[f"{who}|{classify(request.method, request.path, request.query)}"] += 1
        return await emulator(request)

    async def main() -> None:
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(handler, handler_cancellation=True))
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


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
    k8s: Counter[str]  # "who|METHOD resource" -> requests served by the emulator
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
    emu_url: str = ""
    api_url: str = ""
    op_metrics: str = ""
    op_health: str = ""
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)

    def pid(self, name: str) -> int:
        return self.procs[name].pid if name in self.procs else os.getpid()

    def stop(self) -> None:
        for name in ("operator", "server", "emulator"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM if name != "emulator" else signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


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

    async def setup(self) -> None:
        import aiohttp
        import yaml

        w, a = self.world, self.args
        self.http = aiohttp.ClientSession(
            headers={"User-Agent": DRIVER_UA},
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            read_bufsize=2**22,
        )
        port = free_port()
        emu = start(w, "emulator", [sys.executable, str(Path(__file__).resolve()), "--serve-emulator", str(port)])
        w.emu_url = f"http://127.0.0.1:{port}"
        await wait_http(self.http, f"{w.emu_url}/_bench/stats", emu, "the emulator")

        db = f"sqlite:///{w.tmp / 'lightly.sqlite3'}"
        token = subprocess.run(
            [sys.executable, "-m", "lightly_server.cli", "create-token", "--database", db, "--user", "bench"],
            check=True,
            capture_output=True,
            text=True,
            env=clean_env(),
        ).stdout.strip()
        port = free_port()
        server_cmd = [sys.executable, "-m", "lightly_server.cli", "serve", "--port", str(port), "--database", db]
        server_cmd += ["--artifacts-dir", str(w.tmp / "artifacts"), "--log-level", "warning"]
        srv = start(w, "server", server_cmd)
        w.api_url = f"http://127.0.0.1:{port}"
        await wait_http(self.http, f"{w.api_url}/healthz", srv, "lightly-server")

        await self.k8s(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(CRD.read_text())
        )
        await self.k8s("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
        secret = {"metadata": {"name": "lightly-token"}, "data": {"token": base64.b64encode(token.encode()).decode()}}
        await self.k8s("POST", f"/api/v1/namespaces/{NS}/secrets", secret)

        kubeconfig = w.tmp / "kubeconfig"
        ctx = {"cluster": "emulator", "user": "emulator", "namespace": NS}
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": w.emu_url}}],
                    "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
                    "contexts": [{"name": "emulator", "context": ctx}],
                    "current-context": "emulator",
                }
            )
        )
        mport, hport = free_port(), free_port()
        env = clean_env()
        env.update(
            KUBECONFIG=str(kubeconfig),
            LIGHTLY_SERVER_LOCATION=w.api_url,
            LIGHTLY_WORKER_IMAGE="lightly-worker:bench",
            LIGHTLY_CLUSTER_NAME=f"bench{secrets.token_hex(2)}",
        )
        if a.resync:
            env["LIGHTLY_OPERATOR_RESYNC_SECONDS"] = str(a.resync)
        if a.sweep:
            env["LIGHTLY_OPERATOR_SWEEP_SECONDS"] = str(a.sweep)
        op_cmd = [str(VENV_BIN / "lightly-operator"), "--namespace", NS, "--metrics-port", str(mport)]
        op_cmd += ["--health-port", str(hport), "--leader-election", "off", "--log-level", a.operator_log_level]
        op = start(w, "operator", op_cmd, env)
        w.op_metrics, w.op_health = f"http://127.0.0.1:{mport}/metrics", f"http://127.0.0.1:{hport}/healthz"
        await wait_http(self.http, w.op_health, op, "the operator")
        deadline = now() + 30
        while True:
            watches = (await self.stats())["watches"]
            if watches["pods"] >= 1 and watches[PLURAL] >= 1:
                break
            if now() > deadline:
                raise RuntimeError(f"the operator does not watch: {watches}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # let startup finish (kopf's initial lists, imports) before the baseline

    async def k8s(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        async with self.http.request(
            method, f"{self.world.emu_url}{path}", data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": ctype},
        ) as r:  # fmt: skip
            data = await r.json(content_type=None)
            if r.status >= 300:
                raise RuntimeError(f"{method} {path} -> {r.status}: {data}")
            return data

    async def stats(self) -> dict[str, Any]:
        async with self.http.get(f"{self.world.emu_url}/_bench/stats") as r:
            return await r.json()

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
        k8s = Counter((await self.stats())["counts"])
        rec = op_prom.get(("lightly_operator_reconcile_duration_seconds_count", ()), 0.0)
        rec_s = op_prom.get(("lightly_operator_reconcile_duration_seconds_sum", ()), 0.0)
        cpu = {name: proc_cpu_s(w.pid(name)) for name in ("operator", "emulator", "server", "driver")}
        return Snapshot(now(), api, k8s, rec, rec_s, cpu, proc_mem_mb(w.pid("operator")))

    # -------------------------------------------------------------- watchers

    async def watch(self, path: str, on_event: Any, started: asyncio.Event) -> None:
        listing = await self.k8s("GET", path)
        for obj in listing.get("items") or []:
            await on_event("ADDED", obj)
        rv = listing["metadata"]["resourceVersion"]
        url = f"{self.world.emu_url}{path}?watch=true&resourceVersion={rv}&timeoutSeconds=3600"
        async with self.http.get(url) as r:
            started.set()
            async for line in r.content:
                if line.strip():
                    ev = json.loads(line)
                    await on_event(ev["type"], ev["object"])

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
            status = {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": "worker",
                        "ready": True,
                        "state": {"running": {}},
                        "image": "lightly-worker:bench",
                        "imageID": "x",
                        "restartCount": 0,
                    }
                ],
            }
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

        async def creator() -> None:
            while queue:
                name = queue.pop()
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
            return self.report(base, up, idle)
        finally:
            if self.http is not None:
                await self.http.close()
            self.world.stop()

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
        k8s_up_op = Counter({k: v for k, v in k8s_up.items() if not k.startswith("driver|")})
        k8s_idle_op = Counter({k: v for k, v in k8s_idle.items() if not k.startswith("driver|")})
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
    for who in ("operator", "emulator", "server", "driver"):
        row(f"bring-up CPU s {who}", lambda r, w=who: r["bringup"]["cpu_s"][w])
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
    row("idle emulator CPU s", lambda r: r["idle"]["cpu_s"]["emulator"])
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
        if r["timed_out"]:
            print(f"N={r['resources']}: TIMED OUT: {r['counts']}; logs in {r['logs']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resources", type=int, nargs="+", default=[100, 1000], help="resource counts N")
    p.add_argument("--idle", type=float, default=60.0, help="idle measurement window (s)")
    p.add_argument("--settle", type=float, default=5.0, help="wait after bring-up before the idle window (s)")
    p.add_argument("--resync", type=float, default=None, help="LIGHTLY_OPERATOR_RESYNC_SECONDS (default: 10)")
    p.add_argument("--sweep", type=float, default=None, help="LIGHTLY_OPERATOR_SWEEP_SECONDS (default: 300)")
    p.add_argument("--create-concurrency", type=int, default=8, help="concurrent resource creations")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for Ready after this (s)")
    p.add_argument("--operator-log-level", default="INFO")
    p.add_argument("--quick", action="store_true", help="smoke run: --resources 20 --idle 15 --settle 2")
    p.add_argument("--json", help="write all results to this file")
    p.add_argument("--py-spy", help="record the operator during the largest N's bring-up into DIR/operator-N.txt")
    p.add_argument("--py-spy-bin", default=str(VENV_BIN / "py-spy"))
    p.add_argument("--serve-emulator", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_emulator:
        serve_emulator(args.serve_emulator)
        return 0
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
