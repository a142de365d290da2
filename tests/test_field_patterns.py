"""The protocol's field patterns (lightly_api_field_patterns.tsv) on the wire, on SQLite and PostgreSQL.

* the unmodified ``lightly==1.5.26`` client lists workers named the way the operator names them;
* requests that break a pattern are refused with 400, Lightly's error body, the field and the pattern;
* names stored before the patterns were enforced are renamed on start, so the client can list them.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import Api, backend
from flows import SELECTION, config, dataset, ok, register
from lightly_devkit.net import PROXY_VARS
from lightly_operator.settings import OperatorSettings
from lightly_protocol.models import NAME_PATTERN

if TYPE_CHECKING:
    from conftest import Backend

OP = OperatorSettings(api_url="http://unused", worker_image="w:1", cluster_name="prod-eu")


def _error(response, status: int = 400) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "error"} and body["code"] == "BAD_REQUEST" and body["error"]
    return body["error"]


def _client(url: str, token: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from lightly.api import ApiWorkflowClient

    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", url)
    monkeypatch.setenv("LIGHTLY_DID_VERSION_CHECK", "True")
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    return ApiWorkflowClient(token=token)


# --------------------------------------------------------------------------- operator names, real client


OPERATOR_REPLICAS = [
    ("ml", "gpu-fleet", 0),
    ("ml", "gpu-fleet.v2", 1),
    ("team-a", "a.b.c.d", 12),
    ("n" * 63, "x" * 253, 3),  # shortened with a hash
    ("n" * 63, ".".join(["ab"] * 84), 999),
]


def test_client_lists_workers_named_by_the_operator(client, api: Api) -> None:
    names = [OP.worker_name(*r) for r in OPERATOR_REPLICAS]
    ids = [register(api, name, ["gpu"]) for name in names]  # what the operator sends
    ids.append(client.register_compute_worker(name=OP.worker_name("ml", "by.client", 0), labels=["cpu"]))
    workers = client.get_compute_workers()  # validates every name against Lightly's pattern
    assert sorted(w.id for w in workers) == sorted(ids)
    assert sorted(w.name for w in workers) == sorted([*names, OP.worker_name("ml", "by.client", 0)])
    assert sorted(client.get_compute_worker_ids()) == sorted(ids)
    # and the operator maps them back to its replicas
    known = [(ns, n) for ns, n, _ in OPERATOR_REPLICAS]
    for w in workers:
        ref = OP.parse_worker_name(w.name, known)
        assert ref is not None and not ref.legacy
    # registration stays idempotent by name
    assert register(api, names[3], ["gpu"]) == ids[3]


# --------------------------------------------------------------------------- refused requests


def test_names_outside_the_pattern_are_refused(api: Api) -> None:
    for name in ("k8s.prod.ml.fleet.0", "laptop.local", "-worker", "wörker", "a/b/c"):
        msg = _error(api.post("/v1/docker/worker", json={"name": name, "workerType": "FULL"}))
        assert msg.startswith("name: must match the protocol's pattern") and NAME_PATTERN in msg and name in msg
        msg = _error(api.post("/v1/datasets", json={"name": name}))
        assert "name: must match the protocol's pattern" in msg and NAME_PATTERN in msg
    assert "at most 300 characters" in _error(api.post("/v1/docker/worker", json={"name": "w" * 301}))
    assert "at most 300 characters" in _error(api.post("/v1/datasets", json={"name": "d" * 301}))
    assert ok(api.get("/v1/docker/worker")) == [] and ok(api.get("/v1/datasets")) == []
    ok(api.post("/v1/docker/worker", json={"name": "w" * 300}), 201)
    ok(api.post("/v1/datasets", json={"name": "my dataset_1-b"}), 201)


def test_the_real_client_refuses_such_names_before_sending(client) -> None:
    from pydantic.v1 import ValidationError  # the client's models are pydantic v1 ones

    with pytest.raises(ValidationError, match="regular expression"):
        client.register_compute_worker(name="k8s.prod.ml.fleet.0")


S3_DA = {
    "purpose": "INPUT",
    "type": "S3DelegatedAccess",
    "fullPath": "s3://bucket/x",
    "s3Region": "eu-central-1",
    "s3ExternalId": "external-id-1",
    "s3ARN": "arn:aws:iam::123456789012:role/lightly",
}
DATASOURCES = [
    ({"type": "LOCAL", "fullPath": "", "webServerLocation": "localhost:3456"}, "webServerLocation"),
    ({"type": "LOCAL", "fullPath": "", "webServerLocation": "ftp://host"}, "webServerLocation"),
    (
        {
            "type": "OBS",
            "fullPath": "obs://b/x",
            "obsEndpoint": "obs.example.com",
            "obsAccessKeyId": "k",
            "obsSecretAccessKey": "s",
        },
        "obsEndpoint",
    ),
    (
        {
            "type": "S3",
            "fullPath": "s3://b/x",
            "s3Region": "eu-central-1",
            "s3AccessKeyId": "k",
            "s3SecretAccessKey": "s",
            "s3ServerSideEncryptionKMSKey": "my-key",
        },
        "s3ServerSideEncryptionKMSKey",
    ),
    ({**S3_DA, "s3ARN": "arn:aws:iam::1234:role/x"}, "s3ARN"),
    ({**S3_DA, "s3ExternalId": "bad external id"}, "s3ExternalId"),
    ({**S3_DA, "s3ServerSideEncryptionKMSKey": "arn:aws:kms:eu:12:key/x"}, "s3ServerSideEncryptionKMSKey"),
]


@pytest.mark.parametrize(("body", "field"), DATASOURCES, ids=[f for _, f in DATASOURCES])
def test_datasource_fields_outside_their_pattern_are_refused(api: Api, body: dict, field: str) -> None:
    ds = ok(api.post("/v1/datasets", json={"name": f"ds-{secrets.token_hex(3)}"}), 201)["id"]
    msg = _error(api.put(f"/v1/datasets/{ds}/datasource", json={"purpose": "INPUT", **body}))
    assert field in msg and "must match the protocol's pattern" in msg, msg
    assert api.get(f"/v1/datasets/{ds}/datasource").status_code == 404  # nothing stored


@pytest.mark.filterwarnings("ignore:GET /v1/datasets/{datasetId}/datasource is deprecated:DeprecationWarning")
def test_datasource_fields_inside_their_pattern_are_stored(client, api: Api) -> None:
    ds = ok(api.post("/v1/datasets", json={"name": "ds-good"}), 201)["id"]
    good = {
        **S3_DA,
        "s3ServerSideEncryptionKMSKey": "arn:aws:kms:eu-central-1:123456789012:key/abc",
    }
    ok(api.put(f"/v1/datasets/{ds}/datasource", json=good), 204)
    client.dataset_id = ds
    src = client.get_datasource()  # the real client validates the answer
    assert src.actual_instance.s3_arn == good["s3ARN"]


def _strategy(input_: dict) -> dict:
    return {"nSamples": 2, "strategies": [{"input": input_, "strategy": {"type": "WEIGHTS"}}]}


CONFIGS = [
    ({"docker": {"enableTraining": True, "training": {"taskName": "my task!"}}}, "training.taskName"),
    ({"selection": {**SELECTION, "autoTasks": [{"type": "TILING", "name": "bad name", "numRows": 2, "numCols": 2}]}},
     "autoTasks.0.name"),
    ({"selection": _strategy({"type": "SCORES", "task": "bad task", "score": "s"})}, "input.task"),
    ({"selection": _strategy({"type": "SCORES", "task": "t", "score": "bad score"})}, "input.score"),
    ({"selection": {"nSamples": 2, "strategies": [
        {"input": {"type": "EMBEDDINGS", "tagName": ".hidden"}, "strategy": {"type": "SIMILARITY"}}]}},
     "input.tagName"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "field"), CONFIGS, ids=[f for _, f in CONFIGS])
def test_worker_config_fields_outside_their_pattern_are_refused(api: Api, extra: dict, field: str) -> None:
    body = {"version": "V4", "config": {"workerType": "FULL", "selection": SELECTION, **extra}}
    msg = _error(api.post("/v1/docker/worker/config/vX", json=body))
    assert field in msg and "must match the protocol's pattern" in msg, msg


def test_worker_config_fields_inside_their_pattern_are_accepted(api: Api) -> None:
    body = {
        "version": "V4",
        "config": {
            "workerType": "FULL",
            "docker": {"enableTraining": True, "training": {"taskName": "object-detection/v2:car@1"}},
            "selection": {
                **_strategy({"type": "SCORES", "task": "my_task.v1", "score": "uncertainty_entropy"}),
                "autoTasks": [{"type": "TILING", "name": "tiles_2x2", "numRows": 2, "numCols": 2}],
            },
        },
    }
    ok(api.post("/v1/docker/worker/config/vX", json=body), 201)


def test_selection_tag_names_outside_their_pattern_are_refused(api: Api) -> None:
    wid, ds, cid = register(api), dataset(api), config(api)
    sid = ok(api.post(f"/v1/datasets/{ds}/docker/worker/schedule", json={"configId": cid, "priority": "MID"}), 201)
    ok(api.put(f"/v1/datasets/{ds}/docker/worker/{wid}/schedule/{sid['id']}", json={"state": "LOCKED"}), 204)
    body = {"dockerVersion": "t", "datasetId": ds, "scheduledId": sid["id"], "creator": "USER_WORKER"}
    rid = ok(api.post("/v1/docker/runs", json=body), 201)["id"]
    msg = _error(api.put(f"/v1/docker/runs/{rid}/selection", json={"filenames": ["a.png"], "tagName": "#bad"}))
    assert "tagName: must match the protocol's pattern" in msg
    ok(api.put(f"/v1/docker/runs/{rid}/selection", json={"filenames": ["a.png"], "tagName": "v1.0:best@run"}), 204)


# --------------------------------------------------------------------------- names stored before enforcement


@pytest.fixture(params=["sqlite", "postgresql"])
def old_backend(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    with backend(request.param, tmp_path) as b:
        yield b


def _seed_old_rows(b: Backend, user: str) -> dict[str, str]:
    """Rows an older server stored: names it accepted although they break Lightly's patterns."""
    from lightly_server.db import Database
    from lightly_server.schema import datasets, tags, users, workers
    from sqlalchemy import select

    db = Database(b.database_url)
    db.migrate()
    ids = {k: secrets.token_hex(12) for k in ("legacy", "dotted", "taken", "ds_dotted", "ds_taken", "tag")}
    with db.write() as conn:
        uid = conn.execute(select(users.c.id).where(users.c.name == user)).scalar_one()

        def worker(key: str, name: str) -> None:
            conn.execute(
                workers.insert().values(
                    id=ids.get(key) or secrets.token_hex(12),
                    user_id=uid,
                    name=name,
                    labels=json.dumps(["gpu"]),
                    state="IDLE",
                    created_at=1,
                    last_modified_at=1,
                    last_seen_at=1,
                )
            )

        def ds(key: str, name: str) -> None:
            row = {"id": ids.get(key) or secrets.token_hex(12), "user_id": uid, "name": name, "type": "Images"}
            conn.execute(datasets.insert().values(**row, created_at=1, last_modified_at=1))

        worker("legacy", "k8s.prod-eu.ml.gpu-fleet.v2.3")
        worker("dotted", "laptop.local")
        worker("free", "laptop-local2")
        worker("taken", "k8s.default.ml.fleet.0")
        worker("new", "k8s_default_ml_fleet_0")  # the operator already registered the new name too
        ds("ds_dotted", "my.dataset")
        ds("ds_taken", "other.set")
        ds("ds_new", "other-set")
        conn.execute(
            tags.insert().values(
                id=ids["tag"],
                dataset_id=ids["ds_dotted"],
                name="#initial",
                bit_mask="0x1",
                tot_size=1,
                created_at=1,
            )
        )
    db.dispose()
    return ids


