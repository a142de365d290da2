"""The worker's store reads (lightly_worker.sources): retries, URL refresh, missing objects, the size cap,
timeouts, ranged reads, unsafe listed keys. Against a real HTTP server on loopback that answers 503, 429,
403 and 404 on purpose (scripted per path), not a mock of the transport."""

from __future__ import annotations

import io
import json
import logging
import random
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lightly_worker.sources import (
    ApiRefused,
    DatasourceApi,
    ObjectMissing,
    ObjectTooLarge,
    RemoteSource,
    SourceAccessError,
    StorageError,
    StorePolicy,
    StoreTransport,
    UrlRefused,
    key_problem,
    redact,
)
from lightly_worker.sources.rangefile import RangeFile

FAST = StorePolicy(timeout=2.0, attempts=4, backoff=0.01, max_backoff=0.05, max_object_bytes=1 << 20)

Answer = tuple[int, dict[str, str], bytes]


class Scripted(ThreadingHTTPServer):
    """Answers each path with its script (a list of answers, the last one repeated); records every request."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: dict[str, list[Answer]] = {}
        self.objects: dict[str, bytes] = {}  # path -> body, served with Range support after the script
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.stall: set[str] = set()
        self.delay = 0.0  # seconds every store answer waits (latency)
        self.active = self.peak = 0  # requests in flight now, at most

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        srv = self.server
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        with srv.lock:
            srv.seen.append((self.command, self.path, dict(self.headers)))
            script = srv.script.get(path)
            answer = (script.pop(0) if len(script) > 1 else script[0]) if script else None
            if self.command == "PUT" and answer is None:
                srv.objects[path] = body_in
                answer = (200, {}, b"")
        if path in srv.stall:
            time.sleep(5)
        with srv.lock:
            srv.active += 1
            srv.peak = max(srv.peak, srv.active)
        time.sleep(srv.delay)
        with srv.lock:
            srv.active -= 1
        if answer is None:
            data = srv.objects.get(path)
            if data is None:
                answer = (404, {}, b"<Error><Code>NoSuchKey</Code><Message>gone</Message></Error>")
            else:
                answer = _ranged(data, self.headers.get("Range"))
        status, headers, body = answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if headers.get("Transfer-Encoding") == "chunked":
            for start in range(0, len(body), 65536):
                part = body[start : start + 65536]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)

    do_GET = do_PUT = _answer


def _ranged(data: bytes, header: str | None) -> Answer:
    if not header:
        return 200, {}, data
    a, _, b = header.removeprefix("bytes=").partition("-")
    start, end = int(a), min(int(b) if b else len(data) - 1, len(data) - 1)
    if start >= len(data):
        return 416, {"Content-Range": f"bytes */{len(data)}"}, b""
    return 206, {"Content-Range": f"bytes {start}-{end}/{len(data)}"}, data[start : end + 1]


@pytest.fixture
def http() -> Iterator[Scripted]:
    srv = Scripted()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def transport() -> StoreTransport:
    return StoreTransport(FAST, rng=random.Random(1))


# ---------------------------------------------------------------- retry policy


def test_backoff_is_bounded_full_jitter_and_honours_retry_after() -> None:
    policy = StorePolicy(backoff=0.5, max_backoff=4.0)
    rng = random.Random(0)
    for attempt in range(10):
        ceiling = min(4.0, 0.5 * 2**attempt)
        waits = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8 and min(waits) < ceiling * 0.2  # jitter over the whole range
    assert policy.delay(0, retry_after=3.0, rng=rng) >= 3.0
    assert policy.delay(0, retry_after=60.0, rng=rng) <= 4.0  # a Retry-After never beats the bound


def test_slowdown_and_throttling_are_retried_then_succeed(http: Scripted) -> None:
    slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    http.script["/obj"] = [(503, {}, slow), (429, {"Retry-After": "0"}, b""), (503, {}, slow), (200, {}, b"hello")]
    assert transport().get(f"{http.url}/obj?X-Amz-Signature=secret", "obj").data == b"hello"
    assert len(http.seen) == 4


def test_retries_are_bounded_with_the_stores_message(http: Scripted) -> None:
    slow = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    http.script["/obj"] = [(503, {}, slow)]
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"did not answer after 4 tries \(last: 503 SlowDown") as info:
        transport().get(f"{http.url}/obj?X-Amz-Signature=secret", "obj")
    assert time.monotonic() - t0 < 2
    assert len(http.seen) == FAST.attempts
    assert "secret" not in str(info.value)


def test_forbidden_and_missing_are_not_retried(http: Scripted) -> None:
    denied = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    http.script["/expired"] = [(403, {}, denied)]
    with pytest.raises(UrlRefused, match="403 AccessDenied: Request has expired") as info:
        transport().get(f"{http.url}/expired?X-Amz-Signature=secret", "a/b.jpg")
    assert "secret" not in str(info.value)
    with pytest.raises(ObjectMissing, match=r"a/gone\.jpg: file not found"):
        transport().get(f"{http.url}/gone?sig=1", "a/gone.jpg")
    assert [p for _m, p, _h in http.seen] == ["/expired?X-Amz-Signature=secret", "/gone?sig=1"]


def test_size_cap_by_content_length_and_while_streaming(http: Scripted) -> None:
    big = b"x" * (3 << 20)
    http.objects["/big.jpg"] = big
    with pytest.raises(ObjectTooLarge, match=r"big.jpg is 3145728 bytes, over the worker's cap of 1048576 bytes"):
        transport().get(f"{http.url}/big.jpg", "big.jpg")
    http.script["/chunked.jpg"] = [(200, {"Transfer-Encoding": "chunked"}, big)]  # no Content-Length
    with pytest.raises(ObjectTooLarge, match=r"chunked.jpg is more bytes, over .*storage.max_object_bytes"):
        transport().get(f"{http.url}/chunked.jpg", "chunked.jpg")
    # a range of a file over the cap is fine (videos are read so)
    part = transport().get(f"{http.url}/big.jpg", "big.jpg", start=10, end=19)
    assert part.data == b"x" * 10 and part.total == len(big)


def test_every_request_has_a_timeout(http: Scripted) -> None:
    http.objects["/slow"] = b"late"
    http.stall.add("/slow")
    policy = StorePolicy(timeout=0.3, attempts=2, backoff=0.01, max_backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match=r"did not answer after 2 tries \(last: ReadTimeout talking to http"):
        StoreTransport(policy).get(f"{http.url}/slow?sig=secret", "slow")
    assert time.monotonic() - t0 < 3


def test_urls_are_logged_without_their_query(http: Scripted, caplog: pytest.LogCaptureFixture) -> None:
    http.script["/obj"] = [(503, {}, b""), (200, {}, b"ok")]
    caplog.set_level(logging.DEBUG)
    transport().get(f"{http.url}/obj?X-Amz-Signature=topsecret&X-Amz-Credential=AKIA", "obj")
    assert "topsecret" not in caplog.text and "AKIA" not in caplog.text
    assert redact("https://u:p@b.s3.amazonaws.com/k/x.jpg?X-Amz-Signature=s#f") == "https://b.s3.amazonaws.com/k/x.jpg"


def test_put_is_retried_with_the_whole_body(http: Scripted, tmp_path: Path) -> None:
    path = tmp_path / "pool.csv"
    path.write_bytes(b"filenames,embedding_0\n" * 1000)
    http.script["/up"] = [(503, {}, b""), (200, {}, b"")]
    transport().put(f"{http.url}/up?sig=1", ".lightly/datapool/pool.csv", path)
    puts = [h for m, _p, h in http.seen if m == "PUT"]
    assert len(puts) == 2 and all(h["Content-Length"] == str(path.stat().st_size) for h in puts)


# ---------------------------------------------------------------- the remote source over a contract API


class ContractApi:
    """The datasource endpoints of the bucket contract, served by the scripted server: a paged listing and
    fresh read URLs into the same server's /store/ paths (the test decides what the store answers)."""

    def __init__(self, http: Scripted, keys: list[str], page: int = 2) -> None:
        self.http, self.keys, self.page = http, keys, page
        self.read_urls = 0
        base = "/v1/datasets/ds1/datasource"
        http.script[f"{base}/list"] = []
        self.base = base

    def serve(self, query: str, path: str) -> Answer:
        q = {k: v[0] for k, v in parse_qs(query).items()}
        if path.endswith("/list"):
            start = int(q.get("cursor", "0"))
            size = self.page if "cursor" in q else int(q.get("pageSize", self.page))
            part = self.keys[start : start + size]
            more = start + size < len(self.keys)
            data = [{"fileName": k, "readUrl": f"{self.http.url}/store/{k}?sig=listed"} for k in part]
            body = {"hasMore": more, "cursor": str(start + size) if more else "", "data": data}
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        self.read_urls += 1
        return 200, {}, json.dumps(f"{self.http.url}/store/{q['fileName']}?sig=fresh{self.read_urls}").encode()


