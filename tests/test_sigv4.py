"""The server's fast S3 presigner (lightly_server.storage.sigv4): URLs equal to botocore's, byte for byte, for
hostile keys, session tokens, virtual-host and path addressing, endpoints with ports and dotted buckets, on
GET, HEAD and PUT; the real store (moto's S3 server) serves and stores through them; a probe
of another shape is refused so that botocore keeps signing."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from bucket_stores import Stores, stores  # noqa: F401  (fixture)
from lightly_server.storage.keys import parse_location
from lightly_server.storage.s3 import S3Bucket, s3_client
from lightly_server.storage.sigv4 import PROBE_KEY, Presigner

KEYS = [
    "k",
    "a b/ü+=&?#%~!'()*.jpg",
    "deep/1/2/3/x y.png",
    "ファイル/é.jpg",
    "a//b",
    "x;y,z:@$.jpg",
    '[]{}|\\^`"<>.jpg',
    "trailing/",
]
CLIENTS = {
    "aws, session token, virtual host": (("eu-west-1", "AKID", "SECRET"), {"token": "TOKEN/with+chars="}, "my-bucket"),
    "endpoint with a port, dotted bucket": (
        ("us-east-1", "AKID", "SECRET"),
        {"endpoint": "http://127.0.0.1:9"},
        "b.dots",
    ),
    "aws, dotted bucket (path style)": (("us-west-2", "AK", "S/e+cret"), {}, "b.dots"),
}
OPS = {"GET": "get_object", "HEAD": "head_object", "PUT": "put_object"}


def _at(url: str) -> datetime:
    return datetime.strptime(dict(parse_qsl(urlsplit(url).query))["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("name", CLIENTS)
def test_the_urls_are_botocores_byte_for_byte(name: str) -> None:
    (region, ak, sk), extra, bucket = CLIENTS[name]
    client = s3_client(region, ak, sk, 5, **extra)
    for method, op in OPS.items():
        signer = Presigner(method, client.generate_presigned_url(op, Params={"Bucket": bucket, "Key": PROBE_KEY}), sk)
        for key in KEYS:
            for ttl in (1, 300, 7 * 24 * 3600):
                expected = client.generate_presigned_url(op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=ttl)
                assert signer.sign(key, ttl, _at(expected)) == expected, (method, key, ttl)


def test_a_new_day_derives_a_new_signing_key() -> None:
    client = s3_client("eu-west-1", "AKID", "SECRET", 5)
    probe = client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": PROBE_KEY})
    signer = Presigner("GET", probe, "SECRET")
    day1 = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC)
    first = signer.sign("k", 60, day1)
    second = signer.sign("k", 60, day1 + timedelta(seconds=2))  # the next day, with the cached key of day 1 before
    assert "20261207%2Feu-west-1" in second and "20261206%2Feu-west-1" in first
    assert second == Presigner("GET", probe, "SECRET").sign("k", 60, day1 + timedelta(seconds=2))


@pytest.mark.parametrize(
    ("probe", "why"),
    [
        ("https://b.s3.amazonaws.com/lightly-probe/key?AWSAccessKeyId=A&Signature=x&Expires=1", "unexpected"),
        ("https://b.s3.amazonaws.com/other?X-Amz-Algorithm=AWS4-HMAC-SHA256", "probe key"),
        (
            "https://b.s3.amazonaws.com/lightly-probe/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F"
            "20260101%2Fr%2Fs3%2Faws4_request&X-Amz-SignedHeaders=host%3Bx-amz-sse&X-Amz-Date=1&X-Amz-Expires=1",
            "host header alone",
        ),
    ],
)
def test_a_probe_of_another_shape_is_refused(probe: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Presigner("GET", probe, "SECRET")


def test_the_store_serves_and_stores_through_them(stores: Stores) -> None:  # noqa: F811
    """moto's S3 server reads, reads a range, heads and writes through the fast URLs. It does not check query
    signatures (its IAM-checking mode answers 500 to any presigned URL, botocore's too), so the signatures
    themselves are proven by the byte-for-byte equality with botocore above."""
    s3 = stores.need("s3")
    client: Any = s3_client("us-east-1", "AKID", "SECRET", 5, endpoint=s3.url)
    bucket_name = f"sigv4-{time.time_ns()}"
    client.create_bucket(Bucket=bucket_name)
    key = "in/a b/ü+=&é.jpg"
    client.put_object(Bucket=bucket_name, Key=key, Body=b"fast bytes")
    bucket = S3Bucket(parse_location("S3", f"s3://{bucket_name}/in"), client, secret_key="SECRET")
    url = bucket.sign("GET", key, 60)
    assert bucket._presigners["GET"] is not None  # the fast path, not botocore's
    assert httpx.get(url, timeout=10).content == b"fast bytes"
    assert httpx.get(url, headers={"Range": "bytes=5-9"}, timeout=10).content == b"bytes"
    assert httpx.head(bucket.sign("HEAD", key, 60), timeout=10).status_code == 200
    assert httpx.put(bucket.sign("PUT", "in/new.jpg", 60), content=b"written", timeout=10).status_code == 200
    assert client.get_object(Bucket=bucket_name, Key="in/new.jpg")["Body"].read() == b"written"
    # without the secret key the URLs come from botocore, as before
    plain = S3Bucket(parse_location("S3", f"s3://{bucket_name}/in"), client)
    assert httpx.get(plain.sign("GET", key, 60), timeout=10).content == b"fast bytes" and not plain._presigners
