"""``lightly-server serve --processes N``: N processes on one port (PostgreSQL; SQLite is refused).

Real processes over real HTTP on a real PostgreSQL: they start and stop together, a killed one is
replaced, ``/metrics`` adds up every process, and a run scheduled through any process reaches the
waiting workers of all of them, each run one worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Api, Backend, ServerProcess, backend, require_pg
from flows import config, dataset, ok, register, schedule, wait_until
from lightly_protocol import paths


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return found


def _server_processes(parent: int) -> list[int]:
    """The serving processes (uvicorn's spawned children; not multiprocessing's resource tracker)."""
    out = []
    for c in _children(parent):
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            out.append(c)
    return sorted(out)


def _shared_folder(pid: int) -> Path:
    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    (line,) = [e for e in env if e.startswith(b"LIGHTLY_SERVER_CHILD_SETTINGS=")]
    return Path(line.split(b"=", 1)[1].decode()).parent


@pytest.fixture(scope="module")
def db_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """PostgreSQL only: several processes need it (this module's own, overriding conftest's)."""
    require_pg()
    with backend("postgresql", tmp_path_factory.mktemp("postgresql")) as b:
        yield b


@pytest.fixture(scope="module")
def multi(db_backend: Backend) -> ServerProcess:
    srv = db_backend.start_server("--processes", "2")
    wait_until(lambda: len(_server_processes(srv.proc.pid)) == 2, timeout=30)
    return srv


def test_the_processes_share_one_port_and_each_answers(multi: ServerProcess, db_backend: Backend) -> None:
    kids = _server_processes(multi.proc.pid)
    assert len(kids) == 2
    token = db_backend.token()
    answered = 0
    for _ in range(30):  # a new connection each: the kernel hands them to either process
        with httpx.Client(base_url=multi.url, timeout=10) as http:
            r = http.get(paths.DATASETS, params={"token": token})
            assert r.status_code == 200, r.text
            answered += 1
    metrics = _shared_folder(kids[0]) / "metrics"
    assert sorted(p.name for p in metrics.glob("histogram_*.db")) == [f"histogram_{k}.db" for k in kids]
    # /metrics from whichever process answers counts the requests of both
    for _ in range(6):
        with httpx.Client(base_url=multi.url, timeout=10) as http:
            text = http.get("/metrics").text
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("lightly_server_http_request_duration_seconds_count{")
            and f'route="{paths.DATASETS}"' in line
            and 'method="GET"' in line
        ]
        assert sum(counts) >= answered, text[-2000:]


def test_a_run_scheduled_anywhere_reaches_waiting_workers_of_every_process(
    multi: ServerProcess, db_backend: Backend
) -> None:
    api = Api(multi.url, db_backend.token())
    wids = [register(api) for _ in range(12)]
    cid = config(api)
    answers: dict[str, list] = {}

    def poll(wid: str) -> None:  # each worker on its own connection, so on either process
        with httpx.Client(base_url=multi.url, timeout=40) as http:
            ok(http.get(paths.worker_work(wid), params={"token": api.token}))  # known to its process now
            r = http.get(paths.worker_work(wid), params={"token": api.token, "waitSeconds": "20"})
            answers[wid] = ok(r)["scheduled"]

    threads = [threading.Thread(target=poll, args=(w,)) for w in wids]
    for t in threads:
        t.start()
    time.sleep(1.5)  # all of them waiting
    started = time.monotonic()
    sids = {schedule(Api(multi.url, api.token), dataset(api), cid) for _ in range(12)}
    for t in threads:
        t.join(40)
    handed = [rows[0]["id"] for rows in answers.values() if rows]
    assert sorted(handed) == sorted(sids), answers  # every run handed, each to one worker
    assert time.monotonic() - started < 15, "the waiters should be woken, not run out their 20 s wait"


def test_a_killed_process_is_replaced_and_the_server_keeps_answering(multi: ServerProcess, db_backend: Backend) -> None:
    before = _server_processes(multi.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    wait_until(
        lambda: len(_server_processes(multi.proc.pid)) == 2 and before[0] not in _server_processes(multi.proc.pid),
        timeout=60,
    )
    token = db_backend.token()
    for _ in range(10):
        with httpx.Client(base_url=multi.url, timeout=10) as http:
            assert http.get(paths.DATASETS, params={"token": token}).status_code == 200
    if db_backend.kind == "sqlite":  # the new process takes part in the wake-ups
        siblings = _shared_folder(before[1]) / "siblings"
        wait_until(
            lambda: (
                sorted(p.name for p in siblings.glob("*.sock"))
                == sorted(f"{k}.sock" for k in _server_processes(multi.proc.pid))
            ),
            timeout=20,
        )


def test_stopping_the_server_stops_every_process_and_removes_the_shared_folder(db_backend: Backend) -> None:
    srv = db_backend.start_server("--processes", "3")
    wait_until(lambda: len(_server_processes(srv.proc.pid)) == 3, timeout=30)
    kids = _server_processes(srv.proc.pid)
    shared = _shared_folder(kids[0])
    assert shared.is_dir() and oct(shared.stat().st_mode & 0o777) == "0o700"
    srv.stop()
    for k in kids:
        assert not Path(f"/proc/{k}").exists() or b"zombie" in Path(f"/proc/{k}/status").read_bytes().lower()
    assert not shared.exists()


@pytest.mark.parametrize(
    ("processes", "database", "message"),
    [
        ("0", "postgresql://u@127.0.0.1:1/x", "--processes must be 1 to 64 (got 0)"),
        ("65", "postgresql://u@127.0.0.1:1/x", "--processes must be 1 to 64 (got 65)"),
        ("2", "sqlite:///{tmp}/x.sqlite3", "--processes > 1 needs PostgreSQL"),
    ],
)
def test_a_bad_number_of_processes_is_refused_with_what_to_do(
    tmp_path: Path, processes: str, database: str, message: str
) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "lightly_server.cli", "serve", "--processes", processes]
    r = subprocess.run([*cmd, "--database", database.format(tmp=tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "x.sqlite3").exists()  # refused before anything was created
