"""Unit tests of the shard extension's wire models and listing rules (issue 11; no server)."""

from __future__ import annotations

import gzip

import pytest
from lightly_protocol import paths
from lightly_protocol.models import WorkerConfigCreateRequest
from lightly_protocol.shards import (
    ListingError,
    ShardData,
    ShardPlanData,
    ShardUpdateRequest,
    WorkData,
    decode_listing,
    encode_listing,
    listing_digest,
    shard_ranges,
)
from pydantic import ValidationError

OID = "a" * 24


def _config(docker: dict) -> dict:
    return {"version": "V4", "config": {"workerType": "FULL", "docker": docker}}


@pytest.mark.parametrize("docker", [{"parallelism": 3, "shardSize": 500}, {"parallelism": "auto"}, {}])
def test_parallelism_and_shard_size_are_accepted_extension_keys(docker: dict) -> None:
    req = WorkerConfigCreateRequest.model_validate(_config(docker))
    assert req.config.wire()["docker"] == docker


@pytest.mark.parametrize(
    "docker", [{"parallelism": 0}, {"parallelism": "all"}, {"parallelism": 2.0}, {"shardSize": 0}, {"shardSize": "9"}]
)
def test_bad_parallelism_or_shard_size_is_refused(docker: dict) -> None:
    with pytest.raises(ValidationError):
        WorkerConfigCreateRequest.model_validate(_config(docker))


def test_listing_round_trip_and_digest() -> None:
    names = ["a.jpg", "sub/b.png", "ü/ç 1.jpg"]
    body = encode_listing(names)
    assert body == encode_listing(names)  # deterministic
    assert decode_listing(body, 1000) == names
    assert decode_listing(gzip.compress(b"a.jpg\nsub/b.png\n"), 1000) == ["a.jpg", "sub/b.png"]
    assert listing_digest(names) != listing_digest(names[:2])
    assert decode_listing(encode_listing([]), 10) == []


@pytest.mark.parametrize(
    ("listing", "line"),
    [
        (b"a.jpg\n\nb.jpg", "line 2"),
        (b"a.jpg\n/etc/passwd", "line 2"),
        (b"ok.jpg\nx/../../y.jpg", "line 2"),
        (b"a\x00b.jpg", "line 1"),
        (b"a.jpg\nb.jpg\nc\tx.jpg", "line 3"),
        (b"a.jpg\n\xff.jpg", "line 2"),
    ],
)
def test_bad_names_say_which_line(listing: bytes, line: str) -> None:
    with pytest.raises(ListingError, match=line):
        decode_listing(gzip.compress(listing), 1000)


def test_listing_size_and_framing_limits() -> None:
    with pytest.raises(ListingError, match="at most 100 bytes"):
        decode_listing(gzip.compress(b"x" * 101), 100)
    assert decode_listing(gzip.compress(b"x" * 100), 100) == ["x" * 100]
    with pytest.raises(ListingError, match="gzip"):
        decode_listing(b"a.jpg\nb.jpg", 100)
    with pytest.raises(ListingError, match="gzip"):
        decode_listing(gzip.compress(b"a.jpg")[:-4], 100)
    with pytest.raises(ListingError, match="gzip"):
        decode_listing(gzip.compress(b"a.jpg") + gzip.compress(b"b.jpg"), 100)


def test_shard_ranges_are_contiguous_and_cover_the_listing() -> None:
    assert shard_ranges(0, 3) == []
    assert shard_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]
    assert shard_ranges(6, 3) == [(0, 3), (3, 6)]
    assert shard_ranges(2, 2000) == [(0, 2)]
    with pytest.raises(ValueError):
        shard_ranges(5, 0)


def test_shard_wire_models_are_camel_case_and_strict() -> None:
    shard = ShardData(
        id=OID, scheduled_id=OID, index=0, start=0, stop=5, state="OPEN", attempts=0, processed=0, updated_at=1
    )
    assert shard.wire() == {
        "id": OID,
        "scheduledId": OID,
        "index": 0,
        "start": 0,
        "stop": 5,
        "state": "OPEN",
        "attempts": 0,
        "processed": 0,
        "updatedAt": 1,
    }
    plan = ShardPlanData.model_validate(
        {"inputDigest": "0" * 64, "total": 5, "shardSize": 5, "parallelism": "auto", "created": True, "shards": []}
    )
    assert plan.parallelism == "auto"
    assert WorkData.model_validate({"scheduled": []}).shard is None
    with pytest.raises(ValidationError):
        ShardData.model_validate(shard.wire() | {"state": "RUNNING"})
    with pytest.raises(ValidationError):
        ShardUpdateRequest.model_validate({"workerId": OID, "state": "DONE"})
    assert ShardUpdateRequest.model_validate({"workerId": OID, "state": "LEASED", "processed": 3}).processed == 3


def test_extension_paths_live_under_one_prefix() -> None:
    built = [
        paths.SHARDS_SUMMARY,
        paths.scheduled_shards(OID),
        paths.scheduled_shards_claim(OID),
        paths.worker_work(OID),
        paths.shard(OID),
        paths.shard_files(OID),
        paths.shard_result(OID),
    ]
    assert all(p.startswith(paths.EXT + "/") for p in built)
    assert len(set(built)) == len(built)


def test_summary_demand_respects_the_parallelism_cap() -> None:
    from lightly_protocol.shards import ShardSummary

    row = {"scheduledId": OID, "datasetId": OID, "runsOn": [], "done": 0, "failed": 0, "total": 10, "holders": []}
    assert ShardSummary.model_validate(row | {"open": 8, "leased": 2, "parallelism": "auto"}).demand() == 8
    assert ShardSummary.model_validate(row | {"open": 8, "leased": 2, "parallelism": 3}).demand() == 1
    assert ShardSummary.model_validate(row | {"open": 8, "leased": 4, "parallelism": 3}).demand() == 0
    assert ShardSummary.model_validate(row | {"open": 1, "leased": 0, "parallelism": 3}).demand() == 1