@pytest.fixture
def contract(http: Scripted) -> Iterator[ContractApi]:
    api = ContractApi(http, [])
    original = _Handler._answer

    def answer(self: _Handler) -> None:
        path = urlsplit(self.path)
        if path.path.startswith(api.base):
            status, headers, body = api.serve(path.query, path.path)
            with self.server.lock:
                self.server.seen.append((self.command, self.path, dict(self.headers)))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        original(self)

    _Handler.do_GET = answer  # type: ignore[method-assign]
    try:
        yield api
    finally:
        _Handler.do_GET = original  # type: ignore[method-assign]


def remote(http: Scripted, prefetch: int = 8) -> RemoteSource:
    api = DatasourceApi(http.url, "tok", "ds1", policy=FAST)
    source = {"type": "S3", "fullPath": "s3://bucket/in/"}
    return RemoteSource(api, source, transport=transport(), prefetch=prefetch, page_size=2)


def test_listing_is_paged_and_skips_unsafe_and_hidden_keys(
    http: Scripted, contract: ContractApi, caplog: pytest.LogCaptureFixture
) -> None:
    contract.keys = ["a b/ü.jpg", "../up.jpg", "/abs.jpg", "x\ny.jpg", ".lightly/x.csv", "d/.hidden.jpg", "z.jpg"]
    src = remote(http)
    with caplog.at_level(logging.WARNING):
        assert list(src.walk()) == ["a b/ü.jpg", "z.jpg"]
    assert "'../up.jpg' from the listing: a '..' part" in caplog.text
    assert "'/abs.jpg' from the listing: an absolute path" in caplog.text
    assert "control characters" in caplog.text
    pages = [p for _m, p, _h in http.seen if "/list" in p]
    assert len(pages) == 4 and "cursor=2" in pages[1] and "purpose=INPUT" not in pages[1]
    assert src.is_file("z.jpg") and not src.is_file("nope.jpg")


