"""The real, unmodified ``lightly==1.5.26`` ``ApiWorkflowClient`` against our server.

Every client call of section 3 of ``lightly_api.md`` is exercised here, on SQLite and on PostgreSQL
(the ``db_backend`` fixture). Where a call needs a run that a worker picked up, the test plays the
worker over raw HTTP (``api`` fixture, same token as the client) with the small helpers below.
``compute_worker_run_info_generator`` is deliberately not called: it sleeps 30 s between polls.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Api, Backend

OID = re.compile(r"^[a-f0-9]{24}$")
WAITING_FOR_PICKUP = "Waiting for pickup by Lightly Worker."

# --------------------------------------------------------------------------- worker-side helpers
# A worker's view of the protocol (section 5 of lightly_api.md plus our selection extension).


def worker_idle(api: Api, worker_id: str) -> None:
    r = api.put(f"/v1/docker/worker/{worker_id}", json={"state": "IDLE", "dockerVersion": "test-worker"})
    assert r.status_code in (200, 204), r.text


def worker_open_schedule(api: Api, worker_id: str) -> list[dict]:
    r = api.get(f"/v1/docker/worker/{worker_id}/schedule", params={"state": "OPEN"})
    assert r.status_code == 200, r.text
    return r.json()


def worker_lock(api: Api, dataset_id: str, worker_id: str, scheduled_id: str) -> None:
    r = api.put(
        f"/v1/datasets/{dataset_id}/docker/worker/{worker_id}/schedule/{scheduled_id}", json={"state": "LOCKED"}
    )
    assert r.status_code in (200, 204), r.text


def worker_create_run(api: Api, scheduled: dict) -> str:
    r = api.post(
        "/v1/docker/runs",
        json={
            "dockerVersion": "test-worker",
            "datasetId": scheduled["datasetId"],
            "scheduledId": scheduled["id"],
            "configId": scheduled["configId"],
            "creator": "USER_WORKER",
        },
    )
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert OID.match(run_id)
    return run_id


def worker_pick_up(api: Api, worker_id: str, scheduled_id: str) -> str:
    """IDLE -> find the scheduled run among the worker's OPEN runs -> lock it -> create its run."""
    worker_idle(api, worker_id)
    offered = {s["id"]: s for s in worker_open_schedule(api, worker_id)}
    assert scheduled_id in offered, f"scheduled run {scheduled_id} not offered to worker {worker_id}: {offered}"
    scheduled = offered[scheduled_id]
    worker_lock(api, scheduled["datasetId"], worker_id, scheduled_id)
    return worker_create_run(api, scheduled)


def worker_set_state(api: Api, run_id: str, state: str, message: str | None = None) -> None:
    body = {"state": state} if message is None else {"state": state, "message": message}
    r = api.put(f"/v1/docker/runs/{run_id}", json=body)
    assert r.status_code in (200, 204), r.text


def worker_log(api: Api, run_id: str, *messages: str) -> None:
    entries = [{"ts": int(time.time() * 1000), "level": "INFO", "group": "test", "msg": m} for m in messages]
    r = api.put(f"/v1/docker/runs/{run_id}/logs", json=entries)
    assert r.status_code in (200, 204), r.text


def worker_upload_artifact(
    api: Api, run_id: str, file_name: str, artifact_type: str, content: bytes, *, confirm: bool = True
) -> str:
    r = api.post(f"/v1/docker/runs/{run_id}/artifacts", json={"fileName": file_name, "type": artifact_type})
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"signedWriteUrl", "artifactId"}
    up = httpx.put(created["signedWriteUrl"], content=content, timeout=30)
    assert up.is_success, up.text
    if confirm:
        c = api.put(f"/v1/docker/runs/{run_id}/artifacts/{created['artifactId']}/confirmUpload")
        assert c.status_code in (200, 204), c.text
    return created["artifactId"]


def worker_select(api: Api, run_id: str, filenames: list[str], tag_name: str | None = None) -> None:
    body: dict = {"filenames": filenames}
    if tag_name is not None:
        body["tagName"] = tag_name
    r = api.put(f"/v1/docker/runs/{run_id}/selection", json=body)
    assert r.status_code in (200, 204), r.text


