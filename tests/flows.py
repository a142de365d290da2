"""Protocol steps as a worker and a scheduler perform them, over raw HTTP (for the tests)."""

from __future__ import annotations

import secrets
import time

from conftest import Api
from lightly_protocol import paths

SELECTION = {"nSamples": 2, "strategies": [{"input": {"type": "EMBEDDINGS"}, "strategy": {"type": "DIVERSITY"}}]}


def ok(response, status: int = 200):  # type: ignore[no-untyped-def]
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
    )
    return response.json() if response.content else None


def register(api: Api, name: str | None = None, labels: list[str] | None = None) -> str:
    body = {"name": name or f"worker-{secrets.token_hex(4)}", "workerType": "FULL", "labels": labels or []}
    return ok(api.post(paths.WORKERS, json=body), 201)["id"]


def set_state(api: Api, worker_id: str, state: str) -> None:
    ok(api.put(paths.worker(worker_id), json={"state": state, "dockerVersion": "test"}), 204)


def dataset(api: Api, name: str | None = None) -> str:
    ds = ok(api.post(paths.DATASETS, json={"name": name or f"ds-{secrets.token_hex(4)}"}), 201)["id"]
    ok(api.put(paths.datasource(ds), json={"purpose": "INPUT", "type": "LOCAL", "fullPath": ""}), 204)
    return ds


def config(api: Api, selection: dict | None = None) -> str:
    body = {"version": "V4", "config": {"workerType": "FULL", "selection": selection or SELECTION}}
    return ok(api.post(paths.CONFIGS, json=body), 201)["id"]


def schedule(api: Api, ds: str, cid: str, priority: str = "MID", runs_on: list[str] | None = None) -> str:
    body = {"configId": cid, "priority": priority, "runsOn": runs_on or []}
    return ok(api.post(paths.dataset_schedule(ds), json=body), 201)["id"]


def queue(api: Api, worker_id: str, wait: float = 0) -> list[dict]:
    params = {"state": "OPEN"}
    if wait:
        params["waitSeconds"] = str(wait)
    return ok(api.get(paths.worker_schedule(worker_id), params=params))


def lock(api: Api, ds: str, worker_id: str, sid: str):  # type: ignore[no-untyped-def]
    return api.put(paths.scheduled_run(ds, worker_id, sid), json={"state": "LOCKED"})


def start_run(api: Api, ds: str, sid: str) -> str:
    body = {"dockerVersion": "test", "datasetId": ds, "scheduledId": sid, "creator": "USER_WORKER"}
    return ok(api.post(paths.RUNS, json=body), 201)["id"]


def run_state(api: Api, run_id: str, state: str, message: str | None = None) -> None:
    body = {"state": state} | ({"message": message} if message else {})
    ok(api.put(paths.run(run_id), json=body), 204)


def scheduled_state(api: Api, ds: str, sid: str) -> str:
    rows = ok(api.get(paths.dataset_schedule(ds), params={"states": ["OPEN", "LOCKED", "DONE", "CANCELED"]}))
    return {r["id"]: r["state"] for r in rows}[sid]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
