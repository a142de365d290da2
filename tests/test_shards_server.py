"""Shards of split runs (extension, /v1/ext/; issue 11) over real HTTP, on SQLite and PostgreSQL.

Publish / resume / replace, the listing's rules, atomic claims under concurrency and the parallelism cap,
leases, attempts and FAILED, lost workers (deleted, restarted), results only from the holder, the end of
a scheduled run, two users, the summary, the size limits, and the work long poll's wake-up.
"""

from __future__ import annotations

import gzip
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass

import pytest
from conftest import Api, Backend, ServerProcess, run_sql
from flows import config, dataset, lock, ok, register, run_state, schedule, set_state, start_run, wait_until
from lightly_protocol import paths
from lightly_protocol.shards import ShardAssignment, ShardPlanData, WorkData, encode_listing, listing_digest

NAMES = [f"dir{i % 3}/img-{i:04d}.jpg" for i in range(10)]


@dataclass
class Run:
    """A scheduled run locked by its coordinator, with its run started."""

    api: Api
    ds: str
    sid: str
    coordinator: str
    run_id: str

    def publish(self, names: list[str] = NAMES, size: int = 3, **params: object):  # type: ignore[no-untyped-def]
        query = {"workerId": self.coordinator, "runId": self.run_id, "shardSize": size, **params}
        return self.api.put(paths.scheduled_shards(self.sid), params=query, content=encode_listing(names))

    def plan(self) -> ShardPlanData:
        return ShardPlanData.model_validate(ok(self.api.get(paths.scheduled_shards(self.sid))))


def locked_run(api: Api, runs_on: list[str] | None = None) -> Run:
    coordinator = register(api, f"coord-{secrets.token_hex(3)}", labels=runs_on)
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid, runs_on=runs_on)
    assert lock(api, ds, coordinator, sid).status_code == 204
    return Run(api, ds, sid, coordinator, start_run(api, ds, sid))


def work(api: Api, worker_id: str, wait: float = 0) -> WorkData:
    params = {"waitSeconds": wait} if wait else {}
    return WorkData.model_validate(ok(api.get(paths.worker_work(worker_id), params=params, timeout=wait + 30)))


def take(api: Api, worker_id: str) -> ShardAssignment:
    got = work(api, worker_id).shard
    assert got is not None, f"worker {worker_id} got no shard"
    return got


def beat(api: Api, shard_id: str, worker_id: str, state: str = "LEASED", processed: int | None = None):  # type: ignore[no-untyped-def]
    body: dict[str, object] = {"workerId": worker_id, "state": state}
    if processed is not None:
        body["processed"] = processed
    return api.put(paths.shard(shard_id), json=body)


def upload(api: Api, shard_id: str, worker_id: str, data: bytes = b"result-bytes"):  # type: ignore[no-untyped-def]
    return api.put(paths.shard_result(shard_id), params={"workerId": worker_id}, content=data)


# ---------------------------------------------------------------- publish, resume, replace


