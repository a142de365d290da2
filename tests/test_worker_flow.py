"""A worker's whole conversation with the server over real HTTP: claim, states, logs, artifacts, end."""

from __future__ import annotations

import httpx
from conftest import Api
from flows import config, dataset, lock, ok, queue, register, run_state, schedule, scheduled_state, set_state, start_run


def test_worker_claims_runs_reports_and_finishes(api: Api) -> None:
    wid = register(api, "gpu-worker-1", ["gpu", "a100"])
    set_state(api, wid, "IDLE")
    assert ok(api.get(f"/v1/docker/worker/{wid}"))["state"] == "IDLE"

    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid, runs_on=["gpu"])
    assert [r["id"] for r in queue(api, wid)] == [sid]

    ok(lock(api, ds, wid, sid), 204)
    assert scheduled_state(api, ds, sid) == "LOCKED"
    locked = ok(api.get("/v1/docker/worker/schedule", params={"state": "LOCKED", "labels": ["gpu"]}))
    assert [(r["id"], r["owner"]) for r in locked] == [(sid, wid)]  # who holds it
    assert queue(api, wid) == []  # a LOCKED run is no longer offered

    # before the worker created the run, the client sees "not picked up yet"
    assert api.get(f"/v1/docker/runs/schedule/{sid}").status_code == 404
    rid = start_run(api, ds, sid)
    assert ok(api.get(f"/v1/docker/runs/schedule/{sid}"))["id"] == rid
    assert start_run(api, ds, sid) == rid  # a retried create answers the same run
    set_state(api, wid, "BUSY")

    ok(api.get(f"/v1/docker/worker/config/vX/{cid}"))
    for state in ("INITIALIZING", "EMBEDDING", "SAMPLING"):
        run_state(api, rid, state, f"{state.lower()} ...")
        ok(
            api.put(
                f"/v1/docker/runs/{rid}/logs",
                json=[{"ts": 1, "level": "INFO", "group": "pipeline", "msg": f"entered {state}"}],
            ),
            204,
        )
    run = ok(api.get(f"/v1/docker/runs/{rid}"))
    assert (run["state"], run["message"], run["scheduledId"], run["datasetId"]) == ("SAMPLING", "sampling ...", sid, ds)

    logs = ok(api.get(f"/v1/docker/runs/{rid}/logs"))
    assert [e["msg"] for e in logs["logs"]] == ["entered INITIALIZING", "entered EMBEDDING", "entered SAMPLING"]
    assert [e["state"] for e in logs["logs"]] == ["INITIALIZING", "EMBEDDING", "SAMPLING"]
    more = ok(api.get(f"/v1/docker/runs/{rid}/logs", params={"cursor": logs["cursor"]}))
    assert more["logs"] == [] and more["cursor"] == logs["cursor"]

    created = ok(api.post(f"/v1/docker/runs/{rid}/artifacts", json={"fileName": "log.txt", "type": "LOG"}), 201)
    assert api.put(f"/v1/docker/runs/{rid}/artifacts/{created['artifactId']}/confirmUpload").status_code == 409
    assert httpx.put(created["signedWriteUrl"], content=b"line 1\nline 2\n").status_code == 200
    ok(api.put(f"/v1/docker/runs/{rid}/artifacts/{created['artifactId']}/confirmUpload"), 204)
    url = ok(api.get(f"/v1/docker/runs/{rid}/artifacts/{created['artifactId']}/readurl"))
    assert httpx.get(url).content == b"line 1\nline 2\n"
    assert httpx.get(url.replace("signature=", "signature=0")).status_code == 403
    assert [a["type"] for a in ok(api.get(f"/v1/docker/runs/{rid}"))["artifacts"]] == ["LOG"]

    ok(api.put(f"/v1/docker/runs/{rid}/selection", json={"filenames": ["b.jpg", "a.jpg"]}), 204)
    run_state(api, rid, "COMPLETED", "selected 2 of 10")
    assert scheduled_state(api, ds, sid) == "DONE"
    run_state(api, rid, "COMPLETED", "selected 2 of 10")  # idempotent retry
    late = api.put(f"/v1/docker/runs/{rid}", json={"state": "EMBEDDING"})
    assert late.status_code == 409 and "already ended as COMPLETED" in late.json()["error"]

    tags = ok(api.get(f"/v1/docker/runs/{rid}/tags"))
    assert [t["name"] for t in tags] == [f"selected-{rid}"]
    assert ok(api.get(f"/v1/datasets/{ds}/tags/{tags[0]['id']}/filenames")) == ["b.jpg", "a.jpg"]
    assert ok(api.get(f"/v1/datasets/{ds}"))["nSamples"] == 2
    set_state(api, wid, "IDLE")


