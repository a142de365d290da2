"""Fault injection (issue 9): kill -9, restarts, SIGTERM, server outages, a replica lost mid-burst,
and the hostile-input probes, with real server and worker processes.

Each case asserts that every scheduled run ends COMPLETED exactly once, or FAILED with a reason,
and that no dataset stays blocked; the suite's figures are printed in the terminal summary.
Workers hold at a run stage through their failpoint directory, so every kill lands where it is
meant to, and leases are short (server flags) so each case takes seconds.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api, fresh_database
from lightly_protocol import paths

from .fault_kit import (
    TOTALS,
    Scene,
    Server,
    Worker,
    all_done,
    check_outcomes,
    config,
    dataset,
    logs_text,
    make_images,
    ok,
    register,
    run_states,
    runs_of,
    schedule,
    scheduled,
    token,
)

pytest_plugins = ("faults.fault_report",)


@pytest.fixture
def scene() -> Iterator[Scene]:
    s = Scene()
    started = time.monotonic()
    yield s
    s.stop()
    TOTALS["wall_seconds"] += time.monotonic() - started


def _setup(tmp_path: Path, scene: Scene, lease: float, max_attempts: int = 3, db: str | None = None) -> Api:
    server = Server(db or f"sqlite:///{tmp_path / 'faults.sqlite3'}", tmp_path, lease, max_attempts).start()
    scene.servers.append(server)
    make_images(tmp_path / "mounts" / "input")
    (tmp_path / "mounts" / "lightly").mkdir(parents=True, exist_ok=True)
    return Api(server.url, token(server.database_url))


def _worker(tmp_path: Path, scene: Scene, api: Api, name: str, *extra: str, url: str | None = None) -> Worker:
    w = Worker(tmp_path, url or api.base, api.token, name, *extra, gate=tmp_path / f"gate-{name}")
    scene.workers.append(w)
    return w


def test_kill_9_and_restart_with_the_same_id(tmp_path: Path, scene: Scene) -> None:
    """Issue 9.1: a pod restart (same worker id) hands the run back at once; the dataset is not blocked.

    The lease is long (60 s), so only the ownership rule can free the run within the waits here.
    """
    api = _setup(tmp_path, scene, lease=60)
    wid = register(api, "restarting-worker")
    w = _worker(tmp_path, scene, api, "restarting", f"worker.worker_id={wid}")
    w.hold("EMBEDDING")
    w.start()
    ds, cid = dataset(api), config(api)
    s1, s2 = schedule(api, ds, cid), schedule(api, ds, cid)  # one dataset: s2 waits for s1's lock
    scene.wait("the worker at EMBEDDING of s1", lambda: w.reached("EMBEDDING") and run_states(api, ds, s1), 90)
    w.kill()
    (w.gate / "EMBEDDING.reached").unlink()
    w.start()  # at once, with the same worker id
    scene.wait("s1's run released by the new process", lambda: run_states(api, ds, s1)[:1] == ["CRASHED"], 60)
    first = runs_of(api, ds)[0]
    assert "restarted" in first["message"], f"{first}\n{scene.logs()}"
    scene.wait("the new process at EMBEDDING of s1", lambda: w.reached("EMBEDDING"), 90)
    w.open_gate()
    scene.wait("s1 and s2 DONE", lambda: all_done(api, [(ds, s1), (ds, s2)]), 120)
    assert run_states(api, ds, s1) == ["CRASHED", "COMPLETED"], scene.logs()
    assert run_states(api, ds, s2) == ["COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, s1), (ds, s2)], scene)
    assert ok(api.get(paths.worker(wid)))["state"] == "IDLE", scene.logs()


def test_kill_9_and_takeover_by_another_worker(tmp_path: Path, scene: Scene) -> None:
    api = _setup(tmp_path, scene, lease=3)
    lost = _worker(tmp_path, scene, api, "lost")
    lost.hold("EMBEDDING")
    lost.start()
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    scene.wait("the first worker at EMBEDDING", lambda: lost.reached("EMBEDDING"), 90)
    lost.kill()
    healthy = _worker(tmp_path, scene, api, "healthy").start()
    scene.wait("the run DONE by the other worker", lambda: all_done(api, [(ds, sid)]), 120)
    assert run_states(api, ds, sid) == ["CRASHED", "COMPLETED"], scene.logs()
    assert "lease expired" in runs_of(api, ds)[0]["message"], scene.logs()
    check_outcomes(api, [(ds, sid)], scene)
    states = {w["name"]: w["state"] for w in ok(api.get(paths.WORKERS))}
    assert states["lost"] == "OFFLINE" and states["healthy"] == "IDLE", scene.logs()
    assert healthy.proc is not None and healthy.proc.poll() is None, scene.logs()


def test_sigterm_hands_the_run_back(tmp_path: Path, scene: Scene) -> None:
    api = _setup(tmp_path, scene, lease=30)
    first = _worker(tmp_path, scene, api, "stopping", "worker.shutdown_grace_seconds=0")
    first.hold("EMBEDDING")
    first.start()
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    scene.wait("the worker at EMBEDDING", lambda: first.reached("EMBEDDING"), 90)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(30) == 0, scene.logs()
    assert run_states(api, ds, sid) == ["ABORTED"], scene.logs()
    assert scheduled(api, ds)[sid]["state"] == "OPEN", scene.logs()  # back in the queue at once, no lease to wait for
    _worker(tmp_path, scene, api, "next").start()
    scene.wait("the run DONE by the next worker", lambda: all_done(api, [(ds, sid)]), 120)
    assert run_states(api, ds, sid) == ["ABORTED", "COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, sid)], scene)


def test_server_outages_longer_than_the_lease_lose_nothing(tmp_path: Path, scene: Scene) -> None:
    """Issue 9.5: two outages longer than the lease with --max-attempts 2: the held run still completes once."""
    api = _setup(tmp_path, scene, lease=4, max_attempts=2)
    server = scene.servers[0]
    w = _worker(tmp_path, scene, api, "patient")
    w.hold("EMBEDDING")
    w.start()
    ds, ds2, cid = dataset(api), dataset(api), config(api)
    sid = schedule(api, ds, cid)
    scene.wait("the worker at EMBEDDING", lambda: w.reached("EMBEDDING"), 90)
    sid2 = schedule(api, ds2, cid)  # queued behind the busy worker
    for _ in range(2):
        server.kill()
        time.sleep(5.5)  # longer than the 4 s lease
        server.start()  # same database, same port
        time.sleep(2.0)  # past the first sweeps after the start
        assert scheduled(api, ds)[sid]["state"] == "LOCKED", scene.logs()
        assert run_states(api, ds, sid) == ["EMBEDDING"], scene.logs()
    w.open_gate()
    scene.wait("both runs DONE", lambda: all_done(api, [(ds, sid), (ds2, sid2)]), 120)
    assert run_states(api, ds, sid) == ["COMPLETED"] and run_states(api, ds2, sid2) == ["COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, sid), (ds2, sid2)], scene)


def test_postgresql_two_replicas_one_killed_mid_burst(tmp_path: Path, scene: Scene) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        api_a = _setup(tmp_path, scene, lease=4, db=url)
        replica_b = Server(url, tmp_path, 4).start()
        scene.servers.append(replica_b)
        api_b = Api(replica_b.url, api_a.token)
        wa_id = register(api_a, "on-replica-a")
        wa = _worker(tmp_path, scene, api_a, "on-replica-a", f"worker.worker_id={wa_id}")
        wa.hold("EMBEDDING")
        wa.start()
        _worker(tmp_path, scene, api_b, "on-replica-b", url=replica_b.url).start()
        cid = config(api_a)
        pairs: list[tuple[str, str]] = []
        for i in range(3):
            api = (api_a, api_b)[i % 2]
            ds = dataset(api)
            pairs.append((ds, schedule(api, ds, cid)))
        scene.wait("replica A's worker holding a run", lambda: wa.reached("EMBEDDING"), 90)
        scene.servers[0].kill()  # mid-burst: replica A dies while its worker holds a run
        wa.open_gate()
        for _ in range(3):  # the burst goes on through replica B
            ds = dataset(api_b)
            pairs.append((ds, schedule(api_b, ds, cid)))
        time.sleep(5)  # longer than the lease: replica B reopens what replica A's worker held
        scene.servers[0].start()
        scene.wait("all runs DONE", lambda: all_done(api_b, pairs), 180)
        check_outcomes(api_b, pairs, scene)
        scene.stop()


def test_probe_config_cannot_read_files_outside_dot_lightly(tmp_path: Path, scene: Scene) -> None:
    """Issue 9.3 probe: ``embeddings: /etc/passwd`` and ``relevant_filenames_file: .lightly/../..``."""
    api = _setup(tmp_path, scene, lease=30)
    w = _worker(tmp_path, scene, api, "careful").start()
    pairs = []
    for docker in (
        {"embeddings": "/etc/passwd"},
        {"embeddings": "../../../../../../../../etc/passwd"},
        {"relevantFilenamesFile": ".lightly/../../../../../../../../etc/passwd"},
    ):
        ds = dataset(api)
        body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": _selection()}}
        created = api.post(paths.CONFIGS, json=body)
        if created.status_code == 400:
            continue  # refused at the API already: also fine
        cid = ok(created, 201)["id"]
        r = api.post(
            f"/v1/datasets/{ds}/docker/worker/schedule",
            params={"disableConfigValidation": "true"},
            json={"configId": cid, "priority": "MID", "runsOn": []},
        )
        pairs.append((ds, ok(r, 201)["id"]))
    scene.wait("the probes DONE", lambda: all_done(api, pairs), 120)
    for ds, _sid in pairs:
        run = runs_of(api, ds)[0]
        assert run["state"] == "FAILED" and "must" in run["message"], f"{run}\n{scene.logs()}"
        assert "root:" not in run["message"] and "root:" not in logs_text(api, run["id"]), scene.logs()
    assert "root:" not in w.log_path.read_text(errors="replace"), scene.logs()
    check_outcomes(api, pairs, scene)


def test_probe_symlink_loops_and_links_out_of_the_input(tmp_path: Path, scene: Scene) -> None:
    """Issue 9.4 probe: ``a -> .`` and ``b -> .`` hung the worker; links out of the input were selected."""
    api = _setup(tmp_path, scene, lease=30)
    inp = tmp_path / "mounts" / "input"
    (inp / "a").symlink_to(".")
    (inp / "b").symlink_to(".")
    make_images(tmp_path / "elsewhere", 2, seed=7)
    (inp / "leak.png").symlink_to(tmp_path / "elsewhere" / "img_00.png")
    (inp / "leaks").symlink_to(tmp_path / "elsewhere")
    _worker(tmp_path, scene, api, "walker").start()
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    scene.wait("the run DONE", lambda: all_done(api, [(ds, sid)]), 120)
    run = runs_of(api, ds)[0]
    assert run["state"] == "COMPLETED" and "of 6 samples" in run["message"], f"{run}\n{scene.logs()}"
    logs = logs_text(api, run["id"])
    assert "skipping symlink a" in logs and "skipping symlink leak.png: it points outside" in logs, scene.logs()
    check_outcomes(api, [(ds, sid)], scene)


def _selection() -> dict:
    return {"nSamples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