def test_names_stored_before_enforcement_are_renamed_on_start(
    old_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = old_backend.token("old-user")
    ids = _seed_old_rows(old_backend, "old-user")
    server = old_backend.start_server()
    client = _client(server.url, token, monkeypatch)

    by_id = {w.id: w.name for w in client.get_compute_workers()}  # raised ValidationError before
    assert by_id[ids["legacy"]] == OP.worker_name("ml", "gpu-fleet.v2", 3)  # the operator's current name
    assert by_id[ids["dotted"]] == "laptop-local"
    assert by_id[ids["taken"]] == f"k8s_default_ml_fleet_0-{ids['taken'][-6:]}"  # kept, unique
    assert len(by_id) == 5 and len(set(by_id.values())) == 5
    # ... and that operator (cluster "default") sees it as a superseded registration of replica 0
    duplicate = OperatorSettings(cluster_name="default").parse_worker_name(by_id[ids["taken"]])
    assert duplicate is not None and duplicate.legacy and (duplicate.name, duplicate.index) == ("fleet", 0)

    datasets = {d.id: d.name for d in client.get_datasets()}
    assert datasets[ids["ds_dotted"]] == "my-dataset"
    assert datasets[ids["ds_taken"]] == f"other-set-{ids['ds_taken'][-6:]}"
    client.dataset_id = ids["ds_dotted"]
    assert [t.name for t in client.get_all_tags()] == ["x-initial"]

    # the renamed legacy worker is the operator's replica: registering its name answers the same id
    api = Api(server.url, token)
    assert register(api, OP.worker_name("ml", "gpu-fleet.v2", 3)) == ids["legacy"]
    assert "renamed worker" in server.log() and "k8s.prod-eu.ml.gpu-fleet.v2.3" in server.log()

    # idempotent: a restart renames nothing
    server.stop()
    again = old_backend.start_server()
    assert "renamed" not in again.log()
    assert {w.id: w.name for w in _client(again.url, token, monkeypatch).get_compute_workers()} == by_id