def test_failed_run_records_why_and_frees_the_dataset(api: Api) -> None:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    first, second = schedule(api, ds, cid), schedule(api, ds, cid)
    ok(lock(api, ds, wid, first), 204)
    blocked = lock(api, ds, wid, second)
    assert blocked.status_code == 409 and "already LOCKED" in blocked.json()["error"]
    rid = start_run(api, ds, first)
    run_state(api, rid, "FAILED", "no input files found under /input_mount")
    assert scheduled_state(api, ds, first) == "DONE"
    assert ok(api.get(f"/v1/docker/runs/{rid}"))["message"] == "no input files found under /input_mount"
    ok(lock(api, ds, wid, second), 204)  # the dataset is free again


def test_worker_hands_a_run_back_and_another_takes_it(api: Api) -> None:
    w1, w2 = register(api), register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(lock(api, ds, w1, sid), 204)
    rid = start_run(api, ds, sid)
    # only the holder may hand it back
    assert api.put(f"/v1/datasets/{ds}/docker/worker/{w2}/schedule/{sid}", json={"state": "OPEN"}).status_code == 409
    ok(api.put(f"/v1/datasets/{ds}/docker/worker/{w1}/schedule/{sid}", json={"state": "OPEN"}), 204)
    assert ok(api.get(f"/v1/docker/runs/{rid}"))["state"] == "ABORTED"
    assert api.get(f"/v1/docker/runs/schedule/{sid}").status_code == 404  # waiting for pickup again
    ok(lock(api, ds, w2, sid), 204)
    rid2 = start_run(api, ds, sid)
    assert rid2 != rid
    assert ok(api.get(f"/v1/docker/runs/schedule/{sid}"))["id"] == rid2


def test_run_needs_a_locked_scheduled_run(api: Api) -> None:
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    r = api.post("/v1/docker/runs", json={"dockerVersion": "x", "scheduledId": sid})
    assert r.status_code == 409 and "lock it first" in r.json()["error"]
    # a run without a scheduled run (a manual run) is allowed
    ok(api.post("/v1/docker/runs", json={"dockerVersion": "x", "datasetId": ds}), 201)


def test_cancel_only_while_open(api: Api) -> None:
    wid = register(api)
    ds, cid = dataset(api), config(api)
    open_run, locked_run = schedule(api, ds, cid), schedule(api, ds, cid)
    ok(api.put(f"/v1/datasets/{ds}/docker/worker/schedule/{open_run}"), 204)
    assert scheduled_state(api, ds, open_run) == "CANCELED"
    ok(lock(api, ds, wid, locked_run), 204)
    r = api.put(f"/v1/datasets/{ds}/docker/worker/schedule/{locked_run}")
    assert r.status_code == 409 and "only OPEN runs can be canceled" in r.json()["error"]
    # the default listing shows unfinished runs only
    listed = ok(api.get(f"/v1/datasets/{ds}/docker/worker/schedule"))
    assert [r["id"] for r in listed] == [locked_run]


def test_deregistering_a_busy_worker_reopens_its_run(api: Api) -> None:
    wid, other = register(api), register(api)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    ok(lock(api, ds, wid, sid), 204)
    rid = start_run(api, ds, sid)
    ok(api.delete(f"/v1/docker/worker/{wid}"), 204)
    assert api.get(f"/v1/docker/worker/{wid}").status_code == 404
    assert ok(api.get(f"/v1/docker/runs/{rid}"))["state"] == "CRASHED"
    assert scheduled_state(api, ds, sid) == "OPEN"
    ok(lock(api, ds, other, sid), 204)
