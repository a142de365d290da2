"""Unit tests of the operator's view of split runs (issue 11): shards as queue depth, holders as busy,
``status.shardsInFlight`` — pure parts, no cluster; and the summary call against a server without shards."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import httpx
from lightly_operator.api_access import ApiView, shard_view
from lightly_operator.lightly_api import LightlyApi
from lightly_operator.memo import FleetMemo
from lightly_operator.observe import busy_replicas
from lightly_operator.sizing import desired_replicas
from lightly_operator.spec import parse_spec
from lightly_protocol import paths
from lightly_protocol.shards import ShardSummary
from test_operator_status import IDS, _input, _status

A, B, C = "a" * 24, "b" * 24, "c" * 24


def _summary(open_: int, leased: int, runs_on: list[str], parallelism: int | str = "auto", holders=()) -> ShardSummary:  # type: ignore[no-untyped-def]
    return ShardSummary.model_validate(
        {
            "scheduledId": A,
            "datasetId": B,
            "runsOn": runs_on,
            "open": open_,
            "leased": leased,
            "done": 0,
            "failed": 0,
            "total": open_ + leased,
            "parallelism": parallelism,
            "holders": list(holders),
        }
    )


def _spec(lo: int = 0, hi: int = 10):  # type: ignore[no-untyped-def]
    return parse_spec(
        {
            "api": {"tokenSecretRef": {"name": "t"}},
            "autoscaling": {"enabled": True, "minReplicas": lo, "maxReplicas": hi, "scaleDownDelaySeconds": 60},
        }
    )


def test_open_shards_of_fitting_runs_count_within_their_cap() -> None:
    rows = [
        _summary(5, 1, ["gpu"], holders=[C]),  # auto: all 5 open count
        _summary(8, 2, [], parallelism=3, holders=[A, C]),  # capped: 3 - 2 = 1
        _summary(7, 0, ["gpu", "big"]),  # the fleet lacks "big": not ours
    ]
    open_shards, holders = shard_view(rows, ["gpu"])
    assert open_shards == 5 + 1
    assert holders == {C: 2, A: 1}  # holders of every run: a worker is busy whichever run it serves
    assert shard_view([], ["gpu"]) == (0, {})


def test_autoscaling_grows_for_open_shards_and_shrinks_after_the_delay() -> None:
    memo = FleetMemo()
    idle = ApiView(states={}, holding={}, open_runs=0)
    spec = _spec(hi=6)
    assert desired_replicas(spec, idle, set(), memo, now=0.0) == 0
    big = replace(idle, open_shards=40)
    assert desired_replicas(spec, big, {0}, memo, now=1.0) == 6  # one big run: up to maxReplicas
    drained = replace(idle, open_shards=0)
    assert desired_replicas(spec, drained, {0, 1}, memo, now=30.0) == 6  # within scaleDownDelaySeconds
    assert desired_replicas(spec, drained, {0, 1}, memo, now=62.0) == 2  # after it: the busy ones
    assert desired_replicas(spec, drained, set(), memo, now=200.0) == 0  # the run finished


def test_shard_holders_are_busy_so_scale_down_keeps_them() -> None:
    registered = {0: IDS[0], 1: IDS[1], 2: IDS[2]}
    view = ApiView(states={}, holding={IDS[0]: A}, open_runs=0, shard_holders={IDS[2]: 1})
    assert busy_replicas(registered, {}, view) == {0, 2}


def test_status_counts_the_shards_this_fleets_workers_hold() -> None:
    base = _input(3)
    view = replace(base.seen.view, shard_holders={IDS[0]: 1, IDS[2]: 2, "f" * 24: 5})  # type: ignore[type-var]
    out = _status(base, view=view, busy={0, 2}).status
    assert out["shardsInFlight"] == 3  # another fleet's worker ("f...") is not counted
    assert out["busyReplicas"] == 2
    assert _status(base).status["shardsInFlight"] == 0
    assert _status(base, view=None).status["shardsInFlight"] == 0  # unknown: nobody is known to hold one


def test_a_server_without_shards_answers_404_and_means_no_shards() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == paths.SHARDS_SUMMARY:
            return httpx.Response(404, json={"code": "NOT_FOUND", "error": "Not Found"})
        return httpx.Response(500, json={"code": "X", "error": "boom"})

    async def go() -> list[ShardSummary]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await LightlyApi("http://api", "tok", 5.0, http).shard_summary()

    assert asyncio.run(go()) == []
    assert calls == [paths.SHARDS_SUMMARY]
