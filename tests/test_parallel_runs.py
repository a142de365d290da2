"""Split runs (issue 11) with a real server and real worker processes: ``parallelism: 3`` selects
exactly what one worker selects (custom embeddings and the default model), two users' split runs
interleave without mixing shards, and the unmodified lightly client's refusal of the extension keys.

Workers are the real CLI in waiting mode (``tests/faults/fault_kit.py``). The coordinator of a split
run holds at EMBEDDING (right after it published the shards) until the other workers have taken
shards, so each case really spreads its shards over several processes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import Api
from faults.fault_kit import Scene, Server, Worker, make_images, ok, register, run_states, runs_of, scheduled, token
from lightly_devkit.data import make_dataset
from lightly_protocol import paths
from lightly_worker.embed import list_samples, load_custom_embeddings, save_embeddings

SELECTION = {"nSamples": 12, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
SELECTION_SNAKE = {
    "n_samples": 12,
    "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
}
SHARD_DONE = re.compile(r"shard (\d+) done: (\d+) files")


@pytest.fixture
def scene() -> Iterator[Scene]:
    s = Scene()
    yield s
    s.stop()


def _server(tmp: Path, scene: Scene, lease: float = 6) -> Server:
    server = Server(f"sqlite:///{tmp / 'parallel.sqlite3'}", tmp, lease).start()
    scene.servers.append(server)
    (tmp / "mounts" / "lightly" / ".lightly" / "embeddings").mkdir(parents=True, exist_ok=True)
    return server


def _dataset(api: Api, folder: str) -> str:
    ds = ok(api.post(paths.DATASETS, json={"name": f"parallel-{secrets.token_hex(4)}"}), 201)["id"]
    ok(api.put(paths.datasource(ds), json={"purpose": "INPUT", "type": "LOCAL", "fullPath": folder}), 204)
    ok(api.put(paths.datasource(ds), json={"purpose": "LIGHTLY", "type": "LOCAL", "fullPath": ""}), 204)
    return ds


def _config(api: Api, docker: dict[str, Any]) -> str:
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": SELECTION}}
    return ok(api.post(paths.CONFIGS, json=body), 201)["id"]


def _schedule(api: Api, ds: str, cid: str) -> str:
    return ok(api.post(paths.dataset_schedule(ds), json={"configId": cid, "priority": "MID", "runsOn": []}), 201)["id"]


def _workers(tmp: Path, scene: Scene, api: Api, prefix: str, n: int, *extra: str) -> list[Worker]:
    out = []
    for i in range(n):
        name = f"{prefix}-{i}"
        wid = register(api, name)
        w = Worker(tmp, api.base, api.token, name, f"worker.worker_id={wid}", *extra, gate=tmp / f"gate-{name}")
        scene.workers.append(w)
        out.append(w.start())
    return out


def _finished(api: Api, ds: str, sid: str) -> dict:
    """The scheduled run's last run once the scheduled run is DONE, else {}.

    The scheduled run is read first: it becomes DONE in the transaction that ends its run, so a run
    read after it is final (read the other way round, a run could be caught just before its end).
    """
    if scheduled(api, ds)[sid]["state"] != "DONE":
        return {}
    run = [r for r in runs_of(api, ds) if r["scheduledId"] == sid]
    return run[-1] if run else {}


def _selected(api: Api, ds: str, run_id: str) -> list[str]:
    tag = ok(api.get(f"{paths.run(run_id)}/tags"))[0]
    return ok(api.get(f"{paths.DATASETS}/{ds}/tags/{tag['id']}/filenames"))


def _output_dir(run: dict) -> Path:
    m = re.search(r"outputs in (\S+)$", run["message"] or "")
    assert m, run
    return Path(m.group(1))


def _shards_done(workers: list[Worker], since: dict[str, int]) -> dict[str, list[int]]:
    """Shard indexes each worker finished (log lines after ``since`` characters of its log)."""
    return {
        w.name: [int(i) for i, _ in SHARD_DONE.findall(w.log_path.read_text(errors="replace")[since.get(w.name, 0) :])]
        for w in workers
    }


def _log_sizes(workers: list[Worker]) -> dict[str, int]:
    return {w.name: len(w.log_path.read_text(errors="replace")) for w in workers}


def _spread(scene: Scene, api: Api, sid: str, workers: list[Worker], timeout: float = 120) -> str:
    """Wait for the coordinator (held at EMBEDDING) and for shards held or done by >= 2 other workers;
    then let the coordinator go. Returns the coordinator's name."""
    coordinator = scene.wait(
        "a coordinator at EMBEDDING", lambda: next((w for w in workers if w.reached("EMBEDDING")), None), timeout
    )

    def others() -> Any:
        plan = ok(api.get(paths.scheduled_shards(sid)))
        holders = {s["workerId"] for s in plan["shards"] if s["state"] in ("LEASED", "DONE") and s["workerId"]}
        return len(holders) >= 2 or (all(s["state"] == "DONE" for s in plan["shards"]) and plan)

    scene.wait("shards taken by the other workers", others, timeout)
    for w in workers:
        w.open_gate()
    return coordinator.name


