"""The worker on bucket datasources, end to end: our real server (with real store servers behind it), real
worker processes in waiting mode, the unmodified lightly client. A run on a bucket datasource (S3 on moto, GCS
on gcp-storage-emulator, AZURE on Azurite) selects exactly what the same files on a LOCAL datasource select
(keys with spaces, non-ASCII, deep prefixes, a video, a corrupt file, an exact duplicate), writes its datapool
back into the bucket through write URLs, and a run whose bucket cannot be read FAILS at once with the store's
message. A split run reads its shards from the bucket; relevant filenames and metadata come from a bucket
LIGHTLY datasource. Plus the worker's remote source against the real server: an object deleted between
listing and reading is recorded as unreadable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from bucket_stores import Stores, server, stores  # noqa: F401  (fixtures)
from conftest import Api, Backend, backend
from flows import ok, wait_until
from lightly_devkit.net import PROXY_VARS
from lightly_devkit.processes import stop_process
from lightly_devkit.servers import ServerProcess
from lightly_protocol import paths
from PIL import Image

ROOT = "data root/in"
SELECTION = {"n_samples": 6, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


@pytest.fixture(scope="module")
def db_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """SQLite only: what is tested here is the worker, not the database."""
    with backend("sqlite", tmp_path_factory.mktemp("sqlite")) as b:
        yield b


def make_video(path: Path, n: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            arr = np.full((48, 64, 3), (i * 40) % 255, np.uint8)
            arr[:, : 8 + 6 * i] = rng.integers(0, 255, 3)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_files(root: Path, n: int = 16) -> list[str]:
    """Images under keys with spaces, non-ASCII and deep prefixes, an exact duplicate, a corrupt file, a video."""
    rng = np.random.default_rng(0)
    folders = ["a b", "ünïcödé ファイル", "deep/1/2/3/4/5/6", ""]
    names = []
    for i in range(n):
        base = rng.integers(0, 255, size=3)
        arr = np.clip(rng.normal(base, 40, size=(80, 80, 3)), 0, 255).astype(np.uint8)
        folder = folders[i % len(folders)]
        name = f"{folder}/img {i:03d} é.jpg" if folder else f"img_{i:03d}.jpg"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / name, quality=90)
        names.append(name)
    (root / "a b" / "copy of 1.jpg").write_bytes((root / names[1]).read_bytes())
    (root / "broken.jpg").write_bytes((root / names[2]).read_bytes()[:200])
    make_video(root / "clips" / "clip one.mp4", 8)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def s3_client(url: str) -> Any:
    import boto3

    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKID", aws_secret_access_key="SECRET"
    )


@dataclass
class Bucket:
    """A bucket on one store: seed and read back objects, configure it as a datasource (unmodified client)."""

    kind: str
    put: Callable[[str, bytes], None]
    get: Callable[[str], bytes]
    configure: Callable[[Any, str, str], None]  # (client, prefix, purpose)


def make_bucket(kind: str, stores: Stores, name: str) -> Bucket:  # noqa: F811
    if kind == "S3":
        c = s3_client(stores.need("s3").url)
        c.create_bucket(Bucket=name)
        return Bucket(
            kind,
            lambda key, data: c.put_object(Bucket=name, Key=key, Body=data),
            lambda key: c.get_object(Bucket=name, Key=key)["Body"].read(),
            lambda client, prefix, purpose: client.set_s3_config(
                f"s3://{name}/{prefix}", "us-east-1", "AKID", "SECRET", purpose=purpose
            ),
        )
    if kind == "GCS":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from lightly_devkit.stores import gcs_service_account

        gcs = stores.need("gcs")
        g = storage.Client(project="p", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs.url})
        b = g.create_bucket(name)
        key_json = gcs_service_account()
        return Bucket(
            kind,
            lambda key, data: b.blob(key).upload_from_string(data),
            lambda key: b.blob(key).download_as_bytes(),
            lambda client, prefix, purpose: client.set_gcs_config(
                f"gs://{name}/{prefix}", "lightly-tests", key_json, purpose=purpose
            ),
        )
    from azure.storage.blob import BlobServiceClient
    from lightly_devkit.stores import AZURITE_ACCOUNT, AZURITE_KEY

    az = stores.need("azure")
    svc = BlobServiceClient(
        f"{az.url}/{AZURITE_ACCOUNT}", credential={"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    )
    cont = svc.create_container(name)
    return Bucket(
        kind,
        lambda key, data: cont.upload_blob(key, data, overwrite=True),
        lambda key: cont.download_blob(key).readall(),
        lambda client, prefix, purpose: client.set_azure_config(
            f"{name}/{prefix}", AZURITE_ACCOUNT, AZURITE_KEY, purpose=purpose
        ),
    )


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc, self.log_path = proc, log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_worker(server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., Worker]]:  # noqa: F811
    workers: list[Worker] = []

    def start(token: str, name: str, mounts: Path, *extra: str) -> Worker:
        token_file = tmp_path / f"{name}.token"
        token_file.write_text(token)
        # the worker gets no store credentials and no store endpoint: only the API's presigned URLs
        env = {
            k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith(("AWS_", "LIGHTLY_SERVER_"))
        }
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
            "lightly.loader.num_workers=0",
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
        stop_process(w.proc, timeout=30, kill_wait=None)


def _wait_run(client: Any, sid: str, timeout: float = 300) -> Any:
    return wait_until(lambda: (i := client.get_compute_worker_run_info(sid)).in_end_state() and i, timeout, 0.5)


def _selected(client: Any, dataset_id: str, sid: str) -> list[str]:
    client.dataset_id = dataset_id  # the client reads tags of its current dataset
    run = client.get_compute_worker_run_from_scheduled_run(sid)
    tags = client.get_compute_worker_run_tags(run.id)
    assert len(tags) == 1
    return list(client.export_filenames_by_tag_name(tags[0].name).splitlines())


def _artifact(client: Any, sid: str, out: Path, name: str) -> str:
    run = client.get_compute_worker_run_from_scheduled_run(sid)
    client.download_compute_worker_run_artifacts(run=run, output_dir=str(out))
    return (out / name).read_text()


@pytest.mark.parametrize("kind", ["S3", "GCS", "AZURE"])
def test_a_bucket_run_selects_what_the_same_files_select_locally(
    kind: str,
    client: Any,
    token: str,
    stores: Stores,  # noqa: F811
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    pytest.importorskip("av", reason="PyAV (av) is needed for the video in the bucket")
    mounts = tmp_path / "mounts"
    names = make_files(mounts / "input")
    (mounts / "lightly").mkdir(parents=True)
    bucket = make_bucket(kind, stores, f"worker-{kind.lower()}-{time.time_ns()}")
    for name in names:
        bucket.put(f"{ROOT}/{name}", (mounts / "input" / name).read_bytes())
    worker = start_worker(token, "bucket-worker", mounts)
    config = {"use_datapool": True}

    client.create_dataset(f"local-{time.time_ns()}")
    client.set_local_config(relative_path="", purpose="INPUT")
    client.set_local_config(relative_path="", purpose="LIGHTLY")
    local_sid = client.schedule_compute_worker_run(worker_config=config, selection_config=SELECTION, runs_on=["cpu"])
    local_ds = client.dataset_id
    local = _wait_run(client, local_sid)
    assert local.state == "COMPLETED", worker.log()

    client.create_dataset(f"{kind.lower()}-{time.time_ns()}")
    bucket.configure(client, ROOT, "INPUT")
    bucket.configure(client, ROOT, "LIGHTLY")
    bucket_sid = client.schedule_compute_worker_run(worker_config=config, selection_config=SELECTION, runs_on=["cpu"])
    bucket_ds = client.dataset_id
    remote = _wait_run(client, bucket_sid)
    assert remote.state == "COMPLETED", f"{remote.message}\n{worker.log()}"

    selected = _selected(client, bucket_ds, bucket_sid)
    assert selected == _selected(client, local_ds, local_sid)
    assert len(selected) == 6
    # the selected samples' read URLs (exports to Label Studio or Labelbox, download_dataset) lead through
    # the server's signed redirect to a presigned URL of the bucket: the object's own bytes
    client.dataset_id = bucket_ds  # the client reads tags of its current dataset
    tag = client.get_compute_worker_run_tags(client.get_compute_worker_run_from_scheduled_run(bucket_sid).id)[0]
    rows = client.export_filenames_and_read_urls_by_tag_name(tag.name)
    files = [r for r in rows if r["fileName"] in names]  # video frames are samples, not objects
    assert files and {r["fileName"] for r in rows} == set(selected)
    for row in files:
        got = requests.get(row["readUrl"], timeout=30)
        assert got.status_code == 200, (row["fileName"], got.status_code, got.text[:300])
        assert got.content == bucket.get(f"{ROOT}/{row['fileName']}"), row["fileName"]
        assert "Signature" not in row["readUrl"] and "sig=" not in row["readUrl"]  # signed only when followed
    local_out, bucket_out = tmp_path / "local-artifacts", tmp_path / "bucket-artifacts"
    for artifact in ("filenames/corrupt_filenames.txt", "filenames/duplicate_filenames.txt", "data/embeddings.csv"):
        assert _artifact(client, bucket_sid, bucket_out, artifact) == _artifact(client, local_sid, local_out, artifact)
    assert _artifact(client, bucket_sid, bucket_out, "filenames/corrupt_filenames.txt").split() == ["broken.jpg"]
    embedded = _artifact(client, bucket_sid, bucket_out, "data/embeddings.csv")
    assert "clips/clip one-0-mp4.png" in embedded and "deep/1/2/3/4/5/6/img 002 é.jpg" in embedded
    assert "ünïcödé ファイル/img 005 é.jpg" in embedded
    # the datapool went back into the bucket through write URLs, like the local one into the lightly mount
    pool = bucket.get(f"{ROOT}/.lightly/datapool/datapool_latest.csv")
    assert pool == (mounts / "lightly" / ".lightly" / "datapool" / "datapool_latest.csv").read_bytes()
    log = worker.log()
    for secret in ("X-Amz-Signature", "X-Goog-Signature", "sig=", "Signature=", token):
        assert secret not in log

    client.dataset_id = bucket_ds
    # Lightly's datapool: the next run processes only files added since (processedUntilTimestamp), and
    # reads the datapool back from the bucket as the centres already selected
    assert client.get_processed_until_timestamp() > 0
    time.sleep(1.1)  # the window is in whole seconds
    added = make_files(tmp_path / "added", n=4)
    fresh = [f"new/{n}" for n in added if n.endswith(".jpg") and "broken" not in n and "copy" not in n]
    for name in fresh:
        bucket.put(f"{ROOT}/{name}", (tmp_path / "added" / name.removeprefix("new/")).read_bytes())
    two = {**SELECTION, "n_samples": 2}
    again = client.schedule_compute_worker_run(worker_config=config, selection_config=two, runs_on=["cpu"])
    info = _wait_run(client, again)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    assert set(_selected(client, bucket_ds, again)) <= set(fresh)
    assert "datapool: 6 samples selected in earlier runs" in worker.log()
    assert "files processed by earlier runs" in worker.log()
    # nothing new: the run fails saying so (process_all would take every file again)
    client.dataset_id = bucket_ds
    idle = client.schedule_compute_worker_run(worker_config=config, selection_config=two, runs_on=["cpu"])
    none = _wait_run(client, idle)
    assert none.state == "FAILED" and "no new input files" in none.message, none.message


def test_a_run_on_an_unreadable_bucket_fails_at_once_with_the_stores_message(
    client: Any,
    token: str,
    stores: Stores,  # noqa: F811
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    stores.need("s3")
    (tmp_path / "mounts" / "input").mkdir(parents=True)
    worker = start_worker(token, "bucket-worker-2", tmp_path / "mounts")
    client.create_dataset(f"gone-{time.time_ns()}")
    client.set_s3_config("s3://no-such-bucket-here/in", "us-east-1", "AKID", "SECRET", purpose="INPUT")
    sid = client.schedule_compute_worker_run(
        worker_config={"datasource": {"bypass_verify": True}}, selection_config=SELECTION, runs_on=["cpu"]
    )
    t0 = time.monotonic()
    info = _wait_run(client, sid, timeout=120)
    assert info.state == "FAILED", worker.log()
    assert "cannot be listed" in info.message and "NoSuchBucket" in info.message, info.message
    assert "no-such-bucket-here" in info.message
    assert time.monotonic() - t0 < 60
    assert worker.proc.poll() is None  # it keeps serving


def _s3_input(client: Any, token: str, server: ServerProcess, stores: Stores, files: Path, names: list[str], what: str):  # type: ignore[no-untyped-def]  # noqa: F811
    """A new S3 bucket holding ``names`` (from ``files``) under ROOT, a new dataset with it as INPUT, and the
    worker's datasource API for that dataset: (store client, bucket name, DatasourceApi)."""
    from lightly_worker.sources import DatasourceApi, StorePolicy

    s3 = stores.need("s3")
    bucket = f"{what}-{time.time_ns()}"
    c = s3_client(s3.url)
    c.create_bucket(Bucket=bucket)
    for name in names:
        c.put_object(Bucket=bucket, Key=f"{ROOT}/{name}", Body=(files / name).read_bytes())
    client.create_dataset(f"{what}-{time.time_ns()}")
    client.set_s3_config(f"s3://{bucket}/{ROOT}", "us-east-1", "AKID", "SECRET", purpose="INPUT")
    api = DatasourceApi(server.url, token, client.dataset_id, policy=StorePolicy(attempts=2, backoff=0.01))
    return c, bucket, api