def test_expired_url_is_refreshed_once_then_refused(http: Scripted, contract: ContractApi) -> None:
    contract.keys = ["a.jpg", "b.jpg"]
    src = remote(http)
    list(src.walk())
    denied = (403, {}, b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>")
    http.script["/store/a.jpg"] = [denied, (200, {}, b"A")]
    assert src.read_bytes("a.jpg") == b"A"
    gets = [p for _m, p, _h in http.seen if p.startswith("/store/a.jpg")]
    assert gets == ["/store/a.jpg?sig=listed", "/store/a.jpg?sig=fresh1"]
    http.script["/store/b.jpg"] = [denied]
    with pytest.raises(StorageError, match=r"b\.jpg: the store refused the URL .* even with a fresh URL"):
        src.read_bytes("b.jpg")


def test_read_many_is_concurrent_and_in_order(http: Scripted, contract: ContractApi) -> None:
    keys = [f"{i:03d}.jpg" for i in range(24)]
    contract.keys = keys
    for k in keys:
        http.objects[f"/store/{k}"] = k.encode()
    http.objects.pop("/store/005.jpg")
    src = remote(http, prefetch=8)
    list(src.walk())
    http.delay, http.peak = 0.05, 0
    got = list(src.read_many(keys))
    assert isinstance(got[5], ObjectMissing)
    assert [g for i, g in enumerate(got) if i != 5] == [k.encode() for i, k in enumerate(keys) if i != 5]
    assert http.peak >= 4, f"at most {http.peak} reads were in flight"


def test_check_fails_with_the_servers_message(http: Scripted) -> None:
    http.script["/v1/datasets/ds1/datasource/list"] = [
        (
            400,
            {},
            json.dumps({"code": "DATASOURCE_ACCESS_DENIED", "error": "403 InvalidAccessKeyId for s3://b/in/"}).encode(),
        )
    ]
    with pytest.raises(
        SourceAccessError,
        match=r"INPUT datasource \(S3 datasource s3://bucket/in/\) cannot be listed: 400 403 InvalidAccessKeyId for s3://b/in/",
    ):
        remote(http).check()


# ---------------------------------------------------------------- range reader and unsafe keys


def test_range_file_reads_seeks_and_caches_within_its_bound() -> None:
    data = bytes(random.Random(3).randbytes(10_000))
    calls: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> tuple[bytes, int | None]:
        calls.append((a, b))
        return data[a : b + 1], len(data)

    f = RangeFile(fetch, block_size=1000, max_blocks=4, max_span=4)
    assert f.size == 10_000
    assert f.read(10) == data[:10]
    assert f.seek(-5, io.SEEK_END) == 9995 and f.read() == data[-5:]
    f.seek(2500)
    assert f.read(3000) == data[2500:5500]
    assert len(f._blocks) <= 4
    before = len(calls)
    f.seek(6000)
    assert f.read(500) == data[6000:6500] and len(calls) == before  # read ahead and cached
    f.seek(0)
    assert io.BufferedReader(f).read() == data  # type: ignore[arg-type]
    assert f.fetched < 3 * len(data)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("../x.jpg", "'..'"),
        ("a/../../x.jpg", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:/x.jpg", "absolute"),
        ("a\nb.jpg", "control"),
        ("a\x00b.jpg", "control"),
        ("a//b.jpg", "empty"),
        ("", "empty"),
    ],
)
def test_unsafe_keys(key: str, why: str) -> None:
    problem = key_problem(key)
    assert problem is not None and why in problem


