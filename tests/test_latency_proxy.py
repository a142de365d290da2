"""The benchmarks' latency proxy (lightly_devkit.latency_proxy) in front of a real HTTP server.

The upstream is the standard library's threading HTTP server on a loopback port: real sockets, real
HTTP/1.1 keep-alive, Content-Length and chunked bodies. With moto installed, boto3 talks to moto's S3
server through the proxy too (PUT with ``Expect: 100-continue``, GET, a presigned GET, a listing).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from lightly_devkit.latency_proxy import LatencyProxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_PUT(self) -> None:
        digest = hashlib.sha256(self._body()).hexdigest().encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(digest)))
        self.end_headers()
        self.wfile.write(digest)

    def do_GET(self) -> None:
        n = int(self.path.rsplit("/", 1)[1])
        if self.path.startswith("/chunked/"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, n, 1000):
                part = bytes([i % 251]) * min(1000, n - i)
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.write(b"x" * n)

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


@pytest.fixture
def upstream() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()
    server.server_close()


def test_requests_on_one_connection_each_wait_the_delay_and_are_counted(upstream: tuple[str, int]) -> None:
    with LatencyProxy(upstream, delay_s=0.05) as proxy, httpx.Client(base_url=proxy.url, trust_env=False) as c:
        started = time.monotonic()
        for _ in range(3):
            assert c.get("/plain/10").content == b"x" * 10
        assert time.monotonic() - started >= 0.15  # each of the three waited its 50 ms
        assert c.head("/plain/0").headers["content-length"] == "12345"  # no body after a HEAD
        body = os.urandom(300_000)
        assert c.put("/up", content=body).text == hashlib.sha256(body).hexdigest()
        stats = proxy.reset()
    assert (stats.requests, stats.connections) == (5, 1)  # keep-alive: one upstream connection
    assert stats.methods == {"GET": 3, "HEAD": 1, "PUT": 1}
    assert stats.request_bytes > 300_000 and stats.response_bytes > 30
    assert proxy.stats.requests == 0  # reset starts a new window


def test_chunked_bodies_stream_both_ways(upstream: tuple[str, int]) -> None:
    with LatencyProxy(upstream, delay_s=0) as proxy, httpx.Client(base_url=proxy.url, trust_env=False) as c:
        r = c.get("/chunked/2500001")
        assert len(r.content) == 2500001 and r.content[1000:1001] == bytes([1000 % 251])
        parts = [os.urandom(70_000) for _ in range(5)]
        r = c.put("/up", content=iter(parts))  # an iterator: httpx sends it chunked
        assert r.text == hashlib.sha256(b"".join(parts)).hexdigest()


def test_expect_100_continue_is_answered_by_the_proxy(upstream: tuple[str, int]) -> None:
    with LatencyProxy(upstream, delay_s=0.01) as proxy, socket.create_connection(("127.0.0.1", proxy.port), 10) as s:
        s.sendall(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(b"hello")
        reply = b""
        while not reply.endswith(hashlib.sha256(b"hello").hexdigest().encode()):
            data = s.recv(4096)
            assert data, reply
            reply += data
        assert reply.startswith(b"HTTP/1.1 200")


def test_concurrent_requests_wait_in_parallel_not_in_a_queue(upstream: tuple[str, int]) -> None:
    with LatencyProxy(upstream, delay_s=0.2) as proxy:
        results: list[int] = []

        def one() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            conn.request("GET", "/plain/3")
            results.append(conn.getresponse().status)
            conn.close()

        threads = [threading.Thread(target=one) for _ in range(10)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - started
        assert results == [200] * 10
        # 10 requests x 200 ms in a queue would take 2 s; in parallel each waits its own 200 ms
        assert 0.2 <= elapsed < 1.5, elapsed
        assert proxy.stats.connections == 10


def test_a_server_that_is_gone_closes_the_clients_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with LatencyProxy(("127.0.0.1", port), delay_s=0) as proxy, httpx.Client(trust_env=False, timeout=10) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(proxy.url + "/plain/1")
        assert proxy.stats.requests == 0


def test_a_head_over_the_limit_closes_the_connection(upstream: tuple[str, int]) -> None:
    with LatencyProxy(upstream, delay_s=0) as proxy, httpx.Client(trust_env=False, timeout=10) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.get(proxy.url + "/plain/1", headers={"x-big": "a" * 70_000})
        assert c.get(proxy.url + "/plain/1").status_code == 200  # the proxy still serves others


def test_boto3_through_the_proxy_to_moto_s3() -> None:
    try:
        import boto3
        from moto import server as moto_server
    except ImportError as exc:
        reason = f"moto[server] and boto3 are not installed (the [test] extra): {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with LatencyProxy((host, port), delay_s=0.02) as proxy:
            s3 = boto3.client(
                "s3",
                endpoint_url=proxy.url,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                region_name="us-east-1",
            )
            s3.create_bucket(Bucket="bucket-1")
            body = os.urandom(1_000_000)
            s3.put_object(Bucket="bucket-1", Key="dir/a b.bin", Body=body)
            assert s3.get_object(Bucket="bucket-1", Key="dir/a b.bin")["Body"].read() == body
            url = s3.generate_presigned_url(
                "get_object", Params={"Bucket": "bucket-1", "Key": "dir/a b.bin"}, ExpiresIn=60
            )
            r = httpx.get(url, trust_env=False, headers={"Range": "bytes=10-19"}, timeout=10)
            assert r.status_code == 206 and r.content == body[10:20]
            keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bucket-1")["Contents"]]
            assert keys == ["dir/a b.bin"]
            assert proxy.stats.requests == 5 and proxy.stats.methods["GET"] == 3
    finally:
        server.stop()