def test_an_object_deleted_after_the_listing_is_unreadable_and_the_rest_goes_on(
    client: Any,
    token: str,
    server: ServerProcess,  # noqa: F811
    stores: Stores,  # noqa: F811
    tmp_path: Path,
) -> None:
    from lightly_worker.embed import check_samples, list_samples
    from lightly_worker.sources import RemoteSource

    names = make_files(tmp_path / "files", n=6)
    c, bucket, api = _s3_input(client, token, server, stores, tmp_path / "files", names, "deleted")
    source = RemoteSource(api, {"type": "S3", "fullPath": f"s3://{bucket}/{ROOT}"}, page_size=3)
    source.check()
    listed = list_samples(source)
    images = [n for n in listed if n.endswith(".jpg")]
    assert sorted(images) == sorted(n for n in names if n.endswith(".jpg"))
    gone = images[0]
    c.delete_object(Bucket=bucket, Key=f"{ROOT}/{gone}")
    result = check_samples(source, images)
    assert result.corrupt == {gone: "file not found", "broken.jpg": result.corrupt["broken.jpg"]}
    assert len(result.ok) + len(result.duplicates) == len(images) - 2


def test_a_split_run_reads_its_shards_from_the_bucket(
    client: Any,
    token: str,
    api: Api,
    stores: Stores,  # noqa: F811
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """parallelism 2 over two worker processes (decode workers in subprocesses: the default num_workers):
    every shard reads the bucket, and the selection equals the one-worker run's on the same bucket."""
    pytest.importorskip("av", reason="PyAV (av) is needed for the video in the bucket")
    s3 = stores.need("s3")
    names = make_files(tmp_path / "files", n=20)
    bucket = f"split-{time.time_ns()}"
    c = s3_client(s3.url)
    c.create_bucket(Bucket=bucket)
    for name in names:
        c.put_object(Bucket=bucket, Key=f"{ROOT}/{name}", Body=(tmp_path / "files" / name).read_bytes())
    mounts = tmp_path / "mounts"
    (mounts / "input").mkdir(parents=True)
    workers = [start_worker(token, f"split-worker-{i}", mounts, "lightly.loader.num_workers=-1") for i in range(2)]
    client.create_dataset(f"split-{time.time_ns()}")
    ds = client.dataset_id
    client.set_s3_config(f"s3://{bucket}/{ROOT}", "us-east-1", "AKID", "SECRET", purpose="INPUT")

    def run(docker: dict[str, Any]) -> str:
        body = {"version": "V4", "config": {"workerType": "FULL", "docker": docker, "selection": SELECTION}}
        cid = ok(api.post(paths.CONFIGS, json=body), 201)["id"]
        return str(
            ok(api.post(paths.dataset_schedule(ds), json={"configId": cid, "priority": "MID", "runsOn": ["cpu"]}), 201)[
                "id"
            ]
        )

    whole = run({})
    assert _wait_run(client, whole).state == "COMPLETED", workers[0].log() + workers[1].log()
    split = run({"parallelism": 2, "shard_size": 7})
    info = _wait_run(client, split)
    assert info.state == "COMPLETED", f"{info.message}\n{workers[0].log()}\n{workers[1].log()}"
    assert _selected(client, ds, split) == _selected(client, ds, whole)
    logs = workers[0].log() + workers[1].log()
    assert "split run: " in logs and logs.count("shard ") >= 4
    assert "X-Amz-Signature" not in logs


def test_relevant_filenames_and_metadata_come_from_a_bucket_lightly_datasource(
    client: Any,
    token: str,
    stores: Stores,  # noqa: F811
    start_worker: Callable[..., Worker],
    tmp_path: Path,
) -> None:
    """The .lightly/ files a run reads (a relevant-filenames file, per-file metadata and its schema) are copied
    from the bucket LIGHTLY datasource; only what the run writes goes back (here: nothing)."""
    s3 = stores.need("s3")
    names = [n for n in make_files(tmp_path / "files", n=12) if n.endswith(".jpg") and n != "broken.jpg"]
    bucket = f"lightly-{time.time_ns()}"
    c = s3_client(s3.url)
    c.create_bucket(Bucket=bucket)
    for name in names:
        c.put_object(Bucket=bucket, Key=f"{ROOT}/{name}", Body=(tmp_path / "files" / name).read_bytes())
    relevant = names[:8]
    c.put_object(Bucket=bucket, Key=f"{ROOT}/.lightly/relevant.txt", Body="\n".join(relevant).encode())
    schema = [{"name": "weather", "path": "weather", "defaultValue": "sunny", "valueDataType": "CATEGORICAL_STRING"}]
    c.put_object(Bucket=bucket, Key=f"{ROOT}/.lightly/metadata/schema.json", Body=json.dumps(schema).encode())
    rainy = relevant[:3]
    for name in rainy:
        meta = {"file_name": name, "type": "image", "metadata": {"weather": "rainy"}}
        key = f"{ROOT}/.lightly/metadata/{name.rsplit('.', 1)[0]}.json"
        c.put_object(Bucket=bucket, Key=key, Body=json.dumps(meta).encode())
    before = {o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]}
    mounts = tmp_path / "mounts"
    (mounts / "input").mkdir(parents=True)
    worker = start_worker(token, "lightly-worker", mounts)
    client.create_dataset(f"lightly-{time.time_ns()}")
    client.set_s3_config(f"s3://{bucket}/{ROOT}", "us-east-1", "AKID", "SECRET", purpose="INPUT")
    client.set_s3_config(f"s3://{bucket}/{ROOT}", "us-east-1", "AKID", "SECRET", purpose="LIGHTLY")
    selection = {
        "n_samples": 3,
        "strategies": [
            {"input": {"type": "METADATA", "key": "weather"}, "strategy": {"type": "BALANCE", "target": {"rainy": 1.0}}}
        ],
    }
    sid = client.schedule_compute_worker_run(
        worker_config={"relevant_filenames_file": ".lightly/relevant.txt"}, selection_config=selection, runs_on=["cpu"]
    )
    info = _wait_run(client, sid)
    assert info.state == "COMPLETED", f"{info.message}\n{worker.log()}"
    assert "of 8 samples" in info.message  # only the relevant files
    assert sorted(_selected(client, client.dataset_id, sid)) == sorted(rainy)
    assert {o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]} == before  # nothing written back


