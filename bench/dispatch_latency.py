"""Dispatch latency and claim throughput of lightly-server with long-polling workers.

Starts ``lightly-server serve`` as a subprocess (fresh SQLite database in a temporary folder, free
loopback port) for every worker count, then:

* latency phase: schedules runs one at a time while N workers long-poll
  ``GET /v1/docker/worker/{id}/schedule?state=OPEN&waitSeconds=25``; the latency of a run is the time
  from the scheduler *sending* its ``POST .../docker/worker/schedule`` to the winning worker receiving
  the ``204`` of its ``LOCKED`` claim (also reported from the POST's *return*). Before each schedule the
  benchmark waits until every worker has a long-poll outstanding and the server process is idle, so
  each sample measures the wake-up of N waiting workers, not a backlog.
* idle phase (``--idle-s``): all N workers long-poll and nothing is scheduled; the server CPU over
  that window, as % of a core per 1,000 workers, is the fleet's idle cost.
* burst phase: schedules K runs on K datasets as fast as the scheduler can (``--scheduler-conns``
  concurrent POSTs) while N workers wait; claims/s = K / (last claim - first POST sent). Every winner
  creates its run and completes it (which frees the dataset lock and marks the scheduled run DONE).

``--postgres URL`` (an admin URL: a fresh database is created and dropped per worker count) runs the
server on PostgreSQL instead, ``--replicas R`` starts R server processes on the same database (the
client processes are spread round-robin over them, the scheduler POSTs to the first). Every run
counts *lost* runs (scheduled, never claimed within ``--timeout``) and *duplicate* claims (two 204s
for one scheduled run).

The workers run in ``--client-procs`` separate processes and speak HTTP/1.1 through a minimal
asyncio client (keep-alive, one connection per worker) so the client side costs little CPU. CPU
seconds of the server and of the client processes are measured from /proc for every phase.

Run: ``.venv/bin/python bench/dispatch_latency.py --workers 1 50 500`` (``--quick`` for a smoke run);
10,000 waiters: ``--workers 1 10000 --client-procs 4 --idle-s 60`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
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

from lightly_devkit import servers as devkit_servers
from lightly_devkit.processes import proc_cpu_s, tree_cpu_s
from lightly_protocol import paths

CONFIG = {
    "version": "V4",
    "config": {
        "workerType": "FULL",
        "selection": {
            "nSamples": 1,
            "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
        },
    },
}
# per client process, shared counters: [workers with a long-poll outstanding, polls sent, empty answers,
# claim conflicts (409), other errors]
N_COUNTERS = 5
C_POLLING, C_POLLS, C_EMPTY, C_CONFLICTS, C_ERRORS = range(N_COUNTERS)
COUNTER_NAMES = ["polling", "polls", "empty", "conflicts", "errors"]


def now() -> float:
    """CLOCK_MONOTONIC in seconds: one clock for all processes of this machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# ---------------------------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    pass