def test_publish_splits_the_listing_and_a_republish_resumes(api: Api, db_backend: Backend) -> None:
    run = locked_run(api)
    plan = ShardPlanData.model_validate(ok(run.publish()))
    assert plan.created and plan.total == 10 and plan.shard_size == 3 and plan.parallelism == "auto"
    assert plan.input_digest == listing_digest(NAMES)
    assert [(s.index, s.start, s.stop, s.state) for s in plan.shards] == [
        (0, 0, 3, "OPEN"),
        (1, 3, 6, "OPEN"),
        (2, 6, 9, "OPEN"),
        (3, 9, 10, "OPEN"),
    ]
    assert {s.run_id for s in plan.shards} == {run.run_id}
    assert ok(api.get(paths.shard_files(plan.shards[1].id))) == NAMES[3:6]
    assert run.plan() == plan.model_copy(update={"created": False})

    # the coordinator finishes shard 0; a worker holds shard 1
    own = ShardAssignment.model_validate(
        ok(api.post(paths.scheduled_shards_claim(run.sid), params={"workerId": run.coordinator}))
    )
    assert own.shard.index == 0 and own.dataset_id == run.ds and own.input_digest == plan.input_digest
    ok(upload(api, own.shard.id, run.coordinator, b"zero"))
    helper = register(api)
    held = take(api, helper)
    assert held.shard.index == 1

    # the coordinator crashed; the retried run republishes the same listing: resume
    again = ShardPlanData.model_validate(ok(run.publish(parallelism=2)))
    assert not again.created and again.parallelism == 2
    by_index = {s.index: s for s in again.shards}
    assert by_index[0].state == "DONE" and by_index[0].result_bytes == 4
    assert by_index[1].state == "LEASED" and by_index[1].worker_id == helper
    assert api.get(paths.shard_result(own.shard.id)).content == b"zero"

    # FAILED (and CANCELED) shards of a still active run open again on a republish: a new attempt
    run_sql(db_backend, "UPDATE shards SET state = 'FAILED', message = 'x' WHERE id = :id", id=by_index[2].id)
    run_sql(db_backend, "UPDATE shards SET state = 'CANCELED' WHERE id = :id", id=by_index[3].id)
    states = {s.index: (s.state, s.attempts) for s in ShardPlanData.model_validate(ok(run.publish())).shards}
    assert states == {0: ("DONE", 1), 1: ("LEASED", 1), 2: ("OPEN", 0), 3: ("OPEN", 0)}

    # another listing (or shard size) replaces the plan and its results
    new = ShardPlanData.model_validate(ok(run.publish(NAMES[:4], size=2)))
    assert new.created and new.total == 4 and len(new.shards) == 2
    assert {s.state for s in new.shards} == {"OPEN"}
    assert api.get(paths.shard_result(own.shard.id)).status_code == 404
    assert beat(api, held.shard.id, helper).status_code == 404  # the old shard is gone: the worker drops it


def test_only_the_coordinator_holding_the_lock_publishes(api: Api) -> None:
    run = locked_run(api)
    other = register(api)
    r = run.publish(workerId=other)
    assert r.status_code == 409 and run.coordinator in r.json()["error"], r.text
    ds, cid = dataset(api), config(api)
    unlocked = schedule(api, ds, cid)
    r = api.put(
        paths.scheduled_shards(unlocked),
        params={"workerId": other, "runId": run.run_id},
        content=encode_listing(NAMES),
    )
    assert r.status_code == 409 and "OPEN" in r.json()["error"], r.text
    assert api.get(paths.scheduled_shards(unlocked)).status_code == 404  # nothing was published


@pytest.mark.parametrize(
    ("listing", "needle"),
    [
        (b"a.jpg\n\nb.jpg", "line 2"),
        (b"a.jpg\nb.jpg\n/etc/passwd", "line 3"),
        (b"ok.jpg\nx/../../secret.jpg", "line 2"),
        (b"tab\there.jpg", "line 1"),
    ],
)
def test_bad_listing_names_say_which_line(api: Api, listing: bytes, needle: str) -> None:
    run = locked_run(api)
    r = api.put(
        paths.scheduled_shards(run.sid),
        params={"workerId": run.coordinator, "runId": run.run_id},
        content=gzip.compress(listing),
    )
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert api.get(paths.scheduled_shards(run.sid)).status_code == 404


def test_bad_publish_parameters_are_refused(api: Api) -> None:
    run = locked_run(api)
    assert run.publish(parallelism="all").status_code == 400
    assert run.publish(parallelism=0).status_code == 400
    assert run.publish(size=0).status_code == 400
    r = api.put(
        paths.scheduled_shards(run.sid),
        params={"workerId": run.coordinator, "runId": run.run_id},
        content=b"a.jpg\nb.jpg",
    )
    assert r.status_code == 400 and "gzip" in r.json()["error"], r.text


# ---------------------------------------------------------------- claims


