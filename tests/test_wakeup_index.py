"""The long-poll wake-up index (server/lightly_server/longpoll/schedule_broker.py): who is woken, and that
nobody is lost.

Unit tests drive the broker with stand-in rows (no database, no timing); the API tests run the
same rules through real server processes on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import Api
from flows import config, dataset, lock, ok, queue, register, schedule
from lightly_server.longpoll import schedule_broker
from lightly_server.longpoll.schedule_broker import ScheduleBroker


def run_row(rid: str, dataset_id: str | None = None, runs_on: list[str] | None = None, user: str = "u") -> Any:
    return SimpleNamespace(
        id=rid, user_id=user, dataset_id=dataset_id or f"ds-{rid}", state="OPEN", runs_on=json.dumps(runs_on or [])
    )


class FakeDb:
    sqlite = True


def broker_with(rows: list[Any], locked: set[str] | None = None) -> ScheduleBroker:
    b = ScheduleBroker(FakeDb())  # type: ignore[arg-type]
    b.loop = asyncio.get_running_loop()
    b.queries = 0  # type: ignore[attr-defined]

    def query(user_ids: set[str]) -> tuple[list[Any], set[str]]:
        b.queries += 1  # type: ignore[attr-defined]
        return list(rows), set(locked or ())

    b._query = query  # type: ignore[method-assign]
    return b


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


def spawn(b: ScheduleBroker, labels: set[str] | None, user: str = "u", unlockable: bool = False) -> asyncio.Task:
    return asyncio.get_running_loop().create_task(b.wait(user, labels, unlockable, 30))


async def cancel_all(tasks: list[asyncio.Task]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_one_run_wakes_exactly_one_waiter_the_oldest() -> None:
    async def main() -> None:
        rows: list[Any] = []
        b = broker_with(rows)
        tasks = [spawn(b, set()) for _ in range(50)]
        await settle()
        assert b.n_waiting == 50
        rows.append(run_row("r1"))
        b.poke()
        await settle()
        done = [t for t in tasks if t.done()]
        assert done == [tasks[0]]  # first come, first served; nobody else woken (no herd)
        assert [r.id for r in tasks[0].result()] == ["r1"]
        assert b.n_waiting == 49 and b.woken == 1
        await cancel_all(tasks)

    asyncio.run(main())


def test_label_sets_are_respected() -> None:
    async def main() -> None:
        rows: list[Any] = []
        b = broker_with(rows)
        cpu = spawn(b, {"cpu"})
        gpu = spawn(b, {"gpu"})
        big = spawn(b, {"gpu", "big"})
        anyone = spawn(b, None, user="v")  # another user's waiter never gets u's runs
        await settle()
        rows.extend([run_row("big", runs_on=["big", "gpu"]), run_row("g", runs_on=["gpu"])])
        b.poke()
        await settle()
        assert not cpu.done() and not anyone.done()
        assert [r.id for r in big.result()] == ["big"]  # only the superset class fits
        assert [r.id for r in gpu.result()] == ["g"]
        await cancel_all([cpu, anyone])

    asyncio.run(main())


def test_one_waiter_per_dataset_and_locked_datasets_wait() -> None:
    async def main() -> None:
        rows = [run_row("a1", "A"), run_row("a2", "A"), run_row("l1", "L")]
        b = broker_with(rows, locked={"L"})
        tasks = [spawn(b, set()) for _ in range(3)]
        await settle()
        handed = [t.result()[0].id for t in tasks if t.done()]
        assert handed == ["a1"]  # a2 shares a1's dataset; L holds a lock
        unlockable = spawn(b, set(), unlockable=True)
        await settle()
        assert [r.id for r in unlockable.result()] == ["l1"]
        await cancel_all(tasks)

    asyncio.run(main())


def test_cancelled_waiters_leave_the_index_and_are_never_handed_a_run() -> None:
    async def main() -> None:
        rows: list[Any] = []
        b = broker_with(rows)
        first, second = spawn(b, {"gpu"}), spawn(b, {"gpu"})
        await settle()
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert b.n_waiting == 1
        rows.append(run_row("r", runs_on=["gpu"]))
        b.poke()
        await settle()
        assert [r.id for r in second.result()] == ["r"]
        assert b.n_waiting == 0 and b.classes == {}

    asyncio.run(main())


def test_no_lost_wake_up_when_nobody_waits() -> None:
    async def main() -> None:
        rows: list[Any] = []
        b = broker_with(rows)
        w = spawn(b, set())
        await settle()
        await cancel_all([w])
        queries = b.queries  # type: ignore[attr-defined]
        rows.append(run_row("r"))
        b.poke()  # nobody waits: no query now, but the next waiter must look
        await settle()
        assert b.queries == queries  # type: ignore[attr-defined]
        late = spawn(b, set())
        await settle()
        assert [r.id for r in late.result()] == ["r"]

    asyncio.run(main())


def test_a_quiet_queue_costs_arriving_waiters_no_query() -> None:
    async def main() -> None:
        b = broker_with([])
        first = spawn(b, set())
        await settle()
        queries = b.queries  # type: ignore[attr-defined]
        more = [spawn(b, set()) for _ in range(20)]
        await settle()
        assert b.queries == queries  # type: ignore[attr-defined]  # nothing changed since the last look
        await cancel_all([first, *more])

    asyncio.run(main())


def test_a_released_run_goes_to_the_next_waiter() -> None:
    async def main() -> None:
        rows = [run_row("r")]
        b = broker_with(rows)
        first = spawn(b, set())
        await settle()
        assert [r.id for r in first.result()] == ["r"]
        second = spawn(b, set())
        await settle()
        assert not second.done()  # r is handed (not yet claimed): not offered twice
        b.release("r")  # the first worker's claim failed
        await settle()
        assert [r.id for r in second.result()] == ["r"]

    asyncio.run(main())


def test_matching_work_does_not_grow_with_the_waiters(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = schedule_broker.dispatchable

    def counting(*args: Any) -> bool:
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(schedule_broker, "dispatchable", counting)

    async def main() -> None:
        rows: list[Any] = []
        b = broker_with(rows)
        tasks = [spawn(b, {"cpu"}) for _ in range(5000)] + [spawn(b, {"gpu"}) for _ in range(5000)]
        await settle()
        calls["n"] = 0
        rows.extend(run_row(f"g{i}", runs_on=["gpu"]) for i in range(3))
        b.poke()
        await settle()
        assert sum(t.done() for t in tasks) == 3
        assert calls["n"] <= 3 * 2  # runs x waiter classes, not runs x waiters
        await cancel_all(tasks)

    asyncio.run(main())


# ---------------------------------------------------------------- through the server (SQLite and PostgreSQL)


def _polls(api: Api, wids: list[str], wait: float) -> tuple[list[threading.Thread], dict[str, list[dict]]]:
    """Each worker long-polls once and claims what it is handed (a claimed run is never handed again)."""
    got: dict[str, list[dict]] = {}

    def poll(w: str) -> None:
        rows = queue(api, w, wait=wait)
        for r in rows:
            ok(lock(api, r["datasetId"], w, r["id"]), 204)
        got[w] = rows

    threads = [threading.Thread(target=poll, args=(w,)) for w in wids]
    for t in threads:
        t.start()
    return threads, got


def test_a_run_wakes_one_fitting_worker_of_many(api: Api) -> None:
    gpu = [register(api, labels=["gpu"]) for _ in range(4)]
    cpu = [register(api, labels=["cpu"]) for _ in range(4)]
    cid = config(api)
    threads, got = _polls(api, gpu + cpu, wait=4)
    time.sleep(1.0)  # the polls reach the server; the assertions do not depend on it
    sid = schedule(api, dataset(api), cid, runs_on=["gpu"])
    for t in threads:
        t.join(30)
    winners = [w for w, rows in got.items() if rows]
    assert len(winners) == 1 and winners[0] in gpu
    assert [r["id"] for r in got[winners[0]]] == [sid]


def test_a_run_scheduled_while_nobody_waits_is_found_by_the_next_long_poll(api: Api) -> None:
    wid = register(api)
    cid = config(api)
    assert queue(api, wid, wait=0.3) == []  # the broker has seen this user and gone quiet
    sid = schedule(api, dataset(api), cid)
    assert [r["id"] for r in queue(api, wid, wait=20)] == [sid]


def test_a_run_handed_but_never_claimed_goes_to_the_next_worker(api: Api) -> None:
    first, second = register(api), register(api)
    cid = config(api)
    sid = schedule(api, dataset(api), cid)
    assert [r["id"] for r in queue(api, first, wait=5)] == [sid]  # handed; this worker never claims
    assert [r["id"] for r in queue(api, second, wait=20)] == [sid]  # offered again after rehand_after_s
    ok(api.get("/v1/docker/worker/schedule", params={"state": "OPEN"}))


def test_postgresql_replicas_agree_on_one_offer_per_run() -> None:
    """A run whose offer lock another replica holds is skipped; the waiter gets the next run."""

    class FakePg:
        sqlite = False

    async def main() -> None:
        rows = [run_row("theirs"), run_row("mine")]
        b = broker_with(rows)
        b.db = FakePg()  # type: ignore[assignment]
        lock_calls: list[tuple[list[str], list[str]]] = []

        def sync_offers(wanted: list[str], drop: list[str]) -> list[str]:
            lock_calls.append((list(wanted), list(drop)))
            return [w for w in wanted if w != "theirs"]  # the other replica holds "theirs"

        b._sync_offers = sync_offers  # type: ignore[method-assign]
        first, second = spawn(b, set()), spawn(b, set())
        await settle()
        assert [r.id for r in first.result()] == ["mine"]
        assert not second.done()  # "theirs" is the other replica's to hand
        assert lock_calls[0] == (["theirs", "mine"], [])  # one round trip for all runs of a refresh
        rows.remove(rows[1])  # "mine" was claimed: no longer OPEN
        b.poke()
        await settle()
        assert any("mine" in drop for _, drop in lock_calls)  # its offer lock is released
        await cancel_all([second])

    asyncio.run(main())


@pytest.fixture(scope="module")
def second_replica(db_backend: Any, server: Any) -> Any:
    """A second server process on the same database."""
    return db_backend.start_server()


def test_two_replicas_hand_a_run_to_one_worker_only(api: Api, second_replica: Any) -> None:
    other = Api(second_replica.url, api.token)
    here = [register(api) for _ in range(3)]
    there = [register(api) for _ in range(3)]
    cid = config(api)
    t1, got1 = _polls(api, here, wait=4)
    t2, got2 = _polls(other, there, wait=4)
    time.sleep(1.0)  # the polls reach both replicas; the assertions do not depend on it
    sid = schedule(api, dataset(api), cid)
    for t in t1 + t2:
        t.join(30)
    handed = [rows for rows in (*got1.values(), *got2.values()) if rows]
    assert [[r["id"] for r in rows] for rows in handed] == [[sid]]  # one worker woken, its claim won