def _compare(single_dir: Path, split_dir: Path) -> float:
    for rel in ("corrupt_filenames.txt", "duplicate_filenames.txt", "selected_filenames.txt"):
        assert (single_dir / "filenames" / rel).read_text() == (split_dir / "filenames" / rel).read_text(), rel
    na, ea = load_custom_embeddings(single_dir / "data" / "embeddings.csv")
    nb, eb = load_custom_embeddings(split_dir / "data" / "embeddings.csv")
    assert na == nb
    return float(np.abs(ea - eb).max())


@pytest.mark.parametrize("model", ["custom", "efficientnet-lite0"])
def test_parallelism_3_selects_exactly_what_one_worker_selects(tmp_path: Path, scene: Scene, model: str) -> None:
    server = _server(tmp_path, scene)
    api = Api(server.url, token(server.database_url))
    make_dataset(tmp_path / "mounts" / "input" / "scenes", n=60)  # 60 scenes, a duplicate, a corrupt file
    docker: dict[str, Any] = {}
    extra = ["embedding.model=efficientnet-lite0", "embedding.input_size=64"] if model != "custom" else []
    if model == "custom":
        names = list_samples(tmp_path / "mounts" / "input" / "scenes")
        emb = np.random.default_rng(5).normal(size=(len(names), 16)).astype(np.float32)
        save_embeddings(tmp_path / "mounts" / "lightly" / ".lightly" / "embeddings" / "e.csv", names, emb)
        docker["embeddings"] = "e.csv"
    workers = _workers(tmp_path, scene, api, "w", 3, *extra)
    ds = _dataset(api, "scenes")

    single = _schedule(api, ds, _config(api, docker))
    one = scene.wait("the single-worker run DONE", lambda: _finished(api, ds, single), 240)
    assert one["state"] == "COMPLETED", one

    marks = _log_sizes(workers)
    for w in workers:
        w.hold("EMBEDDING")
    split = _schedule(api, ds, _config(api, {**docker, "parallelism": 3, "shard_size": 8}))
    coordinator = _spread(scene, api, split, workers)
    three = scene.wait("the split run DONE", lambda: _finished(api, ds, split), 240)
    assert three["state"] == "COMPLETED", f"{three}\n{scene.logs()}"
    assert run_states(api, ds, split) == ["COMPLETED"], scene.logs()

    assert _selected(api, ds, three["id"]) == _selected(api, ds, one["id"])
    diff = _compare(_output_dir(one), _output_dir(three))
    print(f"{model}: max abs embedding difference, 1 worker vs 3: {diff:.2e}")
    assert diff <= 1e-5
    done = _shards_done(workers, marks)
    indexes = sorted(i for v in done.values() for i in v)
    assert indexes == list(range(8)), f"each of the 8 shards done once: {done}\n{scene.logs()}"  # 62 files / 8
    assert sum(1 for v in done.values() if v) >= 2, f"the shards were spread: {done} (coordinator {coordinator})"
    logs = ok(api.get(paths.run_logs(three["id"])))["logs"]
    assert any("embedded 62/62 files: 8/8 shards done" in e["msg"] for e in logs), [e["msg"] for e in logs]


