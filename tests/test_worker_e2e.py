"""End to end over real HTTP: our server, worker processes in waiting mode, the real lightly client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import Backend, ServerProcess, backend
from flows import wait_until
from lightly_devkit.net import PROXY_VARS
from lightly_devkit.processes import stop_process
from PIL import Image

SELECTION = {"n_samples": 5, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


def make_images(root: Path, n: int, seed: int = 0, size: int = 96) -> list[str]:
    """n distinct images (coloured blobs), one exact duplicate, one corrupt file."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        base = rng.integers(0, 255, size=3)
        arr = np.clip(rng.normal(base, 40, size=(size, size, 3)), 0, 255).astype(np.uint8)
        sub = "a" if i % 2 else "b"
        (root / sub).mkdir(exist_ok=True)
        name = f"{sub}/img_{i:03d}.jpg"
        Image.fromarray(arr).save(root / name, quality=90)
        names.append(name)
    (root / "b" / "copy_of_img_001.jpg").write_bytes((root / names[1]).read_bytes())
    (root / "a" / "broken.jpg").write_bytes((root / names[2]).read_bytes()[:200])
    return names


@pytest.fixture(scope="module")
def api_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    with backend("sqlite", tmp_path_factory.mktemp("e2e")) as b:
        yield b


@pytest.fixture(scope="module")
def server(api_backend: Backend) -> ServerProcess:
    return api_backend.start_server(lease_seconds=30)


class Worker:
    def __init__(self, proc: subprocess.Popen, log: Path) -> None:
        self.proc, self.log_path = proc, log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=30, kill_wait=None)


@pytest.fixture
def start_worker(server: ServerProcess, tmp_path: Path) -> Iterator:
    workers: list[Worker] = []

    def start(token: str, name: str, mounts: Path, *extra: str) -> Worker:
        token_file = tmp_path / f"{name}.token"
        token_file.write_text(token)
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
        env.update(LIGHTLY_SERVER_LOCATION=server.url, LIGHTLY_TOKEN_FILE=str(token_file))
        log = tmp_path / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "lightly_worker.cli",
            f"worker.name={name}",
            "worker.labels=[cpu]",
            f"input_mount={mounts / 'input'}",
            f"lightly_mount={mounts / 'lightly'}",
            f"output_dir={mounts / 'output' / name}",
            "worker.poll_wait_seconds=5",
            "worker.heartbeat_seconds=2",
            "embedding.input_size=64",
            "device=cpu",
            *extra,
        ]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        w = Worker(proc, log)
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop()


