"""The binary shard result (issue 11): round trip, and every malformed input refused with a clear reason."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from lightly_worker.shardfile import (
    DIGEST_SIZE,
    MAGIC,
    ShardFileError,
    ShardResult,
    decode,
    encode,
    names_digest,
)

NAMES = ["a/1.jpg", "a/2.jpg", "b/3.png", "b/4.png"]


def _result(**over: object) -> ShardResult:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 5)).astype(np.float32)
    emb[1] = 0.0
    values: dict[str, object] = dict(
        index=3,
        start=12,
        stop=16,
        names_sha256=names_digest(NAMES),
        embeddings=emb,
        digests=[bytes([i]) * DIGEST_SIZE if i != 1 else None for i in range(4)],
        corrupt={1: "OSError: image file is truncated"},
        unreadable=[2],
        model="efficientnet-lite0",
        input_size=128,
    )
    values.update(over)
    return ShardResult(**values)  # type: ignore[arg-type]


def _split(data: bytes) -> tuple[dict, bytes]:
    head_len = struct.unpack_from("<I", data, 10)[0]
    return json.loads(data[14 : 14 + head_len]), data[14 + head_len :]


def _rebuild(header: dict, rest: bytes) -> bytes:
    head = json.dumps(header).encode()
    return MAGIC + struct.pack("<HI", 1, len(head)) + head + rest


def test_round_trip_keeps_every_field_bit_for_bit() -> None:
    r = _result()
    data = encode(r)
    back = decode(data)
    assert (back.index, back.start, back.stop, back.count) == (3, 12, 16, 4)
    assert back.embeddings.dtype == np.float32 and np.array_equal(back.embeddings, r.embeddings)
    assert back.digests == r.digests and back.corrupt == r.corrupt and back.unreadable == [2]
    assert (back.model, back.input_size, back.names_sha256) == ("efficientnet-lite0", 128, names_digest(NAMES))
    back.check(3, 12, 16, NAMES)
    # compact: the float matrix, 21 bytes per file and a small header
    assert len(data) < 4 * 5 * 4 + 4 * (DIGEST_SIZE + 1) + 400


def test_empty_dimension_for_custom_embeddings_and_an_empty_shard() -> None:
    back = decode(encode(_result(embeddings=np.zeros((4, 0), np.float32), model="custom", input_size=0)))
    assert back.embeddings.shape == (4, 0)
    empty = ShardResult(0, 5, 5, names_digest([]), np.zeros((0, 3), np.float32), [])
    assert decode(encode(empty)).count == 0


def test_check_refuses_a_result_for_another_shard_or_file_list() -> None:
    back = decode(encode(_result()))
    with pytest.raises(ShardFileError, match=r"is for shard \(3, 12, 16\).*expected \(4, 12, 16\)"):
        back.check(4, 12, 16, NAMES)
    with pytest.raises(ShardFileError, match="another file list"):
        back.check(3, 12, 16, [*NAMES[:3], "b/5.png"])
    with pytest.raises(ShardFileError, match="3 names given for a shard of 4"):
        back.check(3, 12, 16, NAMES[:3])


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda d: d[:5], "too short"),
        (lambda d: b"NOTSHARD" + d[8:], "bad magic"),
        (lambda d: d[:8] + struct.pack("<H", 9) + d[10:], "version 9 is not supported"),
        (lambda d: d[:10] + struct.pack("<I", 10**6) + d[14:], "header length 1000000 does not fit"),
        (lambda d: d[:-1], r"bytes, expected \d+ for 4 files of dimension 5"),
        (lambda d: d + b"\0", r"bytes, expected \d+ for 4 files"),
        (lambda d: d[:-1] + b"\x02", "has_digest flags must be 0 or 1"),
    ],
)
def test_malformed_bytes_are_refused(mangle, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ShardFileError, match=message):
        decode(mangle(encode(_result())))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dtype": "float64"}, "dtype must be 'float32'"),
        ({"count": 5}, "count 5 does not match start 12 and stop 16"),
        ({"dim": -1}, "dim must be an integer >= 0"),
        ({"index": True}, "index must be an integer"),
        ({"names_sha256": "xyz"}, "names_sha256 must be 64"),
        ({"corrupt": {"9": "bad"}}, "corrupt position 9 is outside the shard's 4 files"),
        ({"corrupt": {"01": "bad"}}, "decimal integers"),
        ({"corrupt": {"x": "bad"}}, "decimal integers"),
        ({"corrupt": {"1": 5}}, "map positions to reasons"),
        ({"unreadable": [2, 2]}, "unreadable positions repeat"),
        ({"unreadable": [-1]}, "unreadable position -1 is outside"),
        ({"extra": 1}, "exactly the keys"),
    ],
)
def test_bad_headers_are_refused(change: dict, message: str) -> None:
    header, rest = _split(encode(_result()))
    header.update(change)
    with pytest.raises(ShardFileError, match=message):
        decode(_rebuild(header, rest))


def test_a_header_that_is_not_json_and_non_finite_values() -> None:
    data = encode(_result())
    head_len = struct.unpack_from("<I", data, 10)[0]
    with pytest.raises(ShardFileError, match="not UTF-8 JSON"):
        decode(data[:14] + b"{" * head_len + data[14 + head_len :])
    emb = _result().embeddings.copy()
    emb[0, 0] = np.nan
    with pytest.raises(ShardFileError, match="NaN or infinite"):
        decode(encode(_result(embeddings=emb)))


def test_encode_refuses_inconsistent_results() -> None:
    with pytest.raises(ShardFileError, match=r"embeddings must be \[count=4, dim\]"):
        encode(_result(embeddings=np.zeros((3, 5), np.float32)))
    with pytest.raises(ShardFileError, match="3 digests for 4 files"):
        encode(_result(digests=[None] * 3))
    with pytest.raises(ShardFileError, match="a digest must be 20 bytes"):
        encode(_result(digests=[b"x", None, None, None]))
    with pytest.raises(ShardFileError, match="corrupt position 4 is outside"):
        encode(_result(corrupt={4: "x"}))