def test_safe_keys() -> None:
    for key in ("a.jpg", "deep/er/prefix/ü ñ.png", "with space.jpg", "..dots.jpg", "a/b..c.jpg"):
        assert key_problem(key) is None, key


def test_a_bucket_video_is_decoded_from_ranged_reads(http: Scripted, contract: ContractApi, tmp_path: Path) -> None:
    """PyAV reads a video of the store through the range file: every request is a Range GET, frames come out
    as from the local file, and the cache never holds more than its bound."""
    pytest.importorskip("av", reason="PyAV (av) not installed")
    from lightly_worker.embed import list_samples
    from lightly_worker.embed.decode import load_video_frames
    from lightly_worker.embed.files import video_pts
    from test_embed import make_video

    make_video(tmp_path / "in" / "clip.mp4", 30)
    data = (tmp_path / "in" / "clip.mp4").read_bytes()
    contract.keys = ["clip.mp4"]
    http.objects["/store/clip.mp4"] = data
    src = remote(http)
    names = list_samples(src)
    assert len(names) == 30 and names[0] == "clip-00-mp4.png"
    assert video_pts(src, "clip.mp4") == video_pts(tmp_path / "in" / "clip.mp4")
    got = load_video_frames(src, "clip.mp4", [3, 17, 29], 32)
    want = load_video_frames(tmp_path / "in" / "clip.mp4", None, [3, 17, 29], 32)
    assert sorted(got) == [3, 17, 29] and all((got[f] == want[f]).all() for f in got)
    reads = [h for m, p, h in http.seen if m == "GET" and p.startswith("/store/clip.mp4")]
    assert reads and all(h.get("Range", "").startswith("bytes=") for h in reads)


def test_the_apis_throttling_and_outages_are_retried_bounded(http: Scripted) -> None:
    api = DatasourceApi(http.url, "tok", "ds1", policy=FAST)
    path = "/v1/datasets/ds1/datasource/readUrl"
    throttled = json.dumps({"code": "DATASOURCE_THROTTLED", "error": "503 SlowDown for s3://b/in/"}).encode()
    http.script[path] = [(429, {}, throttled), (502, {}, b""), (200, {}, json.dumps("http://store/x?sig=1").encode())]
    assert api.read_url("INPUT", "x.jpg") == "http://store/x?sig=1"
    http.script[path] = [(429, {}, throttled)]
    with pytest.raises(ApiRefused, match=r"not answering \(429 503 SlowDown for s3://b/in/\)") as info:
        api.read_url("INPUT", "x.jpg")
    assert "tok" not in str(info.value)
    http.script[path] = [(400, {}, json.dumps({"error": "fileName 'a/../b': no '..' parts"}).encode())]
    with pytest.raises(ApiRefused, match=re.escape("400 fileName 'a/../b'")):
        api.read_url("INPUT", "a/../b")


def test_a_shard_worker_resolves_names_without_a_request_per_image(http: Scripted, contract: ContractApi) -> None:
    """A shard worker has no listing of its own: images are taken to exist (a read reports them missing), and
    only a name that looks like a video frame costs one (cached) probe of the store."""
    from lightly_worker.embed.files import FrameRef, ImageRef, resolve_sample

    http.objects["/store/a.jpg"] = b"jpeg"
    http.objects["/store/clip.mp4"] = b"video"
    src = remote(http)
    assert resolve_sample(src, "a.jpg") == ImageRef("a.jpg", "a.jpg")
    assert resolve_sample(src, "gone.jpg") == ImageRef("gone.jpg", "gone.jpg")
    assert [p for _m, p, _h in http.seen] == []
    assert resolve_sample(src, "clip-03-mp4.png") == FrameRef("clip-03-mp4.png", "clip.mp4", 3)
    assert resolve_sample(src, "clip-03-mp4.png") == FrameRef("clip-03-mp4.png", "clip.mp4", 3)
    probes = [p for _m, p, _h in http.seen if p.startswith("/store/")]
    assert probes == ["/store/clip-03-mp4.png?sig=fresh1"]