@pytest.fixture
def client(server: ServerProcess, api_backend: Backend, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", server.url)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    from lightly.api import ApiWorkflowClient

    token = api_backend.token()
    return ApiWorkflowClient(token=token), token


def _wait_run(client, sid: str, timeout: float = 240):  # type: ignore[no-untyped-def]
    return wait_until(lambda: (i := client.get_compute_worker_run_info(sid)).in_end_state() and i, timeout, 0.5)


def local_dataset_of(c, name: str) -> None:  # type: ignore[no-untyped-def]
    """A new dataset ``name`` (the client's current one) on the worker's mounts: LOCAL INPUT and LIGHTLY."""
    c.create_dataset(name)
    c.set_local_config(relative_path="", purpose="INPUT")
    c.set_local_config(relative_path="", purpose="LIGHTLY")


def completed_artifacts(c, sid: str, worker, out: Path, timeout: float = 240):  # type: ignore[no-untyped-def]
    """Wait for the scheduled run, which must COMPLETE (else its message and the worker's log), and download
    its artifacts into ``out``; the run."""
    info = _wait_run(c, sid, timeout=timeout)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    run = c.get_compute_worker_run_from_scheduled_run(sid)
    c.download_compute_worker_run_artifacts(run=run, output_dir=str(out))
    return run


def test_scheduled_selection_completes_with_outputs_artifacts_and_tag(client, start_worker, tmp_path: Path) -> None:
    c, token = client
    names = make_images(tmp_path / "input", 24)
    (tmp_path / "lightly").mkdir()
    worker = start_worker(token, "e2e-worker-1", tmp_path)
    c.create_dataset("e2e-images")
    c.set_local_config(relative_path="", purpose="INPUT")
    c.set_local_config(relative_path="", purpose="LIGHTLY")
    sid = c.schedule_compute_worker_run(worker_config={}, selection_config=SELECTION, runs_on=["cpu"])
    info = _wait_run(c, sid)
    assert info.state == "COMPLETED", worker.log()
    assert "selected 5 of 24" in info.message
    run = c.get_compute_worker_run_from_scheduled_run(sid)
    tags = c.get_compute_worker_run_tags(run.id)
    assert len(tags) == 1
    selected = c.export_filenames_by_tag_name(tags[0].name).splitlines()
    assert len(selected) == 5 and set(selected) <= set(names)
    assert "a/broken.jpg" not in selected and "b/copy_of_img_001.jpg" not in selected
    out = tmp_path / "artifacts"
    c.download_compute_worker_run_artifacts(run=run, output_dir=str(out))
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {
        "log.txt",
        "report.json",
        "report.html",
        "filenames/selected_filenames.txt",
        "filenames/corrupt_filenames.txt",
        "filenames/duplicate_filenames.txt",
        "data/embeddings.csv",
        "plots/scatter_pca.png",
    } <= files
    assert (out / "filenames" / "corrupt_filenames.txt").read_text().split() == ["a/broken.jpg"]
    assert (out / "filenames" / "duplicate_filenames.txt").read_text().split() == ["b/copy_of_img_001.jpg"]
    assert (out / "filenames" / "selected_filenames.txt").read_text().split() == selected
    assert token not in (out / "log.txt").read_text() and token not in worker.log()
    logs = [e["msg"] for e in _logs(token, run.id)]
    assert any("EMBEDDING" in m for m in logs)


def _logs(token: str, run_id: str) -> list[dict]:
    import httpx

    r = httpx.get(
        f"{os.environ['LIGHTLY_SERVER_LOCATION']}/v1/docker/runs/{run_id}/logs", params={"token": token}, timeout=10
    )
    return r.json()["logs"]


def test_bad_job_fails_clearly_and_the_worker_keeps_serving(client, start_worker, tmp_path: Path) -> None:
    c, token = client
    make_images(tmp_path / "input", 8)
    start_worker(token, "e2e-worker-2", tmp_path)
    c.create_dataset("e2e-bad")
    c.set_local_config(relative_path="missing-folder", purpose="INPUT")
    sid = c.schedule_compute_worker_run(worker_config={}, selection_config=SELECTION, runs_on=["cpu"])
    info = _wait_run(c, sid)
    assert info.state == "FAILED" and "does not exist" in info.message
    # the same worker takes the next run
    c.set_local_config(relative_path="", purpose="INPUT")
    sid2 = c.schedule_compute_worker_run(worker_config={}, selection_config=SELECTION, runs_on=["cpu"])
    assert _wait_run(c, sid2).state == "COMPLETED"


def test_sigterm_while_busy_hands_the_run_to_another_worker(client, start_worker, tmp_path: Path) -> None:
    c, token = client
    make_images(tmp_path / "input", 80, size=160)
    first = start_worker(
        token,
        "e2e-worker-3",
        tmp_path,
        "worker.shutdown_grace_seconds=0",
        "lightly.loader.batch_size=2",
        "lightly.loader.num_workers=0",
        "embedding.input_size=160",
    )
    c.create_dataset("e2e-sigterm")
    c.set_local_config(relative_path="", purpose="INPUT")
    sid = c.schedule_compute_worker_run(worker_config={}, selection_config=SELECTION, runs_on=["cpu"])
    wait_until(lambda: c.get_compute_worker_run_info(sid).state == "EMBEDDING", 120, 0.1)
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) == 0, first.log()
    aborted = c.get_compute_worker_runs(dataset_id=c.dataset_id)[0]
    assert aborted.state == "ABORTED"
    assert c.get_compute_worker_run_info(sid).state == "OPEN"  # back in the queue
    start_worker(token, "e2e-worker-4", tmp_path)
    info = _wait_run(c, sid)
    assert info.state == "COMPLETED"
    assert len(c.get_compute_worker_runs(dataset_id=c.dataset_id)) == 2


