"""Fault-injection kit: server and worker processes that tests kill, stop and restart, and the checks.

Servers run on a fixed port so a restarted one is reachable at the same URL; workers run in
waiting mode on tiny generated images (``device=cpu``, a tiny random-init model), and hold at a
run stage through the worker's failpoint directory (``LIGHTLY_WORKER_FAILPOINT_DIR``) until the
test lets them go. Every bounded wait prints the server and worker log tails when it fails.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from conftest import Api
from lightly_devkit.net import free_port
from lightly_devkit.processes import stop_process
from lightly_devkit.servers import create_token, loopback_env, start_server
from lightly_protocol import paths
from PIL import Image

#: figures over the whole suite (printed in the terminal summary by fault_report)
TOTALS: dict[str, Any] = {
    "runs_tried": 0,
    "runs_completed": 0,
    "runs_failed": 0,
    "runs_lost": 0,
    "5xx": 0,
    "wall_seconds": 0.0,
}

SELECTION = {"nSamples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


def _env() -> dict[str, str]:
    return loopback_env()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Server:
    """A server process on a fixed port; ``kill`` (-9) and ``start`` again on the same database."""

    database_url: str
    tmp: Path
    lease_seconds: float
    max_attempts: int = 3
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.tmp / f"server-{self.port}.log"

    def start(self) -> Server:
        self.starts += 1
        with open(self.log_path, "ab") as fh:
            fh.write(f"---- start {self.starts}\n".encode())
        try:
            started = start_server(
                self.database_url,
                self.log_path,
                "--max-attempts",
                str(self.max_attempts),
                port=self.port,
                artifacts_dir=self.tmp / "artifacts",
                lease_seconds=self.lease_seconds,
                timeout=40,
                append_log=True,
            )
        except RuntimeError as exc:
            raise AssertionError(f"{str(exc).splitlines()[0]}\n{tail(self.log_path)}") from None
        self.proc = started.proc
        return self

    def server_errors(self) -> int:
        """5xx answers of this process so far (its request metrics), 0 when it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return 0
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        pattern = r'^lightly_server_http_request_duration_seconds_count\{[^}]*status="5\d\d"[^}]*\} ([0-9.e+]+)$'
        return int(sum(float(m) for m in re.findall(pattern, text, re.M)))

    def kill(self) -> None:
        """kill -9; the 5xx it answered are counted first (the metrics die with it)."""
        TOTALS["5xx"] += self.server_errors()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            TOTALS["5xx"] += self.server_errors()
            stop_process(self.proc)


def token(database_url: str) -> str:
    return create_token(database_url, f"faults-{secrets.token_hex(4)}")


