"""Fault injection on split runs (issue 11): kill -9 of a shard worker mid-shard, and of the coordinator
mid-run. Each case asserts that the run completes exactly once and that finished shards are not
recomputed (the server's shard listing: attempts; the workers' logs: which shard each one finished).

The coordinator holds at EMBEDDING (right after it published the shards) and shard workers hold at
``SHARD`` (a shard taken, before its work), through their failpoint directories; leases are short.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Api
from lightly_protocol import paths

from .fault_kit import (
    TOTALS,
    Scene,
    Server,
    Worker,
    check_outcomes,
    config,
    dataset,
    make_images,
    ok,
    register,
    run_states,
    scheduled,
    token,
)

pytest_plugins = ("faults.fault_report",)

SHARD_DONE = re.compile(r"shard (\d+) done: ")
SHARD_START = re.compile(r"shard (\d+): files \d+-\d+ of scheduled run (\w+) \(attempt (\d+)\)")


@pytest.fixture
def scene() -> Iterator[Scene]:
    s = Scene()
    started = time.monotonic()
    yield s
    s.stop()
    TOTALS["wall_seconds"] += time.monotonic() - started


def _setup(tmp_path: Path, scene: Scene, lease: float, n_images: int = 24) -> Api:
    server = Server(f"sqlite:///{tmp_path / 'shards.sqlite3'}", tmp_path, lease).start()
    scene.servers.append(server)
    make_images(tmp_path / "mounts" / "input", n=n_images)
    (tmp_path / "mounts" / "lightly").mkdir(parents=True, exist_ok=True)
    return Api(server.url, token(server.database_url))


def _worker(tmp_path: Path, scene: Scene, api: Api, name: str) -> Worker:
    wid = register(api, name)
    w = Worker(tmp_path, api.base, api.token, name, f"worker.worker_id={wid}", gate=tmp_path / f"gate-{name}")
    scene.workers.append(w)
    return w


def _plan(api: Api, sid: str) -> dict:
    return ok(api.get(paths.scheduled_shards(sid)))


def _done(workers: list[Worker]) -> list[int]:
    return sorted(int(i) for w in workers for i in SHARD_DONE.findall(w.log_path.read_text(errors="replace")))


def _split_run_held_at_embedding(
    api: Api, scene: Scene, coordinator: Worker, parallelism: int | str
) -> tuple[str, str]:
    """Schedules a split run (shards of 4) that ``coordinator`` takes, publishes and then holds at EMBEDDING;
    returns (dataset id, scheduled run id)."""
    coordinator.hold("EMBEDDING")
    coordinator.start()
    ds = dataset(api)
    cid = config(api, {"parallelism": parallelism, "shardSize": 4})
    sid = ok(api.post(paths.dataset_schedule(ds), json={"configId": cid, "priority": "MID", "runsOn": []}), 201)["id"]
    scene.wait("the coordinator published and held at EMBEDDING", lambda: coordinator.reached("EMBEDDING"), 90)
    return ds, sid


def test_kill_9_of_a_shard_worker_mid_shard(tmp_path: Path, scene: Scene) -> None:
    """The killed worker's shard reopens when its lease runs out and is done once, by another worker;
    the shards finished before are not recomputed."""
    api = _setup(tmp_path, scene, lease=4)
    coordinator, victim = _worker(tmp_path, scene, api, "coord"), _worker(tmp_path, scene, api, "victim")
    ds, sid = _split_run_held_at_embedding(api, scene, coordinator, 2)
    assert len(_plan(api, sid)["shards"]) == 6, scene.logs()  # 24 images / 4
    victim.hold("SHARD")
    victim.start()
    scene.wait("the victim holding a shard", lambda: victim.reached("SHARD"), 90)
    held = [s for s in _plan(api, sid)["shards"] if s["state"] == "LEASED"]
    assert len(held) == 1, f"{held}\n{scene.logs()}"
    victim.kill()
    coordinator.open_gate()
    scene.wait("the run DONE", lambda: scheduled(api, ds)[sid]["state"] == "DONE", 120)
    assert run_states(api, ds, sid) == ["COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, sid)], scene)
    assert _done([coordinator, victim]) == list(range(6)), f"each shard done once\n{scene.logs()}"
    attempts = {s["index"]: s["attempts"] for s in _plan(api, sid)["shards"]}
    assert attempts == {i: (2 if i == held[0]["index"] else 1) for i in range(6)}, f"{attempts}\n{scene.logs()}"
    starts = SHARD_START.findall(coordinator.log_path.read_text(errors="replace"))
    assert (str(held[0]["index"]), sid, "2") in starts, f"the coordinator redid the lost shard\n{scene.logs()}"


def test_kill_9_of_the_coordinator_mid_run(tmp_path: Path, scene: Scene) -> None:
    """The coordinator dies after publishing, while another worker holds a shard and a third has
    finished the rest: the retried run republishes the same listing, keeps the finished shards
    (attempts stay 1, nobody redoes them) and completes once when the held shard is done."""
    api = _setup(tmp_path, scene, lease=5)
    coordinator = _worker(tmp_path, scene, api, "coord")
    holder, busy = _worker(tmp_path, scene, api, "holder"), _worker(tmp_path, scene, api, "busy")
    ds, sid = _split_run_held_at_embedding(api, scene, coordinator, "auto")
    holder.hold("SHARD")
    holder.start()
    scene.wait("the holder holding a shard", lambda: holder.reached("SHARD"), 90)
    held_since = time.monotonic()
    busy.start()
    scene.wait(
        "5 of 6 shards DONE by the third worker",
        lambda: sum(s["state"] == "DONE" for s in _plan(api, sid)["shards"]) == 5,
        120,
    )
    time.sleep(max(0.0, held_since + 7 - time.monotonic()))  # held past the 5 s lease: its heartbeats keep it
    held = [s for s in _plan(api, sid)["shards"] if s["state"] == "LEASED"]
    assert len(held) == 1 and held[0]["attempts"] == 1 and held[0]["processed"] == 0, f"{held}\n{scene.logs()}"
    coordinator.kill()
    (coordinator.gate / "EMBEDDING.hold").unlink()
    coordinator.start()  # same worker id, new session: its run is released at once and retried
    scene.wait("the run CRASHED", lambda: run_states(api, ds, sid)[:1] == ["CRASHED"], 60)
    workers = [coordinator, holder, busy]
    logs = lambda: " ".join(w.log_path.read_text(errors="replace") for w in workers)  # noqa: E731
    scene.wait(
        "the retried run resuming the plan", lambda: "5 finished shards kept from an earlier attempt" in logs(), 90
    )
    holder.open_gate()
    scene.wait("the run DONE", lambda: scheduled(api, ds)[sid]["state"] == "DONE", 120)
    assert run_states(api, ds, sid) == ["CRASHED", "COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, sid)], scene)
    assert _done(workers) == list(range(6)), f"each shard done once\n{scene.logs()}"
    attempts = [s["attempts"] for s in _plan(api, sid)["shards"]]
    assert attempts == [1] * 6, f"{attempts}\n{scene.logs()}"
    assert len(SHARD_START.findall(logs())) == 6, f"no shard started twice\n{scene.logs()}"


def test_sigterm_of_a_shard_worker_hands_its_shard_back_at_once(tmp_path: Path, scene: Scene) -> None:
    """The lease is long (60 s): only the hand-back can reopen the shard within the waits here."""
    api = _setup(tmp_path, scene, lease=60)
    coordinator, stopping = _worker(tmp_path, scene, api, "coord"), _worker(tmp_path, scene, api, "stopping")
    ds, sid = _split_run_held_at_embedding(api, scene, coordinator, "auto")
    stopping.hold("SHARD")
    stopping.start()
    scene.wait("the stopping worker holding a shard", lambda: stopping.reached("SHARD"), 90)
    held = next(s for s in _plan(api, sid)["shards"] if s["state"] == "LEASED")
    assert stopping.proc is not None
    stopping.proc.send_signal(signal.SIGTERM)
    assert stopping.proc.wait(30) == 0, scene.logs()
    shard = next(s for s in _plan(api, sid)["shards"] if s["index"] == held["index"])
    assert shard["state"] == "OPEN", f"{shard}\n{scene.logs()}"
    coordinator.open_gate()
    scene.wait("the run DONE", lambda: scheduled(api, ds)[sid]["state"] == "DONE", 120)
    assert run_states(api, ds, sid) == ["COMPLETED"], scene.logs()
    check_outcomes(api, [(ds, sid)], scene)
    assert _done([coordinator, stopping]) == list(range(6)), f"each shard done once\n{scene.logs()}"