def test_idle_worker_exits_at_once_on_sigterm(client, start_worker, tmp_path: Path) -> None:
    c, token = client
    (tmp_path / "input").mkdir()
    w = start_worker(token, "e2e-worker-5", tmp_path, "worker.poll_wait_seconds=25")
    wait_until(lambda: any(x.name == "e2e-worker-5" and x.state == "IDLE" for x in c.get_compute_workers()), 60, 0.2)
    t0 = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(20) == 0
    assert time.monotonic() - t0 < 10, "an idle worker must not wait for its long poll to end"
    assert next(x for x in c.get_compute_workers() if x.name == "e2e-worker-5").state == "OFFLINE"


def _local_dataset(c, token: str, start_worker, tmp_path: Path, dataset: str, worker: str, n: int, seed: int):  # type: ignore[no-untyped-def]
    """``n`` images under ``tmp_path/input``, a LOCAL dataset on them (INPUT and LIGHTLY) and a worker."""
    make_images(tmp_path / "input", n, seed=seed)
    (tmp_path / "lightly").mkdir()
    started = start_worker(token, worker, tmp_path)
    local_dataset_of(c, dataset)
    return started


def test_a_run_selects_on_embeddings_uploaded_to_the_dataset(client, start_worker, tmp_path: Path) -> None:
    """``client.upload_embeddings`` then ``worker_config={"embeddings": <its name>}``: with no such file in
    ``.lightly/embeddings/``, the run reads the uploaded CSV (through the API) and selects on it."""
    import csv

    c, token = client
    worker = _local_dataset(c, token, start_worker, tmp_path, "e2e-uploaded-embeddings", "e2e-worker-emb", n=10, seed=3)
    # a first run selects every candidate (10 images; the duplicate and the corrupt file left out), so the
    # dataset's samples (what upload_embeddings takes rows for) are the next run's inputs
    everything = {**SELECTION, "n_samples": 10}
    first = c.schedule_compute_worker_run(worker_config={}, selection_config=everything, runs_on=["cpu"])
    assert _wait_run(c, first).state == "COMPLETED", worker.log()

    # the dataset's samples, each on the x axis but one: DIVERSITY of 2 must take that one
    samples = c.export_filenames_by_tag_name("initial-tag").splitlines()
    special = samples[len(samples) // 2]
    mine = tmp_path / "mine.csv"
    with mine.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filenames", "embedding_0", "embedding_1", "labels"])
        for i, name in enumerate(samples):
            w.writerow([name, 0.0, 1.0, 0] if name == special else [name, 1.0, 0.001 * i, 0])
    c.upload_embeddings(str(mine), name="my-embeddings")
    assert not (tmp_path / "lightly" / ".lightly" / "embeddings").exists()

    two = {"n_samples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}
    sid = c.schedule_compute_worker_run(
        worker_config={"embeddings": "my-embeddings.csv"}, selection_config=two, runs_on=["cpu"]
    )
    info = _wait_run(c, sid)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    run = c.get_compute_worker_run_from_scheduled_run(sid)
    (tag,) = c.get_compute_worker_run_tags(run.id)
    assert special in c.export_filenames_by_tag_name(tag.name).splitlines()
    assert "reading custom embeddings my-embeddings.csv (uploaded to the dataset)" in "\n".join(
        e["msg"] for e in _logs(token, run.id)
    )

    # a name that is neither a file nor an uploaded embedding fails the run, saying where it looked
    bad = c.schedule_compute_worker_run(
        worker_config={"embeddings": "nobody.csv"}, selection_config=two, runs_on=["cpu"]
    )
    failed = _wait_run(c, bad)
    assert failed.state == "FAILED" and "nobody.csv" in failed.message, failed.message


def test_checkpoint_run_id_reuses_an_earlier_runs_model(client, start_worker, tmp_path: Path) -> None:
    """``checkpoint_run_id``: the worker fetches that run's CHECKPOINT artifact through the API and embeds
    with its model (the same embeddings as the training run's); a run without a checkpoint is refused."""
    c, token = client
    worker = _local_dataset(c, token, start_worker, tmp_path, "e2e-checkpoint-run-id", "e2e-worker-ckpt", n=8, seed=5)
    lightly_config = {"trainer": {"max_epochs": 1}, "loader": {"batch_size": 4}, "collate": {"input_size": 32}}
    trained = c.schedule_compute_worker_run(
        worker_config={"enable_training": True},
        lightly_config=lightly_config,
        selection_config=SELECTION,
        runs_on=["cpu"],
    )
    assert _wait_run(c, trained, timeout=400).state == "COMPLETED", worker.log()
    trained_run = c.get_compute_worker_run_from_scheduled_run(trained)

    reused = c.schedule_compute_worker_run(
        worker_config={"checkpoint_run_id": trained_run.id},
        lightly_config={"collate": {"input_size": 32}},
        selection_config=SELECTION,
        runs_on=["cpu"],
    )
    info = _wait_run(c, reused)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    reused_run = c.get_compute_worker_run_from_scheduled_run(reused)
    a, b = tmp_path / "a", tmp_path / "b"
    c.download_compute_worker_run_artifacts(run=trained_run, output_dir=str(a))
    c.download_compute_worker_run_artifacts(run=reused_run, output_dir=str(b))
    assert (b / "data" / "embeddings.csv").read_text() == (a / "data" / "embeddings.csv").read_text()

    plain = c.get_compute_worker_run_from_scheduled_run(reused)  # a run that trained nothing: no checkpoint
    bad = c.schedule_compute_worker_run(
        worker_config={"checkpoint_run_id": plain.id}, selection_config=SELECTION, runs_on=["cpu"]
    )
    failed = _wait_run(c, bad)
    assert failed.state == "FAILED" and "has no CHECKPOINT artifact" in failed.message, failed.message


def test_similarity_to_another_datasets_tag(client, start_worker, tmp_path: Path) -> None:
    """Lightly's ``{"type": "EMBEDDINGS", "dataset_id": ..., "tag_name": ...}`` SIMILARITY input: the query
    is the other dataset's tag, embedded by the runs that selected its files. The same image in this
    run's input is the one most similar to it."""
    c, token = client
    worker = _local_dataset(c, token, start_worker, tmp_path, "e2e-query-source", "e2e-worker-sim", n=10, seed=7)
    source_ds = c.dataset_id
    first = c.schedule_compute_worker_run(
        worker_config={}, selection_config={**SELECTION, "n_samples": 10}, runs_on=["cpu"]
    )
    assert _wait_run(c, first).state == "COMPLETED", worker.log()
    samples = c.export_filenames_by_tag_name("initial-tag").splitlines()
    query = samples[3]
    c.create_tag_from_filenames([query], new_tag_name="my-query")

    c.create_dataset("e2e-query-user")
    c.set_local_config(relative_path="", purpose="INPUT")
    c.set_local_config(relative_path="", purpose="LIGHTLY")
    similar = {
        "n_samples": 1,
        "strategies": [
            {
                "input": {"type": "EMBEDDINGS", "dataset_id": source_ds, "tag_name": "my-query"},
                "strategy": {"type": "SIMILARITY"},
            }
        ],
    }
    sid = c.schedule_compute_worker_run(worker_config={}, selection_config=similar, runs_on=["cpu"])
    info = _wait_run(c, sid)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    run = c.get_compute_worker_run_from_scheduled_run(sid)
    (tag,) = c.get_compute_worker_run_tags(run.id)
    assert c.export_filenames_by_tag_name(tag.name).splitlines() == [query]

    # a tag the other dataset does not have fails the run, naming tag and dataset
    similar["strategies"][0]["input"]["tag_name"] = "no-such-tag"
    bad = c.schedule_compute_worker_run(worker_config={}, selection_config=similar, runs_on=["cpu"])
    failed = _wait_run(c, bad)
    assert failed.state == "FAILED" and "no tag 'no-such-tag'" in failed.message, failed.message
