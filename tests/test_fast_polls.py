"""The idle fleet's polls in their steady-state shape skip FastAPI (``fast_polls``): same answers, same errors.

Over real HTTP against a server process: a poll answered by the fast path must be indistinguishable
from FastAPI's answer (status, body, content type, metrics under the route template), and every shape
it does not take (first poll, unknown worker, other parameters, odd numbers, a bad token) must still
get FastAPI's answer. The ``lightly_server_fast_polls_total`` counter shows which way a poll went.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from conftest import Api, ServerProcess
from flows import config, dataset, lock, ok, register, schedule, set_state
from lightly_protocol import paths
from lightly_server.longpoll.asgi_fast_path import QUEUE_KEYS, QUEUE_PATH, WORK_KEYS, WORK_PATH, parse_query


def _metric(server: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _fast(server: ServerProcess, poll: str) -> float:
    return _metric(server, "lightly_server_fast_polls_total", poll=poll)


# ------------------------------------------------------------------------------ which requests qualify


def test_only_the_two_poll_paths_with_an_object_id_match() -> None:
    wid = "0123456789abcdef01234567"
    assert WORK_PATH.match(paths.worker_work(wid)).group(1) == wid
    assert QUEUE_PATH.match(paths.worker_schedule(wid)).group(1) == wid
    for other in (paths.worker_work("x" * 24), paths.worker_work(wid) + "/", paths.worker_schedule(wid.upper())):
        assert not WORK_PATH.match(other) and not QUEUE_PATH.match(other)


@pytest.mark.parametrize(
    ("query", "keys", "expected"),
    [
        (b"token=t&waitSeconds=25", WORK_KEYS, {"token": "t", "waitSeconds": "25"}),
        (b"token=a%2Bb&state=OPEN", QUEUE_KEYS, {"token": "a+b", "state": "OPEN"}),
        (b"token=t&token=u", WORK_KEYS, None),  # a repeated key: FastAPI decides which one counts
        (b"token=t&state=OPEN", WORK_KEYS, None),  # not a parameter of this poll
        (b"token=t&waitSeconds=1&labels=x", QUEUE_KEYS, None),
        (b"token=" + b"x" * 600, WORK_KEYS, None),  # too long to be the steady-state shape
    ],
)
def test_the_query_must_have_the_steady_state_shape(query: bytes, keys: frozenset[str], expected: object) -> None:
    assert parse_query(query, keys) == expected


# ------------------------------------------------------------------------------ over HTTP


def test_a_known_workers_polls_take_the_fast_path_and_answer_like_fastapi(api: Api, server: ServerProcess) -> None:
    wid = register(api, labels=["gpu"])
    set_state(api, wid, "IDLE")
    queue_path, work_path = paths.worker_schedule(wid), paths.worker_work(wid)
    ok(api.get(queue_path, params={"state": "OPEN"}))  # the first poll: FastAPI reads the worker
    before = _fast(server, "queue"), _fast(server, "work")
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid, runs_on=["gpu"])
    # the same request through FastAPI: an extra parameter it ignores sends it there
    slow = api.get(queue_path, params={"state": "OPEN", "waitSeconds": "0", "via": "fastapi"})
    fast = api.get(queue_path, params={"state": "OPEN", "waitSeconds": "0"})
    assert (fast.status_code, fast.json(), fast.headers["content-type"]) == (
        slow.status_code,
        slow.json(),
        slow.headers["content-type"],
    )
    assert [r["id"] for r in fast.json()] == [sid]
    slow_work = api.get(work_path, params={"via": "fastapi"})
    fast_work = api.get(work_path)
    assert fast_work.json() == slow_work.json() and fast_work.json()["scheduled"][0]["id"] == sid
    # a waiting fast poll is handed the run like any other
    waited = ok(api.get(work_path, params={"waitSeconds": "5"}))
    assert [r["id"] for r in waited["scheduled"]] == [sid]
    ok(lock(api, ds, wid, sid), 204)
    assert ok(api.get(queue_path, params={"state": "OPEN", "waitSeconds": "0.2"})) == []
    assert (_fast(server, "queue") - before[0], _fast(server, "work") - before[1]) == (2, 2)
    count = _metric(
        server, "lightly_server_http_request_duration_seconds_count", route=paths.worker_schedule("{workerId}")
    )
    assert count >= 4  # both ways are recorded under the route template


def test_shapes_the_fast_path_does_not_take_get_fastapis_answers(api: Api, server: ServerProcess) -> None:
    wid = register(api)
    ok(api.get(paths.worker_work(wid)))  # known to the process now
    before = _fast(server, "work")
    for wait in ("-1", "abc", ""):
        r = api.get(paths.worker_work(wid), params={"waitSeconds": wait})
        assert r.status_code == 400, (wait, r.text)
        assert "waitSeconds" in r.json()["error"]
    r = api.get(paths.worker_schedule(wid), params={"state": "NOPE", "waitSeconds": "0"})
    assert r.status_code == 400 and "state" in r.json()["error"]
    r = httpx.get(f"{server.url}{paths.worker_work(wid)}", params={"token": "not-a-token", "waitSeconds": "0"})
    assert r.status_code == 401 and "invalid token" in r.json()["error"]
    unknown = "0123456789abcdef01234567"
    r = api.get(paths.worker_work(unknown), params={"waitSeconds": "0"})
    assert r.status_code == 404, r.text
    assert _fast(server, "work") == before
    ok(api.delete(paths.worker(wid)), 204)  # forgotten by the process: its next poll is refused
    r = api.get(paths.worker_work(wid), params={"waitSeconds": "0"})
    assert r.status_code == 404, r.text


def test_another_users_token_does_not_reach_a_known_worker(api: Api, server: ServerProcess, db_backend) -> None:  # type: ignore[no-untyped-def]
    wid = register(api)
    ok(api.get(paths.worker_work(wid)))
    other = Api(server.url, db_backend.token())
    ok(other.get(paths.WORKERS))  # the other token is cached now: the fast path would accept it
    r = other.get(paths.worker_work(wid), params={"waitSeconds": "0"})
    assert r.status_code == 404, r.text
    other.http.close()


def test_many_concurrent_fast_polls_each_get_one_run_and_none_is_lost(api: Api, server: ServerProcess) -> None:
    wids = [register(api) for _ in range(20)]
    for w in wids:
        set_state(api, w, "IDLE")
        ok(api.get(paths.worker_work(w)))
    ds_ids = [dataset(api) for _ in range(10)]
    cid = config(api)

    async def main() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:

            async def poll(w: str) -> dict:  # a worker: poll, and claim what it is handed
                r = await http.get(paths.worker_work(w), params={"token": api.token, "waitSeconds": "3"})
                assert r.status_code == 200, r.text
                for run in r.json()["scheduled"]:
                    claim = await http.put(
                        paths.scheduled_run(run["datasetId"], w, run["id"]),
                        params={"token": api.token},
                        json={"state": "LOCKED"},
                    )
                    assert claim.status_code == 204, claim.text  # handed to this worker only: no 409
                return r.json()

            polls = [asyncio.create_task(poll(w)) for w in wids]
            await asyncio.sleep(0.5)  # all of them waiting
            await asyncio.to_thread(lambda: [schedule(api, d, cid) for d in ds_ids])
            return await asyncio.gather(*polls)

    answers = asyncio.run(main())
    handed = [a["scheduled"][0]["id"] for a in answers if a["scheduled"]]
    assert len(handed) == 10 and len(set(handed)) == 10, answers  # one waiter per run, every run handed
    assert all(re.fullmatch(r"[0-9a-f]{24}", h) for h in handed)


# ------------------------------------------------------------------------------ errors inside the fast path


def test_an_error_while_answering_gets_the_applications_error_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (the error must be forced): the app's own exception handlers answer for the fast path."""
    from lightly_protocol.enums import ApiErrorCode
    from lightly_server.app import create_app
    from lightly_server.auth import create_token
    from lightly_server.errors import ApiError
    from lightly_server.longpoll import asgi_fast_path
    from lightly_server.settings import ServerSettings
    from sqlalchemy.exc import OperationalError
    from starlette.testclient import TestClient

    app = create_app(ServerSettings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}"))
    token = create_token(app.state.server.db, "alice")
    with TestClient(app) as http:
        body = {"name": "worker-1", "workerType": "FULL", "labels": []}
        wid = ok(http.post(paths.WORKERS, params={"token": token}, json=body), 201)["id"]
        ok(http.get(paths.worker_work(wid), params={"token": token}))  # FastAPI: known now
        fails: list[Exception] = [
            ApiError(409, ApiErrorCode.CONFLICT, "forced"),
            OperationalError("SELECT 1", {}, Exception("connection refused")),
        ]

        async def failing(*_a: object, **_k: object) -> dict:
            raise fails.pop(0)

        monkeypatch.setattr(asgi_fast_path, "work_poll", failing)
        r = http.get(paths.worker_work(wid), params={"token": token})
        assert (r.status_code, r.json()) == (409, {"code": "CONFLICT", "error": "forced"})
        r = http.get(paths.worker_work(wid), params={"token": token})
        assert r.status_code == 503 and r.json()["error"].startswith("database unavailable: cannot connect")
        assert r.headers["retry-after"]
        metrics = http.get("/metrics").text
    assert f'route="{paths.worker_work("{workerId}")}",status="503"' in metrics