def test_concurrent_claims_never_hand_one_shard_to_two_workers(api: Api, server: ServerProcess) -> None:
    run = locked_run(api)
    names = [f"f{i:03d}.jpg" for i in range(60)]
    ok(run.publish(names, size=1))
    worker_ids = [register(api) for _ in range(12)]
    taken: list[tuple[str, str]] = []
    errors: list[str] = []
    guard = threading.Lock()
    start = threading.Barrier(len(worker_ids))

    def claimer(wid: str) -> None:
        client = Api(server.url, api.token)
        try:
            start.wait()
            while True:
                r = client.get(paths.worker_work(wid))
                if r.status_code != 200:
                    with guard:
                        errors.append(f"{r.status_code} {r.text}")
                    return
                shard = WorkData.model_validate(r.json()).shard
                if shard is None:
                    return
                with guard:
                    taken.append((shard.shard.id, wid))
        finally:
            client.http.close()

    threads = [threading.Thread(target=claimer, args=(w,)) for w in worker_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts = Counter(sid for sid, _ in taken)
    assert len(counts) == 60 and max(counts.values()) == 1, counts.most_common(3)
    plan = run.plan()
    assert {s.state for s in plan.shards} == {"LEASED"}
    assert {s.id: s.worker_id for s in plan.shards} == dict(taken)
    assert all(s.attempts == 1 for s in plan.shards)


def test_parallelism_caps_the_leased_shards_of_a_run(api: Api) -> None:
    run = locked_run(api)
    ok(run.publish(size=2, parallelism=2))
    a, b, c = register(api), register(api), register(api)
    first, second = take(api, a), take(api, b)
    assert (first.shard.index, second.shard.index) == (0, 1)
    assert work(api, c).shard is None  # two are LEASED: the cap
    # the coordinator's own claim obeys the same cap
    r = api.post(paths.scheduled_shards_claim(run.sid), params={"workerId": run.coordinator})
    assert r.status_code == 204, r.text
    ok(upload(api, first.shard.id, a))
    third = take(api, c)
    assert third.shard.index == 2
    assert third.config.worker_type == "FULL"


def test_shards_go_only_to_workers_whose_labels_fit(api: Api) -> None:
    run = locked_run(api, runs_on=["gpu"])
    ok(run.publish())
    plain, gpu = register(api), register(api, labels=["gpu", "big"])
    assert work(api, plain).shard is None
    assert take(api, gpu).shard.index == 0


def test_the_work_poll_answers_scheduled_runs_when_there_is_no_shard(api: Api) -> None:
    idle = register(api)
    assert work(api, idle) == WorkData(scheduled=[])
    ds, cid = dataset(api), config(api)
    sid = schedule(api, ds, cid)
    got = work(api, idle)
    assert got.shard is None and [s.id for s in got.scheduled] == [sid]
    assert [s.id for s in work(api, idle, wait=5).scheduled] == [sid]  # the long poll: at once
    unknown = api.get(paths.worker_work("f" * 24))
    assert unknown.status_code == 404, unknown.text


def test_a_waiting_work_poll_is_woken_by_a_shard_opening(api: Api) -> None:
    run = locked_run(api)
    idle = register(api)
    answers: list[WorkData] = []
    poller = threading.Thread(target=lambda: answers.append(work(api, idle, wait=20)))
    poller.start()
    time.sleep(0.5)  # let the poll start waiting (if it starts later it claims at once: the test still holds)
    ok(run.publish())
    poller.join(40)
    assert answers and answers[0].shard is not None, f"the poll answered {answers}"
    assert answers[0].shard.shard.index == 0 and answers[0].shard.shard.worker_id == idle


# ---------------------------------------------------------------- the holder's calls


def test_heartbeat_hand_back_and_results_only_from_the_holder(api: Api) -> None:
    run = locked_run(api)
    ok(run.publish(size=5))
    a, b = register(api), register(api)
    shard = take(api, a).shard
    hb = ok(beat(api, shard.id, a, processed=3))
    assert hb["state"] == "LEASED" and hb["processed"] == 3
    assert beat(api, shard.id, a, processed=6).status_code == 400  # more than the shard's 5 files
    r = beat(api, shard.id, b)
    assert r.status_code == 409 and a in r.json()["error"], r.text
    r = upload(api, shard.id, b)
    assert r.status_code == 409, r.text
    done = ok(upload(api, shard.id, a, b"\x00\x01payload"))
    assert done["state"] == "DONE" and done["resultBytes"] == 9 and done["processed"] == 5
    assert api.get(paths.shard_result(shard.id)).content == b"\x00\x01payload"
    assert ok(upload(api, shard.id, a, b"again"))["state"] == "DONE"  # the holder's retry: 200
    assert api.get(paths.shard_result(shard.id)).content == b"\x00\x01payload"  # the first result stays
    r = upload(api, shard.id, b, b"duplicate")
    assert r.status_code == 409 and "already DONE" in r.json()["error"], r.text
    assert beat(api, shard.id, a).status_code == 409  # DONE: nothing to renew

    second = take(api, b).shard
    assert api.get(paths.shard_result(second.id)).status_code == 404  # not DONE yet
    handed = ok(beat(api, second.id, b, state="OPEN"))
    assert handed["state"] == "OPEN" and handed["attempts"] == 0 and "workerId" not in handed
    assert beat(api, second.id, b).status_code == 409  # handed back: no longer its
    assert take(api, a).shard.id == second.id


def test_a_restarted_or_deleted_worker_reopens_its_shards_at_once(api: Api) -> None:
    run = locked_run(api)
    ok(run.publish(size=5))
    a, b = register(api), register(api)
    headers = {"X-Lightly-Worker-Session": "session-aaaaaaaa"}
    ok(api.put(paths.worker(a), json={"state": "IDLE"}, headers=headers), 204)
    first = take(api, a).shard
    # a new process behind the same worker id reports IDLE: what the old one held reopens
    ok(api.put(paths.worker(a), json={"state": "IDLE"}, headers={"X-Lightly-Worker-Session": "session-bbbbbbbb"}), 204)
    reopened = {s.id: s for s in run.plan().shards}[first.id]
    assert reopened.state == "OPEN" and reopened.worker_id is None and reopened.attempts == 1
    second = take(api, b).shard
    assert second.id == first.id and second.attempts == 2
    ok(api.delete(paths.worker(b)), 204)
    assert {s.id: s for s in run.plan().shards}[first.id].state == "OPEN"


# ---------------------------------------------------------------- leases and attempts


@pytest.fixture(scope="module")
def short_lease(db_backend: Backend, server: ServerProcess) -> ServerProcess:
    return db_backend.start_server("--max-attempts", "2", lease_seconds=1.5)


def test_an_expired_lease_reopens_the_shard_and_the_last_attempt_fails_it(
    short_lease: ServerProcess, token: str
) -> None:
    api = Api(short_lease.url, token)
    run = locked_run(api)
    ok(run.publish(size=10))
    silent, other = register(api), register(api)
    shard_id = take(api, silent).shard.id

    def state() -> tuple[str, int, str | None]:
        s = run.plan().shards[0]
        return s.state, s.attempts, s.message

    wait_until(lambda: state()[0] == "OPEN", timeout=20)
    assert state() == ("OPEN", 1, None)
    assert beat(api, shard_id, silent).status_code == 409  # too late: the lease is gone
    assert take(api, other).shard.attempts == 2
    wait_until(lambda: state()[0] != "LEASED", timeout=20)
    final = state()
    assert final[0] == "FAILED" and final[1] == 2, final
    assert "gave up after 2 attempts" in (final[2] or "") and "lease expired" in (final[2] or ""), final
    assert work(api, register(api)).shard is None  # FAILED shards are not handed out


def test_heartbeats_keep_the_lease(short_lease: ServerProcess, token: str) -> None:
    api = Api(short_lease.url, token)
    run = locked_run(api)
    ok(run.publish(size=10))
    holder = register(api)
    shard_id = take(api, holder).shard.id
    for i in range(8):  # 4 s of heartbeats every 0.5 s: longer than the 1.5 s lease
        ok(beat(api, shard_id, holder, processed=i))
        set_state(api, run.coordinator, "BUSY")
        time.sleep(0.5)
    s = run.plan().shards[0]
    assert (s.state, s.worker_id, s.attempts, s.processed) == ("LEASED", holder, 1, 7)


# ---------------------------------------------------------------- the end of a run, users, summary


def test_the_end_of_the_scheduled_run_cancels_its_shards(api: Api) -> None:
    run = locked_run(api)
    ok(run.publish(size=3))
    a = register(api)
    first, second = take(api, a).shard, take(api, register(api)).shard
    ok(upload(api, first.id, a))
    run_state(api, run.run_id, "COMPLETED")
    plan = run.plan()
    assert {s.state for s in plan.shards} == {"CANCELED"}, plan.shards
    assert all("ended" in (s.message or "") for s in plan.shards)
    assert api.get(paths.shard_result(first.id)).status_code == 404
    r = beat(api, second.id, second.worker_id or "")
    assert r.status_code == 409, r.text
    assert run.sid not in {s["scheduledId"] for s in ok(api.get(paths.SHARDS_SUMMARY))}


def test_two_users_shards_never_mix(db_backend: Backend, server: ServerProcess) -> None:
    alice, bob = Api(server.url, db_backend.token()), Api(server.url, db_backend.token())
    runs = {"alice": locked_run(alice), "bob": locked_run(bob)}
    ok(runs["alice"].publish(size=2))
    ok(runs["bob"].publish(size=2))
    bob_worker = register(bob)
    got = [take(bob, bob_worker).shard for _ in range(5)]
    assert {s.scheduled_id for s in got} == {runs["bob"].sid}
    assert work(bob, bob_worker).shard is None  # all of bob's are taken; alice's stay OPEN
    alice_shard = runs["alice"].plan().shards[0]
    assert {s.state for s in runs["alice"].plan().shards} == {"OPEN"}
    for call in (
        bob.get(paths.shard_files(alice_shard.id)),
        bob.get(paths.shard_result(alice_shard.id)),
        bob.get(paths.scheduled_shards(runs["alice"].sid)),
        beat(bob, alice_shard.id, bob_worker),
        upload(bob, alice_shard.id, bob_worker),
        bob.post(paths.scheduled_shards_claim(runs["alice"].sid), params={"workerId": bob_worker}),
    ):
        assert call.status_code == 404, f"{call.request.method} {call.request.url.path}: {call.status_code}"
    assert [s["scheduledId"] for s in ok(alice.get(paths.SHARDS_SUMMARY))] == [runs["alice"].sid]
    assert [s["scheduledId"] for s in ok(bob.get(paths.SHARDS_SUMMARY))] == [runs["bob"].sid]


def test_summary_counts_the_shards_of_unfinished_runs(api: Api) -> None:
    assert ok(api.get(paths.SHARDS_SUMMARY)) == []
    run = locked_run(api, runs_on=["gpu"])
    ok(run.publish(size=2, parallelism=3))
    a, b = register(api, labels=["gpu"]), register(api, labels=["gpu"])
    first = take(api, a).shard
    take(api, b)
    ok(upload(api, first.id, a))
    (row,) = ok(api.get(paths.SHARDS_SUMMARY))
    assert row == {
        "scheduledId": run.sid,
        "datasetId": run.ds,
        "runsOn": ["gpu"],
        "open": 3,
        "leased": 1,
        "done": 1,
        "failed": 0,
        "total": 5,
        "parallelism": 3,
        "holders": [b],
    }


# ---------------------------------------------------------------- limits


@pytest.fixture(scope="module")
def small_server(db_backend: Backend, server: ServerProcess) -> ServerProcess:
    return db_backend.start_server("--max-shard-bytes", "2048")


def test_listing_and_result_sizes_are_limited(small_server: ServerProcess, token: str) -> None:
    api = Api(small_server.url, token)
    run = locked_run(api)
    random_names = [secrets.token_hex(40) for _ in range(60)]  # ~4.9 kB, incompressible
    r = run.publish(random_names)
    assert r.status_code == 413 and "2048" in r.json()["error"], r.text
    r = run.publish(["a" * 999 + str(i) for i in range(5)])  # compresses well: the uncompressed size counts
    assert r.status_code == 400 and "at most 2048 bytes" in r.json()["error"], r.text
    ok(run.publish(NAMES))
    holder = register(api)
    shard = take(api, holder).shard
    r = upload(api, shard.id, holder, secrets.token_bytes(4096))
    assert r.status_code == 413, r.text
    assert run.plan().shards[0].state == "LEASED"  # nothing was stored
    ok(upload(api, shard.id, holder, secrets.token_bytes(2000)))