class Http:
    """A minimal HTTP/1.1 keep-alive client for one connection (one request at a time)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port, self.token = host, port, token
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        for attempt in range(2):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                sock = self.writer.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                return await self._request(method, path, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        data = b"" if body is None else json.dumps(body).encode()
        sep = "&" if "?" in path else "?"
        head = (
            f"{method} {path}{sep}token={self.token} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            payload = b"".join(parts)
        else:
            payload = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, payload

    async def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, payload = await self.request(method, path, body)
        if status != expect:
            raise HttpError(f"{method} {path} -> {status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


# ---------------------------------------------------------------------------------------------- workers


def client_main(
    proc_index: int,
    first_worker: int,
    n_workers: int,
    host: str,
    port: int,
    token: str,
    pick: str,
    wait_s: float,
    poll_mode: str,
    counters: Any,
    events: Any,
    stop: Any,
) -> None:
    """One client process: ``n_workers`` long-polling workers on one asyncio loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    base = proc_index * N_COUNTERS

    def send(msg: tuple[Any, ...]) -> None:
        events.send(msg)

    async def worker(i: int, ready: asyncio.Queue[str]) -> None:
        http = Http(host, port, token)
        rng = random.Random(i)
        reg = {"name": f"bench-worker-{i}", "workerType": "FULL", "labels": []}
        async with registering:  # a fleet does not register 10,000 workers in the same millisecond
            wid = (await http.json("POST", paths.WORKERS, reg, 201))["id"]
            await http.json("PUT", paths.worker(wid), {"state": "IDLE"}, 204)
        await ready.put(wid)
        if poll_mode == "work":  # what our worker polls: a shard of a split run first, else the runs
            poll = f"{paths.worker_work(wid)}?waitSeconds={wait_s:g}"
        else:
            poll = f"{paths.worker_schedule(wid)}?state=OPEN&waitSeconds={wait_s:g}"
        while True:
            counters[base + C_POLLING] += 1
            counters[base + C_POLLS] += 1
            try:
                status, payload = await http.request("GET", poll)
            finally:
                counters[base + C_POLLING] -= 1
            if status != 200:
                counters[base + C_ERRORS] += 1
                await asyncio.sleep(0.1)
                continue
            rows = json.loads(payload)
            if poll_mode == "work":
                rows = rows["scheduled"]
            if not rows:
                counters[base + C_EMPTY] += 1
                continue
            if pick == "random":
                k = rng.randrange(len(rows))
                rows = rows[k:] + rows[:k]
            for row in rows:
                sid, did = row["id"], row["datasetId"]
                status, _ = await http.request("PUT", paths.scheduled_run(did, wid, sid), {"state": "LOCKED"})
                t_lock = now()
                if status == 409:
                    counters[base + C_CONFLICTS] += 1
                    continue
                if status != 204:
                    counters[base + C_ERRORS] += 1
                    continue
                send(("claim", sid, t_lock))
                rid = (await http.json("POST", paths.RUNS, {"dockerVersion": "bench", "scheduledId": sid}, 201))["id"]
                await http.json("PUT", paths.run(rid), {"state": "COMPLETED"}, 204)
                send(("done", sid, now()))
                break

    registering = asyncio.Semaphore(8)

    async def run() -> None:
        ready: asyncio.Queue[str] = asyncio.Queue()
        tasks = [asyncio.create_task(worker(first_worker + j, ready)) for j in range(n_workers)]
        for _ in range(n_workers):
            getter = asyncio.create_task(ready.get())
            done, _ = await asyncio.wait([getter, *tasks], return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                for t in done:
                    t.result()  # a worker failed to register: raise its error
            await asyncio.sleep(0)
        send(("registered", n_workers))
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        loop.add_reader(stop.fileno(), lambda: stopped.done() or stopped.set_result(None))
        await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception():
                send(("error", repr(t.exception())))
            t.cancel()

    try:
        asyncio.run(run())
    except Exception as exc:
        send(("error", repr(exc)))
    finally:
        with contextlib.suppress(Exception):
            send(("exit", proc_index))


# ---------------------------------------------------------------------------------------------- server


@dataclass
class ServerProc:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    log: Path


def start_server(workdir: Path, extra_pythonpath: str | None, db: str | None = None, processes: int = 1) -> ServerProc:
    db = db or f"sqlite:///{workdir / 'bench.sqlite3'}"
    env = dict(os.environ)
    env["LIGHTLY_SERVER_ARTIFACTS_DIR"] = str(workdir / "artifacts")
    if extra_pythonpath:
        env["PYTHONPATH"] = extra_pythonpath + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    token = devkit_servers.create_token(db, "bench", env=env, timeout=None)
    log = workdir / "server.log"
    try:
        extra = ("--processes", str(processes)) if processes > 1 else ()  # older servers lack the flag
        server = devkit_servers.start_server(db, log, *extra, env=env)
    except RuntimeError as exc:
        raise RuntimeError(f"server did not start: {str(exc)[-2000:]}") from None
    return ServerProc(server.proc, server.port, token, log)


def stop_server(server: ServerProc) -> None:
    server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# ---------------------------------------------------------------------------------------------- measurement


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


@dataclass
class PhaseCpu:
    wall_s: float = 0.0
    server_s: float = 0.0
    clients_s: float = 0.0
    scheduler_s: float = 0.0

    def line(self) -> str:
        w = self.wall_s or math.nan
        return (
            f"cpu over {self.wall_s:.1f} s wall: "
            f"server {self.server_s:.1f} s ({100 * self.server_s / w:.0f}% of a core), "
            f"workers {self.clients_s:.1f} s ({100 * self.clients_s / w:.0f}%), "
            f"scheduler {self.scheduler_s:.1f} s ({100 * self.scheduler_s / w:.0f}%)"
        )


@dataclass
class BurstRound:
    """One burst: K runs scheduled at once on K fresh datasets."""

    k: int
    claimed: int
    done: int
    post_s: float
    claim_s: float
    done_s: float
    latency_ms: list[float]
    cpu: PhaseCpu
    counters: list[int]

    @property
    def claims_per_s(self) -> float:
        return self.claimed / self.claim_s if self.claim_s else math.nan

    def brief(self) -> dict[str, Any]:
        return {
            "claims_per_s": self.claims_per_s,
            "schedules_per_s": self.k / self.post_s if self.post_s else math.nan,
            "burst_p99_ms": pct(self.latency_ms, 99),
            "conflicts": dict(zip(COUNTER_NAMES, self.counters, strict=False)).get("conflicts", 0),
            "server_cpu_s": self.cpu.server_s,
            "wall_s": self.cpu.wall_s,
        }


@dataclass
class Result:
    workers: int
    latency_sent_ms: list[float] = field(default_factory=list)
    latency_ret_ms: list[float] = field(default_factory=list)
    post_ms: list[float] = field(default_factory=list)
    latency_missing: int = 0
    latency_cpu: PhaseCpu = field(default_factory=PhaseCpu)
    latency_counters: list[int] = field(default_factory=list)
    burst_k: int = 0
    burst_claimed: int = 0
    burst_done: int = 0
    burst_post_s: float = math.nan
    burst_claim_s: float = math.nan
    burst_done_s: float = math.nan
    burst_latency_ms: list[float] = field(default_factory=list)
    burst_cpu: PhaseCpu = field(default_factory=PhaseCpu)
    burst_counters: list[int] = field(default_factory=list)
    burst_rounds: list[BurstRound] = field(default_factory=list)
    idle_s: float = 0.0
    idle_server_cpu_s: float = math.nan
    idle_polls: int = 0
    lost: int = 0
    duplicates: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "workers": self.workers,
            "schedules": len(self.latency_sent_ms),
            "missing": self.latency_missing,
            "p50_ms": pct(self.latency_sent_ms, 50),
            "p99_ms": pct(self.latency_sent_ms, 99),
            "max_ms": max(self.latency_sent_ms, default=math.nan),
            "p50_from_return_ms": pct(self.latency_ret_ms, 50),
            "p99_from_return_ms": pct(self.latency_ret_ms, 99),
            "post_p50_ms": pct(self.post_ms, 50),
            "latency_counters": dict(zip(COUNTER_NAMES, self.latency_counters, strict=False)),
            "latency_cpu": self.latency_cpu.__dict__,
            "burst_k": self.burst_k,
            "burst_claimed": self.burst_claimed,
            "burst_done": self.burst_done,
            "claims_per_s": self.burst_claimed / self.burst_claim_s if self.burst_claim_s else math.nan,
            "completed_per_s": self.burst_done / self.burst_done_s if self.burst_done_s else math.nan,
            "schedules_per_s": self.burst_k / self.burst_post_s if self.burst_post_s else math.nan,
            "burst_p50_ms": pct(self.burst_latency_ms, 50),
            "burst_p99_ms": pct(self.burst_latency_ms, 99),
            "burst_counters": dict(zip(COUNTER_NAMES, self.burst_counters, strict=False)),
            "burst_cpu": self.burst_cpu.__dict__,
            # every round of --bursts R; the burst_* figures above are the median round's (by claims/s)
            "burst_rounds": [b.brief() for b in self.burst_rounds],
            "idle_s": self.idle_s,
            "idle_server_cpu_s": self.idle_server_cpu_s,
            "idle_polls": self.idle_polls,
            # % of one core per 1,000 idle long-polling workers
            "idle_cpu_pct_per_1000": (
                100 * self.idle_server_cpu_s / self.idle_s * 1000 / self.workers if self.idle_s else math.nan
            ),
            "lost": self.lost,
            "duplicates": self.duplicates,
        }

    def add_burst(self, b: BurstRound) -> None:
        """Record a round; the burst_* figures become the median round's (the lower middle of an even count)."""
        self.burst_rounds.append(b)
        ranked = sorted(self.burst_rounds, key=lambda r: (r.claims_per_s != r.claims_per_s, r.claims_per_s))
        m = ranked[(len(ranked) - 1) // 2]
        self.burst_k, self.burst_claimed, self.burst_done = m.k, m.claimed, m.done
        self.burst_post_s, self.burst_claim_s, self.burst_done_s = m.post_s, m.claim_s, m.done_s
        self.burst_latency_ms, self.burst_cpu, self.burst_counters = m.latency_ms, m.cpu, m.counters


class Bench:
    def __init__(self, args: argparse.Namespace, n_workers: int, servers: list[ServerProc]) -> None:
        self.args = args
        self.n = n_workers
        self.servers = servers
        self.server = servers[0]  # the scheduler's replica
        self.claims: dict[str, float] = {}
        self.claim_count: Counter[str] = Counter()
        self.dones: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self.registered = 0
        self.errors: list[str] = []
        self.procs: list[mp.process.BaseProcess] = []
        self.conns: list[Any] = []
        self.stop_w: Any = None
        self.on_registered: Any = None  # called once every worker is registered (starts the profiler)

    async def burst(self, cid: str, burst_ds: list[str]) -> BurstRound:
        """Schedule a run on each of ``burst_ds`` at once; wait until all are done (or the timeout)."""
        await self.quiesce()
        c0, cpu0 = self.counter_totals(), self.cpu_snapshot()
        sent: dict[str, float] = {}
        conns = [Http("127.0.0.1", self.server.port, self.server.token) for _ in range(self.args.scheduler_conns)]
        t_start = now()

        async def post_all(c: Http, dids: list[str]) -> None:
            for did in dids:
                sid, t_sent, _ = await self.schedule(c, cid, did)
                sent[sid] = t_sent

        await asyncio.gather(*(post_all(c, burst_ds[j :: len(conns)]) for j, c in enumerate(conns)))
        t_posted = now()
        deadline = now() + self.args.timeout
        while now() < deadline and not all(s in self.dones for s in sent):
            await asyncio.sleep(0.005)
        cpu1 = self.cpu_snapshot()
        for c in conns:
            await c.close()
        claimed = [self.claims[s] for s in sent if s in self.claims]
        done = [self.dones[s] for s in sent if s in self.dones]
        last = max(done or claimed or [now()])
        return BurstRound(
            k=len(burst_ds),
            claimed=len(claimed),
            done=len(done),
            post_s=t_posted - t_start,
            claim_s=(max(claimed) - t_start) if claimed else math.nan,
            done_s=(max(done) - t_start) if done else math.nan,
            latency_ms=[1000 * (self.claims[s] - t) for s, t in sent.items() if s in self.claims],
            cpu=self.cpu_delta(cpu0, (last, *cpu1[1:])),
            counters=[b - a for a, b in zip(c0, self.counter_totals(), strict=True)],
        )

    # ---------------------------------------------------------------- clients

    def _on_events(self, conn: Any) -> None:
        while conn.poll():
            try:
                msg = conn.recv()
            except EOFError:
                asyncio.get_running_loop().remove_reader(conn.fileno())
                return
            kind = msg[0]
            if kind == "claim":
                self.claim_count[msg[1]] += 1
                self.claims.setdefault(msg[1], msg[2])
                fut = self.waiting.get(msg[1])
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == "done":
                self.dones[msg[1]] = msg[2]
            elif kind == "registered":
                self.registered += msg[1]
            elif kind == "error":
                self.errors.append(msg[1])
                print(f"  worker process error: {msg[1]}", file=sys.stderr)

    async def start_clients(self) -> None:
        ctx = mp.get_context("fork")
        nproc = max(1, min(self.args.client_procs, self.n))
        self.counters = ctx.Array("l", nproc * N_COUNTERS, lock=False)
        stop_r, self.stop_w = ctx.Pipe(duplex=False)
        loop = asyncio.get_running_loop()
        share = [self.n // nproc + (1 if p < self.n % nproc else 0) for p in range(nproc)]
        first = 0
        for p in range(nproc):
            ev_r, ev_w = ctx.Pipe(duplex=False)
            srv = self.servers[p % len(self.servers)]
            proc = ctx.Process(
                target=client_main,
                args=(p, first, share[p], "127.0.0.1", srv.port, srv.token, self.args.pick),
                kwargs={
                    "wait_s": self.args.wait_seconds,
                    "poll_mode": self.args.poll,
                    "counters": self.counters,
                    "events": ev_w,
                    "stop": stop_r,
                },
                daemon=True,
            )
            proc.start()
            ev_w.close()
            first += share[p]
            self.procs.append(proc)
            self.conns.append(ev_r)
            loop.add_reader(ev_r.fileno(), self._on_events, ev_r)
        deadline = now() + 120 + self.n / 50  # 10,000 registrations take ~100 s on a 2-core box
        while self.registered < self.n:
            if self.errors or now() > deadline:
                raise RuntimeError(f"workers did not register: {self.errors or 'timeout'}")
            await asyncio.sleep(0.05)

    def stop_clients(self) -> None:
        loop = asyncio.get_running_loop()
        self.stop_w.send(b"stop")
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            conn.close()

    def counter_totals(self) -> list[int]:
        totals = [0] * N_COUNTERS
        for i, v in enumerate(self.counters[:]):
            totals[i % N_COUNTERS] += v
        return totals

    def cpu_snapshot(self) -> tuple[float, float, float, float]:
        return (
            now(),
            self.server_cpu_s(),
            sum(proc_cpu_s(p.pid) for p in self.procs if p.pid),
            time.process_time(),
        )

    def server_cpu_s(self) -> float:
        return sum(tree_cpu_s(s.proc.pid) for s in self.servers)  # with --server-processes: all of them

    @staticmethod
    def cpu_delta(a: tuple[float, ...], b: tuple[float, ...]) -> PhaseCpu:
        return PhaseCpu(b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3])

    async def quiesce(self, timeout: float = 30.0) -> None:
        """Wait until every worker has a long-poll outstanding and the server is (nearly) idle."""
        deadline = now() + timeout
        window = self.args.settle_ms / 1000
        while now() < deadline:
            polling = self.counter_totals()[C_POLLING]
            if polling >= self.n:
                t0, c0 = now(), self.server_cpu_s()
                await asyncio.sleep(window)
                busy = (self.server_cpu_s() - c0) / (now() - t0)
                if busy < 0.15 and self.counter_totals()[C_POLLING] >= self.n:
                    return
            else:
                await asyncio.sleep(0.002)
        print(f"  warning: no quiescence within {timeout} s (polling={self.counter_totals()[C_POLLING]})")

    # ---------------------------------------------------------------- scheduler side

    async def setup_datasets(self, count: int) -> tuple[str, list[str]]:
        conns = [Http("127.0.0.1", self.server.port, self.server.token) for _ in range(8)]
        cid = (await conns[0].json("POST", paths.CONFIGS, CONFIG, 201))["id"]
        ids: list[str] = [""] * count

        async def make(c: Http, idxs: range) -> None:
            for i in idxs:
                did = (await c.json("POST", paths.DATASETS, {"name": f"bench-ds-{i + 1}"}, 201))["id"]
                await c.json(
                    "PUT",
                    paths.datasource(did),
                    {"purpose": "INPUT", "type": "LOCAL", "fullPath": ""},
                    204,
                )
                ids[i] = did

        await asyncio.gather(*(make(c, range(j, count, len(conns))) for j, c in enumerate(conns)))
        for c in conns:
            await c.close()
        return cid, ids

    async def schedule(self, http: Http, cid: str, did: str) -> tuple[str, float, float]:
        t_sent = now()
        sid = (
            await http.json(
                "POST",
                paths.dataset_schedule(did),
                {"configId": cid, "priority": "MID", "runsOn": []},
                201,
            )
        )["id"]
        return sid, t_sent, now()

    async def run(self, n_schedules: int, burst_k: int, bursts: int = 1) -> Result:
        res = Result(self.n)
        cid, ds = await self.setup_datasets(n_schedules + burst_k * bursts)
        await self.start_clients()
        if self.on_registered is not None:
            self.on_registered()
        sched = Http("127.0.0.1", self.server.port, self.server.token)
        loop = asyncio.get_running_loop()
        try:
            # -------------------------------------------------------- idle: N long-polls, nothing to do
            await self.quiesce(timeout=max(30.0, self.n / 100))
            if self.args.idle_s:
                c0, cpu0 = self.counter_totals(), self.cpu_snapshot()
                await asyncio.sleep(self.args.idle_s)
                cpu1 = self.cpu_snapshot()
                res.idle_s, res.idle_server_cpu_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
                res.idle_polls = self.counter_totals()[C_POLLS] - c0[C_POLLS]
                print(
                    f"  idle:    {res.idle_s:.0f} s, server CPU {res.idle_server_cpu_s:.1f} s, "
                    f"{res.idle_polls} polls renewed"
                )
            # -------------------------------------------------------- latency: one schedule at a time
            await self.quiesce()
            c0, cpu0 = self.counter_totals(), self.cpu_snapshot()
            for i in range(n_schedules):
                await self.quiesce()
                fut = loop.create_future()
                sid, t_sent, t_ret = await self.schedule(sched, cid, ds[i])
                self.waiting[sid] = fut
                if sid not in self.claims:
                    try:
                        await asyncio.wait_for(fut, self.args.timeout)
                    except TimeoutError:
                        res.latency_missing += 1
                        continue
                t_lock = self.claims[sid]
                res.latency_sent_ms.append(1000 * (t_lock - t_sent))
                res.latency_ret_ms.append(1000 * (t_lock - t_ret))
                res.post_ms.append(1000 * (t_ret - t_sent))
                deadline = now() + self.args.timeout
                while sid not in self.dones and now() < deadline:
                    await asyncio.sleep(0.001)
            res.latency_cpu = self.cpu_delta(cpu0, self.cpu_snapshot())
            res.latency_counters = [b - a for a, b in zip(c0, self.counter_totals(), strict=True)]

            # -------------------------------------------------------- burst: K schedules at once, R times
            for r in range(bursts if burst_k else 0):
                b = await self.burst(cid, ds[n_schedules + r * burst_k : n_schedules + (r + 1) * burst_k])
                res.add_burst(b)
                res.lost += b.k - b.claimed
                if bursts > 1:
                    print(f"  burst {r + 1}/{bursts}: {fmt(b.claims_per_s)} claims/s, {b.cpu.line()}")
            res.lost += res.latency_missing
            res.duplicates = sum(c - 1 for c in self.claim_count.values() if c > 1)
        finally:
            await sched.close()
            self.stop_clients()
        return res


# ---------------------------------------------------------------------------------------------- py-spy


def start_profiler(pid: int, out: Path, py_spy: str, gil: bool) -> subprocess.Popen[bytes]:
    cmd = [
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--output",
        str(out),
        "--threads",
        "--rate",
        "200",
        "--nonblocking",
        "--subprocesses",  # a server started with --processes N: all of them
    ]
    return subprocess.Popen(
        [*cmd, "--gil"] if gil else cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---------------------------------------------------------------------------------------------- main


def fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.1f}"


def report(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workers | schedules | p50 ms | p99 ms | max ms | p50/p99 from POST return ms | burst K | claims/s "
        "| completed/s | burst p50/p99 ms | 409s in burst | lost | dup | idle CPU %/1000 workers |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['schedules']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['max_ms'])} "
            f"| {fmt(r['p50_from_return_ms'])} / {fmt(r['p99_from_return_ms'])} | {r['burst_k']} "
            f"| {fmt(r['claims_per_s'])} | {fmt(r['completed_per_s'])} "
            f"| {fmt(r['burst_p50_ms'])} / {fmt(r['burst_p99_ms'])} | {r['burst_counters'].get('conflicts', 0)} "
            f"| {r['lost']} | {r['duplicates']} | {fmt(r['idle_cpu_pct_per_1000'])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, nargs="+", help="worker counts (default 1 50 500; --quick: 1 50)")
    p.add_argument("--schedules", type=int, help="schedules in the latency phase, < 200 workers (default 200)")
    p.add_argument("--schedules-large", type=int, help="schedules in the latency phase, >= 200 workers (default 50)")
    p.add_argument("--burst", type=int, help="K runs scheduled at once in the burst phase, 0: skip (default 500)")
    p.add_argument(
        "--bursts",
        type=int,
        default=1,
        help="burst rounds, each on fresh datasets; the report shows the median round (default 1)",
    )
    p.add_argument("--scheduler-conns", type=int, default=8, help="concurrent schedule POSTs in the burst")
    p.add_argument("--client-procs", type=int, default=1, help="processes the workers are spread over")
    p.add_argument(
        "--pick",
        choices=["first", "random"],
        default="random",
        help="which run of a poll answer a worker tries first; it then tries the rest in order (default random)",
    )
    p.add_argument("--settle-ms", type=float, default=30, help="server-idle window before each timed schedule")
    p.add_argument("--timeout", type=float, help="seconds to wait for a claim or a burst (default 60)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (< 1 min): 1 and 50 workers, 20 schedules (3 at >= 200 workers), burst of 50",
    )
    p.add_argument("--json", type=Path, help="write all results (and raw latencies) to this file")
    p.add_argument(
        "--server-pythonpath",
        help="prepend to the server's PYTHONPATH, e.g. a patched copy of lightly_server or a --target dir with "
        "uvloop/httptools (uvicorn picks them up when importable)",
    )
    p.add_argument(
        "--postgres", help="admin URL of a PostgreSQL server, e.g. postgresql://postgres@127.0.0.1:5432/postgres"
    )
    p.add_argument("--replicas", type=int, default=1, help="server processes on the same database (default 1)")
    p.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="each replica is 'lightly-server serve --processes N' (one port, N processes; default 1)",
    )
    p.add_argument(
        "--poll",
        choices=["schedule", "work"],
        default="schedule",
        help="the workers' long poll: schedule = GET /v1/docker/worker/{id}/schedule (the protocol's, default); "
        "work = GET /v1/ext/workers/{id}/work (what this project's worker polls: shards first, then runs)",
    )
    p.add_argument("--wait-seconds", type=float, default=25, help="the workers' long-poll waitSeconds (default 25)")
    p.add_argument("--idle-s", type=float, default=0, help="idle phase: seconds of server CPU measured, 0: skip")
    p.add_argument("--py-spy", help="path of py-spy: profile the server during each run (raw stacks beside --json)")
    p.add_argument("--py-spy-gil", action="store_true", help="with --py-spy: sample only the GIL holder (CPU profile)")
    args = p.parse_args(argv)
    defaults = {"workers": [1, 50, 500], "schedules": 200, "schedules_large": 50, "burst": 500, "timeout": 60.0}
    if args.quick:
        defaults = {"workers": [1, 50], "schedules": 20, "schedules_large": 3, "burst": 50, "timeout": 20.0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


@contextlib.contextmanager
def bench_database(args: argparse.Namespace, n: int, workdir: Path) -> Any:
    """The database URL of one worker count: a SQLite file, or a fresh PostgreSQL database (dropped after)."""
    if not args.postgres:
        yield f"sqlite:///{workdir / 'bench.sqlite3'}"
        return
    import psycopg

    name = f"lightly_bench_{os.getpid()}_{n}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def bench_one(args: argparse.Namespace, n: int, workdir: Path, profile_dir: Path | None) -> dict[str, Any]:
    with bench_database(args, n, workdir) as db:
        servers: list[ServerProc] = []
        prof = None
        try:
            for i in range(args.replicas):
                rdir = workdir / f"replica{i}"
                rdir.mkdir(exist_ok=True)
                servers.append(start_server(rdir, args.server_pythonpath, db, args.server_processes))
            bench = Bench(args, n, servers)
            if profile_dir is not None and args.py_spy:
                out = profile_dir / f"server-{n}-workers{'-gil' if args.py_spy_gil else ''}.txt"

                def profile() -> None:  # the phases, not the registration of N workers
                    nonlocal prof
                    prof = start_profiler(servers[0].proc.pid, out, args.py_spy, args.py_spy_gil)

                bench.on_registered = profile
            n_sched = args.schedules if n < 200 else args.schedules_large
            res = await bench.run(n_sched, args.burst, args.bursts)
        finally:
            if prof is not None:
                stop_profiler(prof)
            for server in servers:
                stop_server(server)
    out = res.summary()
    out["raw_latency_sent_ms"] = res.latency_sent_ms
    out["raw_burst_latency_ms"] = res.burst_latency_ms
    print(
        f"  latency: {out['schedules']} schedules, p50 {fmt(out['p50_ms'])} ms, p99 {fmt(out['p99_ms'])} ms, "
        f"max {fmt(out['max_ms'])} ms (from POST return: p50 {fmt(out['p50_from_return_ms'])}, "
        f"p99 {fmt(out['p99_from_return_ms'])}; POST itself p50 {fmt(out['post_p50_ms'])} ms), "
        f"missing {out['missing']}"
    )
    print(f"           {res.latency_cpu.line()}; worker counters {out['latency_counters']}")
    if res.burst_k:
        print(
            f"  burst:   {res.burst_claimed}/{res.burst_k} claimed, {res.burst_done} completed; "
            f"{fmt(out['claims_per_s'])} claims/s, {fmt(out['completed_per_s'])} completed/s, "
            f"schedule POSTs {fmt(out['schedules_per_s'])}/s; per-run p50 {fmt(out['burst_p50_ms'])} ms, "
            f"p99 {fmt(out['burst_p99_ms'])} ms"
        )
        print(f"           {res.burst_cpu.line()}; worker counters {out['burst_counters']}")
        if len(res.burst_rounds) > 1:
            rounds = ", ".join(fmt(b.claims_per_s) for b in res.burst_rounds)
            print(f"           claims/s of the {len(res.burst_rounds)} rounds: {rounds} (the median above)")
    print(f"  lost {out['lost']}, duplicate claims {out['duplicates']}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"lightly-server dispatch benchmark: workers {args.workers}, {os.cpu_count()} CPUs, "
        f"python {sys.version.split()[0]}, {'PostgreSQL' if args.postgres else 'SQLite'} x{args.replicas}, "
        f"poll {args.poll}, waitSeconds {args.wait_seconds:g}"
    )
    results = []
    profile_dir = args.json.parent if args.json else None
    with tempfile.TemporaryDirectory(prefix="lightly-bench-") as tmp:
        for n in args.workers:
            workdir = Path(tmp) / f"n{n}"
            workdir.mkdir()
            print(f"\n== {n} workers ==")
            results.append(asyncio.run(bench_one(args, n, workdir, profile_dir)))
    print("\n" + report(results))
    base = next((r for r in results if r["workers"] == min(args.workers)), None)
    if base and len(results) > 1:
        print("\nratios to the smallest worker count (same run):")
        for r in results:
            if r is base:
                continue
            p50 = r["p50_ms"] / base["p50_ms"] if base["p50_ms"] else math.nan
            p99 = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else math.nan
            cps = r["claims_per_s"] / base["claims_per_s"] if base["claims_per_s"] else math.nan
            print(f"  {r['workers']} vs {base['workers']}: p50 x{p50:.1f}, p99 x{p99:.1f}, claims/s x{cps:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
