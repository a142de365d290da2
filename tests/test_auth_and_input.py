"""Authentication, isolation between users, and bad input: clear 4xx, nothing stored."""

from __future__ import annotations

import pytest
from conftest import Api, Backend, ServerProcess
from flows import config, dataset, lock, ok, register, schedule, start_run


def _error(response, status: int) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "error"} and body["error"]
    return body["error"]


def test_versions_need_no_token(server: ServerProcess) -> None:
    anon = Api(server.url, None)  # type: ignore[arg-type]
    assert ok(anon.get("/v1/versions/pip/minimum")) == "1.0.0"
    assert ok(anon.get("/v1/versions/pip/latest", params={"currentVersion": "1.5.26"})) == "1.5.26"


def test_missing_and_invalid_tokens(server: ServerProcess) -> None:
    assert "missing token" in _error(Api(server.url, None).get("/v1/docker/worker"), 401)  # type: ignore[arg-type]
    assert "invalid token" in _error(Api(server.url, "nope").get("/v1/datasets"), 401)


def test_other_users_objects_answer_404(api: Api, db_backend: Backend, server: ServerProcess) -> None:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(lock(api, ds, wid, sid), 204)
    rid = start_run(api, ds, sid)
    mallory = Api(server.url, db_backend.token())
    for path in (
        f"/v1/docker/worker/{wid}",
        f"/v1/datasets/{ds}",
        f"/v1/docker/worker/config/vX/{cid}",
        f"/v1/docker/runs/{rid}",
        f"/v1/docker/runs/schedule/{sid}",
        f"/v1/datasets/{ds}/docker/worker/schedule",
    ):
        _error(mallory.get(path), 404)
    _error(mallory.put(f"/v1/docker/runs/{rid}", json={"state": "FAILED"}), 404)
    _error(mallory.delete(f"/v1/docker/worker/{wid}"), 404)
    assert ok(mallory.get("/v1/docker/worker")) == []
    assert ok(mallory.get("/v1/datasets")) == []
    assert ok(mallory.get("/v1/docker/runs")) == []
    # the same worker name is a different worker for another user
    assert register(mallory, ok(api.get(f"/v1/docker/worker/{wid}"))["name"]) != wid


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"name": "w1", "workerType": "FULL"}, "at least 3 characters"),
        ({"name": "worker-x", "workerType": "FULL", "color": "red"}, "color: unknown key"),
        ({"name": "worker-x", "workerType": "FULL", "labels": "gpu"}, "labels"),
        ({"name": "worker-x", "workerType": "PARTIAL"}, "workerType"),
        ({"name": 12345, "workerType": "FULL"}, "name"),
        ({"workerType": "FULL"}, "name: required"),
        ({"name": "k8s.c1.ml.fleet.0"}, "name: must match the protocol's pattern ^[a-zA-Z0-9][a-zA-Z0-9 _-]+$"),
        ({"name": "w" * 301}, "at most 300 characters"),
    ],
)
def test_bad_worker_registrations(api: Api, body: dict, needle: str) -> None:
    assert needle in _error(api.post("/v1/docker/worker", json=body), 400)
    assert ok(api.get("/v1/docker/worker")) == []


def test_malformed_json_changes_nothing(api: Api) -> None:
    r = api.post("/v1/datasets", content=b'{"name": "abc"', headers={"content-type": "application/json"})
    assert "not valid JSON" in _error(r, 400)
    assert ok(api.get("/v1/datasets")) == []


def test_invalid_ids_and_enums(api: Api) -> None:
    assert "workerId" in _error(api.get("/v1/docker/worker/not-an-id"), 400)
    assert "pattern" in _error(api.get("/v1/docker/runs/ABCDEF0123456789ABCDEF01"), 400)
    ds, cid = dataset(api), config(api)
    bad_priority = api.post(f"/v1/datasets/{ds}/docker/worker/schedule", json={"configId": cid, "priority": "URGENT"})
    assert "priority" in _error(bad_priority, 400)
    bad_state = api.get(f"/v1/datasets/{ds}/docker/worker/schedule", params={"state": "open"})
    assert "state" in _error(bad_state, 400)
    assert ok(api.get(f"/v1/datasets/{ds}/docker/worker/schedule")) == []