def test_two_users_split_runs_interleave_without_mixing(tmp_path: Path, scene: Scene) -> None:
    server = _server(tmp_path, scene)
    users = {}
    for user, seed in (("a", 1), ("b", 2)):
        folder = tmp_path / "mounts" / "input" / user
        make_dataset(folder, n=30, seed=seed)
        for f in folder.iterdir():  # each user's own names, so a mix-up shows
            f.rename(folder / f"{user}_{f.name}")
        api = Api(server.url, token(server.database_url))
        workers = _workers(tmp_path, scene, api, f"user-{user}", 2)
        ds = _dataset(api, user)
        users[user] = (api, ds, workers)
    # both scheduled at once: four workers, two runs, 4 + 4 shards in flight together
    sids = {
        u: _schedule(api, ds, _config(api, {"parallelism": "auto", "shard_size": 8}))
        for u, (api, ds, _) in users.items()
    }
    finished = {
        u: scene.wait(f"user {u}'s run DONE", lambda u=u: _finished(users[u][0], users[u][1], sids[u]), 240)
        for u in users
    }
    for u, (api, ds, workers) in users.items():
        run = finished[u]
        assert run["state"] == "COMPLETED", f"{run}\n{scene.logs()}"
        selected = _selected(api, ds, run["id"])
        assert len(selected) == 12 and all(n.startswith(f"{u}_scene_") for n in selected), selected
        names, _ = load_custom_embeddings(_output_dir(run) / "data" / "embeddings.csv")
        listed = list_samples(tmp_path / "mounts" / "input" / u)
        assert names == [n for n in listed if n not in (f"{u}_scene_copy.jpg", f"{u}_scene_broken.jpg")], names
        # every shard a worker of this user ran belongs to this user's scheduled run
        for w in workers:
            text = w.log_path.read_text(errors="replace")
            for other in (x for x in sids.values() if x != sids[u]):
                assert other not in text, f"{w.name} touched another user's run {other}\n{scene.logs()}"
        # another user's token sees nothing of this run's shards
        stranger = users["b" if u == "a" else "a"][0]
        assert stranger.get(paths.scheduled_shards(sids[u])).status_code == 404


def test_the_unmodified_client_refuses_the_keys_plain_http_takes_them(client, api: Api) -> None:  # type: ignore[no-untyped-def]
    """The measured premise: lightly 1.5.26 refuses unknown worker_config keys client-side, before any
    request. (Measured here: its generated model raises ``ValueError: Error due to additional fields``
    before ``_validate_config`` would raise ``InvalidConfigurationError``.)"""
    for key, value, camel in (("parallelism", 3, "parallelism"), ("shard_size", 100, "shardSize")):
        with pytest.raises(ValueError, match=rf"additional fields .*'{camel}'"):
            client.create_compute_worker_config(worker_config={key: value})
        with pytest.raises(ValueError, match=rf"additional fields .*'{camel}'"):
            client.schedule_compute_worker_run(worker_config={key: value}, selection_config=SELECTION_SNAKE)
    body = {"version": "V4", "config": {"workerType": "FULL", "docker": {"parallelism": "auto", "shardSize": 500}}}
    cid = ok(api.post(paths.CONFIGS, json=body), 201)["id"]
    docker = ok(api.get(paths.config(cid)))["config"]["docker"]
    assert (docker["parallelism"], docker["shardSize"]) == ("auto", 500)
    bad = api.post(paths.CONFIGS, json={"version": "V4", "config": {"docker": {"parallelism": 0}}})
    assert bad.status_code == 400, bad.text


def test_a_training_run_is_not_split_and_says_so(tmp_path: Path, scene: Scene) -> None:
    server = _server(tmp_path, scene)
    api = Api(server.url, token(server.database_url))
    make_images(tmp_path / "mounts" / "input" / "few", n=8)
    _workers(tmp_path, scene, api, "t", 1)
    ds = _dataset(api, "few")
    config = {
        "workerType": "FULL",
        "docker": {"parallelism": 3, "enableTraining": True},
        "lightly": {"trainer": {"maxEpochs": 1}, "collate": {"inputSize": 32}, "loader": {"batchSize": 4}},
        "selection": {**SELECTION, "nSamples": 3},
    }
    cid = ok(api.post(paths.CONFIGS, json={"version": "V4", "config": config}), 201)["id"]
    sid = _schedule(api, ds, cid)
    run = scene.wait("the training run DONE", lambda: _finished(api, ds, sid), 240)
    assert run["state"] == "COMPLETED", f"{run}\n{scene.logs()}"
    messages = [e["msg"] for e in ok(api.get(paths.run_logs(run["id"])))["logs"]]
    assert any("parallelism 3 is ignored: enable_training is set" in m for m in messages), messages
    assert api.get(paths.scheduled_shards(sid)).status_code == 404  # nothing was published