def make_images(root: Path, n: int = 6, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        arr = np.clip(rng.normal(rng.integers(0, 255, 3), 40, size=(32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img_{i:02d}.png")
        names.append(f"img_{i:02d}.png")
    return names


class Worker:
    """A worker process in waiting mode, with its failpoint directory ``gate``."""

    def __init__(self, tmp: Path, server_url: str, api_token: str, name: str, *extra: str, gate: Path) -> None:
        self.tmp, self.server_url, self.token, self.name, self.extra, self.gate = (
            tmp,
            server_url,
            api_token,
            name,
            extra,
            gate,
        )
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        gate.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.tmp / f"worker-{self.name}.log"

    def start(self, server_url: str | None = None) -> Worker:
        self.starts += 1
        self.server_url = server_url or self.server_url
        token_file = self.tmp / f"{self.name}.token"
        token_file.write_text(self.token)
        env = _env()
        env.update(
            LIGHTLY_SERVER_LOCATION=self.server_url,
            LIGHTLY_TOKEN_FILE=str(token_file),
            LIGHTLY_WORKER_FAILPOINT_DIR=str(self.gate),
        )
        cmd = [
            sys.executable,
            "-m",
            "lightly_worker.cli",
            f"input_mount={self.tmp / 'mounts' / 'input'}",
            f"lightly_mount={self.tmp / 'mounts' / 'lightly'}",
            f"output_dir={self.tmp / 'output' / self.name}",
            "worker.poll_wait_seconds=2",
            "worker.poll_interval_seconds=1",
            "worker.heartbeat_seconds=1",
            "worker.request_timeout_seconds=10",
            "embedding.model=resnet-tiny",
            "embedding.input_size=32",
            "lightly.loader.num_workers=0",
            "device=cpu",
            *self.extra,
        ]
        if not any(x.startswith("worker.worker_id=") for x in self.extra):
            cmd.append(f"worker.name={self.name}")
        with open(self.log_path, "ab") as fh:
            fh.write(f"---- start {self.starts}\n".encode())
            fh.flush()
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)

    def hold(self, stage: str) -> None:
        """The next runs wait at ``stage`` until ``open_gate``."""
        (self.gate / f"{stage}.hold").write_text("hold")

    def reached(self, stage: str) -> bool:
        return (self.gate / f"{stage}.reached").exists()

    def open_gate(self, stage: str = "all") -> None:
        (self.gate / f"{stage}.go").write_text("go")


@dataclass
class Scene:
    """Servers and workers of one case, for log tails on failure."""

    servers: list[Server] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    def logs(self) -> str:
        parts = [f"== server {s.url} (starts {s.starts})\n{tail(s.log_path)}" for s in self.servers]
        parts += [f"== worker {w.name} (starts {w.starts})\n{tail(w.log_path)}" for w in self.workers]
        return "\n".join(parts)

    def wait(self, what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
        """Poll ``predicate`` (errors count as not yet) until truthy; on timeout fail with what was seen."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
            except (httpx.HTTPError, AssertionError, KeyError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if last:
                    return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {last!r}\n{self.logs()}")

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        for s in self.servers:
            s.stop()


# ---------------------------------------------------------------- protocol steps (raw HTTP)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
    )
    if response.status_code >= 500:
        TOTALS["5xx"] += 1
    return response.json() if response.content else None


def register(api: Api, name: str) -> str:
    body = {"name": name, "workerType": "FULL", "labels": []}
    return ok(api.post(paths.WORKERS, json=body), 201)["id"]


def dataset(api: Api, config: dict | None = None) -> str:
    ds = ok(api.post(paths.DATASETS, json={"name": f"faults-{secrets.token_hex(4)}"}), 201)["id"]
    for purpose in ("INPUT", "LIGHTLY"):
        body = {"purpose": purpose, "type": "LOCAL", "fullPath": ""}
        ok(api.put(paths.datasource(ds), json=body), 204)
    return ds


def config(api: Api, docker: dict | None = None) -> str:
    body: dict[str, Any] = {"version": "V4", "config": {"workerType": "FULL", "selection": SELECTION}}
    if docker:
        body["config"]["docker"] = docker
    return ok(api.post(paths.CONFIGS, json=body), 201)["id"]


def schedule(api: Api, ds: str, cid: str) -> str:
    body = {"configId": cid, "priority": "MID", "runsOn": []}
    return ok(api.post(paths.dataset_schedule(ds), json=body), 201)["id"]


def scheduled(api: Api, ds: str) -> dict[str, dict]:
    states = ["OPEN", "LOCKED", "DONE", "CANCELED"]
    return {r["id"]: r for r in ok(api.get(paths.dataset_schedule(ds), params={"states": states}))}


def runs_of(api: Api, ds: str) -> list[dict]:
    return ok(api.get(paths.runs_of_dataset(ds)))


def run_states(api: Api, ds: str, sid: str) -> list[str]:
    return [r["state"] for r in runs_of(api, ds) if r["scheduledId"] == sid]


def all_done(api: Api, pairs: Iterable[tuple[str, str]]) -> bool:
    return all(scheduled(api, ds)[sid]["state"] == "DONE" for ds, sid in pairs)


def check_outcomes(api: Api, pairs: list[tuple[str, str]], scene: Scene) -> dict[str, int]:
    """Every scheduled run ended COMPLETED exactly once, or FAILED with a reason; no dataset is blocked.

    Adds the figures to TOTALS and returns this case's.
    """
    figures = {"runs_tried": len(pairs), "runs_completed": 0, "runs_failed": 0, "runs_lost": 0}
    problems = []
    for ds, sid in pairs:
        s = scheduled(api, ds)[sid]
        runs = [r for r in runs_of(api, ds) if r["scheduledId"] == sid]
        states = [r["state"] for r in runs]
        completed = states.count("COMPLETED")
        if s["state"] == "DONE" and completed == 1 and all(r["state"] != "STARTED" for r in runs):
            figures["runs_completed"] += 1
        elif s["state"] == "DONE" and completed == 0 and runs and runs[-1]["state"] == "FAILED" and runs[-1]["message"]:
            figures["runs_failed"] += 1
        else:
            figures["runs_lost"] += 1
            problems.append(f"scheduled run {sid}: {s['state']}, runs {states}")
        locked = [x for x in scheduled(api, ds).values() if x["state"] == "LOCKED"]
        if locked:
            problems.append(f"dataset {ds} still blocked by LOCKED {[x['id'] for x in locked]}")
    for key, value in figures.items():
        TOTALS[key] += value
    for s in scene.servers:  # (counted into TOTALS when the process is stopped or killed)
        if s.server_errors():
            problems.append(f"server {s.url} answered {s.server_errors()} requests with 5xx")
        if "Traceback" in s.log_path.read_text(errors="replace"):
            problems.append(f"server {s.url} logged a traceback")
    for w in scene.workers:
        found = re.findall(r"not answering \((5\d\d) ", w.log_path.read_text(errors="replace"))
        TOTALS["5xx"] += len(found)
        if found:
            problems.append(f"worker {w.name} saw 5xx answers: {found}")
    assert not problems, "\n".join(problems) + "\n" + scene.logs()
    return figures


def logs_text(api: Api, run_id: str) -> str:
    return json.dumps(ok(api.get(paths.run_logs(run_id))))