def test_bad_worker_configs_are_explained(api: Api) -> None:
    def create(cfg: dict):  # type: ignore[no-untyped-def]
        return api.post("/v1/docker/worker/config/vX", json={"version": "V4", "config": {"workerType": "FULL", **cfg}})

    assert "enableTraining" in _error(create({"docker": {"enableTraining": "yes"}}), 400)
    assert "enable_corruptness_check" in _error(create({"docker": {"enable_corruptness_check": True}}), 400)
    assert "strategies" in _error(create({"selection": {"nSamples": 3, "strategies": []}}), 400)
    ds = dataset(api)
    cid = config(
        api, {"nSamples": 5, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "THRESHOLD"}}]}
    )
    msg = _error(api.post(f"/v1/datasets/{ds}/docker/worker/schedule", json={"configId": cid, "priority": "MID"}), 400)
    assert "THRESHOLD cannot use input EMBEDDINGS" in msg and "needs 'threshold' and 'operation'" in msg
    assert ok(api.get(f"/v1/datasets/{ds}/docker/worker/schedule")) == []
    # the documented escape hatch
    ok(
        api.post(
            f"/v1/datasets/{ds}/docker/worker/schedule",
            json={"configId": cid, "priority": "MID"},
            params={"disableConfigValidation": "true"},
        ),
        201,
    )


def test_scheduling_needs_an_input_datasource(api: Api) -> None:
    ds = ok(api.post("/v1/datasets", json={"name": "no-datasource"}), 201)["id"]
    cid = config(api)
    msg = _error(api.post(f"/v1/datasets/{ds}/docker/worker/schedule", json={"configId": cid, "priority": "MID"}), 400)
    assert "no INPUT datasource" in msg


@pytest.mark.parametrize("path", ["/abs/path", "s3://bucket/x", "a/../b", "./x"])
def test_local_datasource_paths_must_stay_inside_the_mount(api: Api, path: str) -> None:
    ds = ok(api.post("/v1/datasets", json={"name": "paths-ds"}), 201)["id"]
    r = api.put(f"/v1/datasets/{ds}/datasource", json={"purpose": "INPUT", "type": "LOCAL", "fullPath": path})
    assert "fullPath" in _error(r, 400)
    _error(api.get(f"/v1/datasets/{ds}/datasource"), 404)


def test_illegal_state_transitions(api: Api) -> None:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    done = api.put(f"/v1/datasets/{ds}/docker/worker/{wid}/schedule/{sid}", json={"state": "DONE"})
    assert "cannot move it to DONE" in _error(done, 409)
    ok(lock(api, ds, wid, sid), 204)
    assert "not OPEN" in _error(lock(api, ds, register(api), sid), 409)
    rid = start_run(api, ds, sid)
    ok(api.put(f"/v1/docker/runs/{rid}", json={"state": "ABORTED", "message": "stopped"}), 204)
    assert "already ended as ABORTED" in _error(api.put(f"/v1/docker/runs/{rid}", json={"state": "COMPLETED"}), 409)
    assert "state" in _error(api.put(f"/v1/docker/runs/{rid}", json={"state": "DANCING"}), 400)


def test_duplicate_dataset_name(api: Api) -> None:
    ok(api.post("/v1/datasets", json={"name": "unique-name"}), 201)
    assert "already exists" in _error(api.post("/v1/datasets", json={"name": "unique-name"}), 409)
    assert len(ok(api.get("/v1/datasets"))) == 1


def test_pagination_is_an_element_offset(api: Api) -> None:
    for i in range(5):
        ok(api.post("/v1/datasets", json={"name": f"paged-{i}"}), 201)
    first = ok(api.get("/v1/datasets", params={"pageSize": 2, "pageOffset": 0}))
    rest = ok(api.get("/v1/datasets", params={"pageSize": 2, "pageOffset": 2}))
    last = ok(api.get("/v1/datasets", params={"pageSize": 2, "pageOffset": 4}))
    assert [d["name"] for d in first + rest + last] == [f"paged-{i}" for i in range(5)]
    assert ok(api.get("/v1/datasets", params={"shared": "False", "pageSize": 2, "pageOffset": 6})) == []


def test_unknown_endpoint(api: Api) -> None:
    assert "no such endpoint" in _error(api.get("/v1/nothing/here"), 404)