def test_the_check_keeps_what_it_read_so_the_embedding_reads_no_image_twice(
    client: Any,
    token: str,
    server: ServerProcess,  # noqa: F811
    stores: Stores,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With a spill the corruptness check's downloads serve the embedding's reads: once the check ran, the
    bucket can lose every image and the embedding still reads them all. Past the spill's cap a file is not
    kept (it is read from the bucket again); a spill never names a path from a key."""
    from lightly_worker.embed import check_samples
    from lightly_worker.sources import RemoteSource
    from lightly_worker.sources.spill import Spill

    names = [n for n in make_files(tmp_path / "files", n=6) if n.endswith(".jpg")]
    c, bucket, api = _s3_input(client, token, server, stores, tmp_path / "files", names, "spill")
    sizes = {n: (tmp_path / "files" / n).stat().st_size for n in names}
    small = sorted(sizes.values())[len(sizes) // 2]  # a cap that keeps only some files
    full = RemoteSource(api, {"type": "S3"}, spill=Spill(tmp_path / "spill-full", 10**9))
    capped = RemoteSource(api, {"type": "S3"}, spill=Spill(tmp_path / "spill-capped", small))
    for source in (full, capped):
        check_samples(source, names)
    for name in names:  # the bucket loses every image after the check
        c.delete_object(Bucket=bucket, Key=f"{ROOT}/{name}")
    read = dict(zip(names, full.read_many(names), strict=True))
    assert all(read[n] == (tmp_path / "files" / n).read_bytes() for n in names), {
        n: type(v).__name__ for n, v in read.items() if not isinstance(v, bytes)
    }
    assert full.spill is not None and full.spill.used == sum(sizes.values())
    kept = [isinstance(v, bytes) for v in capped.read_many(names)]
    assert capped.spill is not None and 0 < capped.spill.used <= small
    assert 0 < sum(kept) < len(names), kept  # what the cap kept is read; the rest is gone from the bucket
    # the spill's files are digests of the keys, inside its folder, whatever the keys hold
    assert all(len(p.name) == 64 and p.parent == tmp_path / "spill-full" for p in (tmp_path / "spill-full").iterdir())


def test_a_spill_is_read_in_the_loaders_processes_and_filled_only_in_its_own(tmp_path: Path) -> None:
    import hashlib
    import pickle

    from lightly_worker.sources.spill import Spill

    spill = Spill(tmp_path / "spill", 100)
    assert spill.put("../../etc/passwd", b"a" * 60)
    assert not spill.put("b", b"b" * 41)  # over the cap: not kept
    assert spill.get("b") is None and spill.get("../../etc/passwd") == b"a" * 60
    code = (
        "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
        "print(s.get('../../etc/passwd') == b'a' * 60, s.put('c', b'c'))"
    )
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(spill), capture_output=True, check=True)
    assert out.stdout.split() == [b"True", b"False"], out.stderr  # another process reads, never adds
    assert [p.name for p in (tmp_path / "spill").iterdir()] == [hashlib.sha256(b"../../etc/passwd").hexdigest()]