def worker_run_to_completion(api: Api, worker_id: str, scheduled_id: str, selected: list[str], tag_name=None) -> str:
    """Pick up, embed, report a selection and complete: the selection becomes a tag of the dataset."""
    run_id = worker_pick_up(api, worker_id, scheduled_id)
    worker_set_state(api, run_id, "EMBEDDING", "embedding")
    worker_select(api, run_id, selected, tag_name)
    worker_set_state(api, run_id, "COMPLETED", "done")
    return run_id


# --------------------------------------------------------------------------- client-side helpers


def new_dataset(client, name: str | None = None, input_path: str = "images") -> str:
    """A dataset with an INPUT datasource (needed before scheduling); becomes client.dataset_id."""
    client.create_dataset(name or f"ds-{secrets.token_hex(4)}")
    client.set_local_config(relative_path=input_path, purpose="INPUT")
    return client.dataset_id


def schedule_simple(client, runs_on: list[str] | None = None) -> str:
    return client.schedule_compute_worker_run(
        selection_config={
            "n_samples": 2,
            "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}],
        },
        runs_on=runs_on,
    )


def spy_export_offsets(client, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the pageOffset of every export page the client requests (the call itself is unchanged)."""
    offsets: list[int] = []
    real = client._tags_api.export_tag_to_basic_filenames

    def spy(*args, **kwargs):
        offsets.append(kwargs.get("page_offset"))
        return real(*args, **kwargs)

    monkeypatch.setattr(client._tags_api, "export_tag_to_basic_filenames", spy)
    return offsets


def actual(datasource):
    """The concrete DatasourceConfig* model inside the client's oneOf wrapper."""
    return getattr(datasource, "actual_instance", None) or datasource


# --------------------------------------------------------------------------- versions / construction


def test_version_calls_and_client_construction(lightly_env: str, token: str) -> None:
    from lightly.api import ApiWorkflowClient, _version_checking

    # the two version endpoints need no token
    r = httpx.get(f"{lightly_env}/v1/versions/pip/minimum")
    assert r.status_code == 200 and r.json() == "1.0.0"
    r = httpx.get(f"{lightly_env}/v1/versions/pip/latest", params={"currentVersion": "1.5.26"})
    assert r.status_code == 200 and r.json() == "1.5.26"
    # and through the client's own version-checking code (what import / __init__ call)
    assert _version_checking.get_minimum_compatible_version() == "1.0.0"
    assert _version_checking.get_latest_version("1.5.26") == "1.5.26"
    assert _version_checking.is_compatible_version("1.5.26")
    assert _version_checking.is_latest_version("1.5.26")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an "Incompatible version" warning would fail here
        client = ApiWorkflowClient(token=token)
    assert client.token == token
    assert client.api_client.configuration.host == lightly_env
    # the constructed client is usable right away (authenticated call)
    assert client.get_compute_worker_ids() == []


# --------------------------------------------------------------------------- compute workers


def test_register_compute_worker_is_idempotent_by_name(client) -> None:
    wid = client.register_compute_worker(name="worker-1", labels=["gpu"])
    assert OID.match(wid)
    assert client.register_compute_worker(name="worker-1", labels=["gpu"]) == wid
    # labels are fixed at the first registration
    assert client.register_compute_worker(name="worker-1", labels=["cpu"]) == wid
    other = client.register_compute_worker(name="worker-2")
    assert OID.match(other) and other != wid

    workers = {w.id: w for w in client.get_compute_workers()}
    assert set(workers) == {wid, other}
    assert workers[wid].name == "worker-1" and workers[wid].labels == ["gpu"]
    assert workers[other].labels == []


def test_register_compute_worker_short_name_fails_client_side(client) -> None:
    with pytest.raises(ValueError, match="at least 3 characters"):
        client.register_compute_worker(name="w1")
    assert client.get_compute_worker_ids() == []


def test_get_compute_worker_ids_and_workers(client, api: Api) -> None:
    assert client.get_compute_worker_ids() == []
    assert client.get_compute_workers() == []
    a = client.register_compute_worker(name="alpha-worker", labels=["gpu", "big"])
    b = client.register_compute_worker(name="beta-worker")
    assert sorted(client.get_compute_worker_ids()) == sorted([a, b])

    workers = {w.id: w for w in client.get_compute_workers()}
    assert set(workers) == {a, b}
    wa = workers[a]
    assert wa.name == "alpha-worker"
    assert sorted(wa.labels) == ["big", "gpu"]
    assert wa.worker_type == "FULL"
    assert wa.state == "OFFLINE"  # never reported yet
    assert isinstance(wa.created_at, int) and isinstance(wa.last_modified_at, int)
    assert wa.user_id

    worker_idle(api, a)
    states = {w.id: w.state for w in client.get_compute_workers()}
    assert states == {a: "IDLE", b: "OFFLINE"}


def test_delete_compute_worker(client, api: Api) -> None:
    keep = client.register_compute_worker(name="keep-worker")
    gone = client.register_compute_worker(name="gone-worker")
    client.delete_compute_worker(gone)
    assert client.get_compute_worker_ids() == [keep]
    assert api.get(f"/v1/docker/worker/{gone}").status_code == 404
    # the name is free again: a new registration gets a new id
    again = client.register_compute_worker(name="gone-worker")
    assert again not in (gone, keep)


# --------------------------------------------------------------------------- datasets


def test_create_dataset_and_already_exists(client, api: Api) -> None:
    client.create_dataset("my-dataset")
    ds = client.dataset_id
    assert OID.match(ds)
    r = api.get(f"/v1/datasets/{ds}")
    assert r.status_code == 200 and r.json()["name"] == "my-dataset" and r.json()["type"] == "Images"

    with pytest.raises(ValueError, match="already exists"):
        client.create_dataset("my-dataset")
    assert client.dataset_id == ds

    # exact=True is honoured: a prefix of an existing name is a different dataset
    client.create_dataset("my-data")
    assert client.dataset_id != ds
    client.create_dataset("my-dataset-videos", dataset_type="Videos")
    assert api.get(f"/v1/datasets/{client.dataset_id}").json()["type"] == "Videos"

    with pytest.raises(ValueError, match="at least 3 characters"):
        client.create_dataset("ds")
    names = sorted(d.name for d in client.get_datasets())
    assert names == ["my-data", "my-dataset", "my-dataset-videos"]


def test_dataset_id_getter_takes_last_modified_dataset(lightly_env: str, token: str) -> None:
    from lightly.api import ApiWorkflowClient

    creator = ApiWorkflowClient(token=token)
    creator.create_dataset("first-dataset")
    first = creator.dataset_id
    time.sleep(0.005)
    creator.create_dataset("second-dataset")
    second = creator.dataset_id

    fresh = ApiWorkflowClient(token=token)
    with pytest.warns(UserWarning, match="last modified dataset second-dataset"):
        assert fresh.dataset_id == second

    # modifying the first dataset (its datasource) makes it the last modified one
    time.sleep(0.005)
    creator.dataset_id = first
    creator.set_local_config(relative_path="images", purpose="INPUT")
    fresh = ApiWorkflowClient(token=token)
    with pytest.warns(UserWarning, match="last modified dataset first-dataset"):
        assert fresh.dataset_id == first


def test_dataset_id_setter(client, db_backend: Backend) -> None:
    from lightly.api import ApiWorkflowClient

    client.create_dataset("setter-one")
    one = client.dataset_id
    client.create_dataset("setter-two")
    two = client.dataset_id
    assert client.dataset_id == two

    client.dataset_id = one
    assert client.dataset_id == one

    unknown = secrets.token_hex(12)
    with pytest.raises(ValueError, match="does not exist"):
        client.dataset_id = unknown
    assert client.dataset_id == one

    # another user's dataset does not exist for this user
    stranger = ApiWorkflowClient(token=db_backend.token())
    stranger.create_dataset("strangers-dataset")
    with pytest.raises(ValueError, match="does not exist"):
        client.dataset_id = stranger.dataset_id
    assert client.dataset_id == one


# --------------------------------------------------------------------------- datasources


def test_local_datasource_input_and_lightly(client, api: Api) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    client.create_dataset("local-dataset")
    ds = client.dataset_id
    with pytest.raises(ApiException) as exc:
        client.get_datasource()
    assert exc.value.status == 404

    client.set_local_config(relative_path="images/train", purpose="INPUT")
    client.set_local_config(relative_path="lightly", web_server_location="http://localhost:1234", purpose="LIGHTLY")

    src = actual(client.get_datasource())
    assert src.type == "LOCAL"
    assert src.purpose == "INPUT"
    assert src.full_path == "images/train"
    assert src.web_server_location == "http://localhost:3456"
    assert src.thumb_suffix == ".lightly/thumbnails/[filename]_thumb.[extension]"

    r = api.get(f"/v1/datasets/{ds}/datasource", params={"purpose": "LIGHTLY"})
    assert r.status_code == 200, r.text
    lightly = r.json()
    assert lightly["type"] == "LOCAL" and lightly["purpose"] == "LIGHTLY"
    assert lightly["fullPath"] == "lightly" and lightly["webServerLocation"] == "http://localhost:1234"

    everything = api.get(f"/v1/datasets/{ds}/datasource/all").json()
    assert sorted((d["purpose"], d["fullPath"]) for d in everything) == [
        ("INPUT", "images/train"),
        ("LIGHTLY", "lightly"),
    ]

    # a second PUT for a purpose replaces it
    client.set_local_config(relative_path="images/val", purpose="INPUT")
    assert actual(client.get_datasource()).full_path == "images/val"
    assert len(api.get(f"/v1/datasets/{ds}/datasource/all").json()) == 2


def test_s3_datasource_needs_the_servers_secret_key(client) -> None:
    """This module's server runs without a secret key: credentials are refused, clearly (stored and
    returned redacted with a key: tests/test_secrets.py)."""
    client.create_dataset("s3-dataset")
    with pytest.raises(Exception, match="--secret-key-file") as info:
        client.set_s3_config(
            resource_path="s3://my-bucket/path/to/data",
            region="eu-central-1",
            access_key="AKIAEXAMPLE",
            secret_access_key="secret/with+chars",
            thumbnail_suffix=None,
        )
    assert "400" in str(info.value)


# --------------------------------------------------------------------------- scheduling


def test_schedule_compute_worker_run_with_all_configs(client, api: Api) -> None:
    ds = new_dataset(client)
    worker_config = {
        "enable_training": True,  # lightly.model configures the trained model (without training: refused)
        "shutdown_when_job_finished": True,
        "num_processes": 2,
        "datasource": {"process_all": True, "bypass_verify": False},
        "corruptness_check": {"corruption_threshold": 0.1},
    }
    lightly_config = {
        "seed": 7,
        "loader": {"batch_size": 16, "num_workers": -1, "shuffle": True},
        "model": {"name": "resnet-18", "num_ftrs": 32},
        "trainer": {"max_epochs": 1, "precision": 32},
        "collate": {"input_size": 64, "cj_prob": 0.5, "hf_prob": 0.5, "min_scale": 0.2, "sigmas": [0.1, 2.0]},
    }
    selection_config = {
        "n_samples": 10,
        "strategies": [
            {"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}},
            {"input": {"type": "METADATA", "key": "lightly.sharpness"}, "strategy": {"type": "WEIGHTS"}},
        ],
    }
    sid = client.schedule_compute_worker_run(
        worker_config=worker_config,
        lightly_config=lightly_config,
        selection_config=selection_config,
        priority="HIGH",
        runs_on=["gpu", "big"],
    )
    assert OID.match(sid)

    scheduled = client.get_scheduled_compute_worker_runs()
    assert [s.id for s in scheduled] == [sid]
    s = scheduled[0]
    assert s.dataset_id == ds
    assert s.state == "OPEN"
    assert s.priority == "HIGH"
    assert sorted(s.runs_on) == ["big", "gpu"]
    assert OID.match(s.config_id)

    # the stored config round-trips, parsed by the client's own strict generated model
    stored = client._compute_worker_api.get_docker_worker_config_vxby_id(s.config_id)
    stored = getattr(stored, "actual_instance", None) or stored
    cfg = stored.config
    assert cfg.worker_type == "FULL"
    assert cfg.docker.enable_training is True
    assert cfg.docker.shutdown_when_job_finished is True
    assert cfg.docker.num_processes == 2
    assert cfg.docker.datasource.process_all is True
    assert cfg.docker.corruptness_check.corruption_threshold == 0.1
    assert cfg.lightly.seed == 7
    assert cfg.lightly.loader.batch_size == 16 and cfg.lightly.loader.num_workers == -1
    assert cfg.lightly.model.name == "resnet-18" and cfg.lightly.model.num_ftrs == 32
    assert cfg.lightly.collate.input_size == 64
    assert cfg.lightly.collate.cj_prob == 0.5 and cfg.lightly.collate.min_scale == 0.2
    assert cfg.lightly.collate.sigmas == [0.1, 2.0]
    assert cfg.lightly.collate.rr_degrees is None
    assert cfg.selection.n_samples == 10
    assert [e.strategy.type for e in cfg.selection.strategies] == ["DIVERSITY", "WEIGHTS"]
    assert cfg.selection.strategies[1].input.key == "lightly.sharpness"

    # raw wire shape too: camelCase keys
    raw = api.get(f"/v1/docker/worker/config/vX/{s.config_id}").json()
    assert raw["version"] == "V4"
    assert raw["config"]["docker"]["enableTraining"] is True
    assert raw["config"]["lightly"]["collate"]["inputSize"] == 64
    assert raw["config"]["selection"]["nSamples"] == 10


def test_schedule_defaults_and_routing(client, api: Api) -> None:
    new_dataset(client)
    sid_any = client.schedule_compute_worker_run()  # no configs at all
    sid_gpu = schedule_simple(client, runs_on=["gpu"])
    by_id = {s.id: s for s in client.get_scheduled_compute_worker_runs()}
    assert set(by_id) == {sid_any, sid_gpu}
    assert by_id[sid_any].priority == "MID" and by_id[sid_any].runs_on == []
    assert by_id[sid_gpu].runs_on == ["gpu"]

    cpu_worker = client.register_compute_worker(name="cpu-worker")
    gpu_worker = client.register_compute_worker(name="gpu-worker", labels=["gpu"])
    assert {s["id"] for s in worker_open_schedule(api, cpu_worker)} == {sid_any}
    assert {s["id"] for s in worker_open_schedule(api, gpu_worker)} == {sid_any, sid_gpu}


def test_get_scheduled_compute_worker_runs_state_filter(client, api: Api) -> None:
    ds = new_dataset(client)
    wid = client.register_compute_worker(name="filter-worker")
    first = schedule_simple(client)
    second = schedule_simple(client)
    third = schedule_simple(client)

    def ids(state=None) -> set[str]:
        runs = client.get_scheduled_compute_worker_runs(state=state)
        assert all(r.dataset_id == ds for r in runs)
        return {r.id for r in runs}

    assert ids() == {first, second, third}
    assert ids("OPEN") == {first, second, third}
    assert ids("LOCKED") == set()

    run_id = worker_pick_up(api, wid, first)
    assert ids() == {first, second, third}  # OPEN + LOCKED
    assert ids("OPEN") == {second, third}
    assert ids("LOCKED") == {first}

    worker_set_state(api, run_id, "COMPLETED")
    r = api.put(f"/v1/datasets/{ds}/docker/worker/schedule/{third}")  # the user cancels an OPEN run
    assert r.status_code in (200, 204), r.text

    assert ids() == {second}  # neither DONE nor CANCELED
    assert ids("DONE") == {first}
    assert ids("CANCELED") == {third}
    assert ids("OPEN") == {second}
    assert ids("LOCKED") == set()


# --------------------------------------------------------------------------- run info / runs


def test_run_info_before_pickup_and_unknown(client, api: Api) -> None:
    from lightly.openapi_generated.swagger_client.rest import ApiException

    ds = new_dataset(client)
    sid = schedule_simple(client)

    info = client.get_compute_worker_run_info(sid)
    assert info.state == "OPEN"
    assert info.message.startswith(WAITING_FOR_PICKUP)
    assert not info.in_end_state()

    with pytest.raises(ApiException) as exc:
        client.get_compute_worker_run_from_scheduled_run(sid)
    assert exc.value.status == 404

    unknown = client.get_compute_worker_run_info(secrets.token_hex(12))
    assert unknown.state == "CANCELED_OR_NOT_EXISTING"
    assert unknown.in_end_state() and not unknown.ended_successfully()

    # canceled before pickup: gone from the default list, so "canceled or not existing"
    canceled = schedule_simple(client)
    assert api.put(f"/v1/datasets/{ds}/docker/worker/schedule/{canceled}").status_code in (200, 204)
    assert client.get_compute_worker_run_info(canceled).state == "CANCELED_OR_NOT_EXISTING"
    assert client.get_compute_worker_run_info(sid).state == "OPEN"


def test_run_info_and_runs_after_pickup(client, api: Api) -> None:
    ds = new_dataset(client)
    wid = client.register_compute_worker(name="runner-worker", labels=["gpu"])
    sid = schedule_simple(client, runs_on=["gpu"])

    run_id = worker_pick_up(api, wid, sid)
    info = client.get_compute_worker_run_info(sid)
    assert info.state == "STARTED"

    worker_set_state(api, run_id, "EMBEDDING", "Embedding 10 images")
    worker_log(api, run_id, "embedding started", "embedding 50%")
    info = client.get_compute_worker_run_info(sid)
    assert (info.state, info.message) == ("EMBEDDING", "Embedding 10 images")
    assert not info.in_end_state()

    run = client.get_compute_worker_run_from_scheduled_run(sid)
    assert run.id == run_id
    assert run.state == "EMBEDDING"
    assert run.message == "Embedding 10 images"
    assert run.dataset_id == ds
    assert run.scheduled_id == sid
    assert run.docker_version == "test-worker"
    assert OID.match(run.config_id)
    assert client.get_compute_worker_run(run_id) == run

    assert [s.state for s in client.get_scheduled_compute_worker_runs()] == ["LOCKED"]

    worker_set_state(api, run_id, "COMPLETED", "Done: selected 2 images")
    info = client.get_compute_worker_run_info(sid)
    assert (info.state, info.message) == ("COMPLETED", "Done: selected 2 images")
    assert info.in_end_state() and info.ended_successfully()
    assert client.get_compute_worker_run(run_id).state == "COMPLETED"
    assert client.get_scheduled_compute_worker_runs() == []
    assert [s.id for s in client.get_scheduled_compute_worker_runs(state="DONE")] == [sid]

    logs = api.get(f"/v1/docker/runs/{run_id}/logs").json()["logs"]
    assert [e["msg"] for e in logs] == ["embedding started", "embedding 50%"]


def test_failed_run_info(client, api: Api) -> None:
    new_dataset(client)
    wid = client.register_compute_worker(name="failing-worker")
    sid = schedule_simple(client)
    run_id = worker_pick_up(api, wid, sid)
    worker_set_state(api, run_id, "FAILED", "out of memory")
    info = client.get_compute_worker_run_info(sid)
    assert (info.state, info.message) == ("FAILED", "out of memory")
    assert info.in_end_state() and not info.ended_successfully()


def test_get_compute_worker_runs_with_and_without_dataset(client, api: Api) -> None:
    assert client.get_compute_worker_runs() == []
    wid = client.register_compute_worker(name="multi-worker")

    ds_a = new_dataset(client, "runs-dataset-a")
    run_a1 = worker_run_to_completion(api, wid, schedule_simple(client), ["a.jpg"])
    time.sleep(0.002)
    run_a2 = worker_run_to_completion(api, wid, schedule_simple(client), ["b.jpg"])
    time.sleep(0.002)
    ds_b = new_dataset(client, "runs-dataset-b")
    run_b = worker_pick_up(api, wid, schedule_simple(client))  # still running

    all_runs = client.get_compute_worker_runs()
    assert [r.id for r in all_runs] == [run_a1, run_a2, run_b]  # sorted by createdAt
    assert [r.created_at for r in all_runs] == sorted(r.created_at for r in all_runs)
    assert {r.id: r.dataset_id for r in all_runs} == {run_a1: ds_a, run_a2: ds_a, run_b: ds_b}
    assert {r.id: r.state for r in all_runs} == {run_a1: "COMPLETED", run_a2: "COMPLETED", run_b: "STARTED"}

    assert [r.id for r in client.get_compute_worker_runs(dataset_id=ds_a)] == [run_a1, run_a2]
    assert [r.id for r in client.get_compute_worker_runs(dataset_id=ds_b)] == [run_b]


# --------------------------------------------------------------------------- artifacts


def test_download_compute_worker_run_artifacts(client, api: Api, tmp_path: Path) -> None:
    from lightly.api.api_workflow_artifacts import ArtifactNotExist

    new_dataset(client)
    wid = client.register_compute_worker(name="artifact-worker")
    sid = schedule_simple(client)
    run_id = worker_pick_up(api, wid, sid)

    log = b"line 1\nline 2\n\xe2\x9c\x93 done\n"
    report = json.dumps({"version": 1, "selected": 2, "nested": {"k": [1, 2, 3]}}).encode()
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 1024  # 256 KiB, every byte value
    worker_upload_artifact(api, run_id, "log.txt", "LOG", log)
    worker_upload_artifact(api, run_id, "report.json", "REPORT_JSON", report)
    worker_upload_artifact(api, run_id, "report.pdf", "REPORT_PDF", pdf)
    # an upload that was never confirmed must not be offered for download
    worker_upload_artifact(api, run_id, "half.bin", "CHECKPOINT", b"partial", confirm=False)
    worker_set_state(api, run_id, "COMPLETED")

    run = client.get_compute_worker_run_from_scheduled_run(sid)
    assert sorted((a.type, a.file_name) for a in run.artifacts) == [
        ("LOG", "log.txt"),
        ("REPORT_JSON", "report.json"),
        ("REPORT_PDF", "report.pdf"),
    ]
    assert all(OID.match(a.id) for a in run.artifacts)

    out = tmp_path / "all"
    client.download_compute_worker_run_artifacts(run=run, output_dir=str(out))
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "report.json", "report.pdf"]
    assert (out / "log.txt").read_bytes() == log
    assert (out / "report.json").read_bytes() == report
    assert (out / "report.pdf").read_bytes() == pdf

    with pytest.warns(DeprecationWarning):
        client.download_compute_worker_run_report_json(run=run, output_path=str(tmp_path / "r.json"))
    assert (tmp_path / "r.json").read_bytes() == report
    client.download_compute_worker_run_log(run=run, output_path=str(tmp_path / "run.log"))
    assert (tmp_path / "run.log").read_bytes() == log
    client.download_compute_worker_run_report_pdf(run=run, output_path=str(tmp_path / "r.pdf"))
    assert (tmp_path / "r.pdf").read_bytes() == pdf

    with pytest.raises(ArtifactNotExist):
        client.download_compute_worker_run_checkpoint(run=run, output_path=str(tmp_path / "ckpt"))


# --------------------------------------------------------------------------- tags from a run's selection


def test_run_tags_and_tag_exports(client, api: Api) -> None:
    from lightly.api.api_workflow_tags import TagDoesNotExistError

    ds = new_dataset(client)
    wid = client.register_compute_worker(name="tagging-worker")
    first = ["img-003.jpg", "img-001.jpg", "sub/dir/img-002.png"]
    run1 = worker_run_to_completion(api, wid, schedule_simple(client), first)
    assert client.get_filenames() == first  # the dataset's samples: the selection, first-seen order

    tags = client.get_compute_worker_run_tags(run1)
    assert len(tags) == 1
    tag1 = tags[0]
    assert tag1.name == f"selected-{run1}"
    assert tag1.run_id == run1 and tag1.dataset_id == ds
    assert OID.match(tag1.id)

    initial = client.get_tag_by_name("initial-tag")  # every sample: the dataset's first tag (Lightly's)
    assert [t.id for t in client.get_all_tags()] == [initial.id, tag1.id]
    assert tag1.prev_tag_id == initial.id and client.get_filenames_in_tag(initial) == first
    assert client.get_tag_by_name(tag1.name).id == tag1.id
    with pytest.raises(TagDoesNotExistError):
        client.get_tag_by_name("no-such-tag")

    assert client.export_filenames_by_tag_name(tag1.name).split("\n") == first
    assert client.export_filenames_by_tag_id(tag1.id).split("\n") == first
    assert client.get_filenames_in_tag(tag1) == first

    # a second run, named tag, overlapping selection: each tag keeps exactly its own filenames
    # (in the dataset's sample order, which is first-seen order: docs/server.md)
    second = ["img-001.jpg", "img-004.jpg"]
    run2 = worker_run_to_completion(api, wid, schedule_simple(client), second, tag_name="my-selection")
    tags2 = client.get_compute_worker_run_tags(run2)
    assert [(t.name, t.run_id) for t in tags2] == [("my-selection", run2)]
    assert sorted(t.name for t in client.get_all_tags()) == sorted(["initial-tag", tag1.name, "my-selection"])
    tag2 = client.get_tag_by_name("my-selection")
    assert client.export_filenames_by_tag_name("my-selection").split("\n") == second
    assert client.get_filenames_in_tag(tag2) == second
    assert client.export_filenames_by_tag_id(tag1.id).split("\n") == first
    assert client.get_filenames_in_tag(client.get_tag_by_id(tag1.id)) == first

    # the client filters run tags by its current dataset
    client.create_dataset("other-dataset")
    assert client.get_compute_worker_run_tags(run1) == []


def test_tag_export_paginates_more_than_5000_filenames(client, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    new_dataset(client)
    wid = client.register_compute_worker(name="bulk-worker")
    filenames = [f"frames/seq-{i // 100:03d}/frame-{i:05d}.jpg" for i in range(6001)]
    run_id = worker_run_to_completion(api, wid, schedule_simple(client), filenames)
    (tag,) = client.get_compute_worker_run_tags(run_id)
    assert tag.tot_size == len(filenames)

    offsets = spy_export_offsets(client, monkeypatch)
    exported = client.export_filenames_by_tag_name(tag.name).split("\n")
    assert offsets[:2] == [0, 5000]  # pageOffset is an element offset; the last page may be empty
    assert len(exported) == len(filenames)
    assert exported == filenames
    assert client.export_filenames_by_tag_id(tag.id).split("\n") == exported
    assert client.get_filenames_in_tag(tag) == filenames


def test_tag_export_paginates_long_filenames(client, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer than 5000 names but more than 5000 characters: the client asks for a second page."""
    new_dataset(client)
    wid = client.register_compute_worker(name="long-names-worker")
    filenames = [f"{'deep/' * 40}{i:03d}-{'x' * 40}.png" for i in range(60)]
    assert len("\n".join(filenames)) > 5000
    run_id = worker_run_to_completion(api, wid, schedule_simple(client), filenames)
    (tag,) = client.get_compute_worker_run_tags(run_id)
    offsets = spy_export_offsets(client, monkeypatch)
    exported = client.export_filenames_by_tag_name(tag.name)
    assert offsets == [0, 5000]  # the first page is > 5000 characters, the second is empty
    assert exported.split("\n") == filenames
    assert client.get_filenames_in_tag(tag) == filenames


@pytest.mark.parametrize("name", ["12e45", "null"])
def test_tag_export_single_filename_that_looks_like_json(client, api: Api, name: str) -> None:
    """The client ``json.loads`` every response body before falling back to text.

    An export page holding one filename that is also a JSON literal (an extension-less hash like
    ``12e45``) must still come back verbatim, so the body must be a JSON string, not bare text.
    """
    new_dataset(client)
    wid = client.register_compute_worker(name="json-name-worker")
    run_id = worker_run_to_completion(api, wid, schedule_simple(client), [name])
    (tag,) = client.get_compute_worker_run_tags(run_id)
    assert client.export_filenames_by_tag_id(tag.id) == name
