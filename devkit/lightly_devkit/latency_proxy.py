"""An HTTP/1.1 proxy that adds a fixed delay to every request before forwarding it, and counts what it forwards.

Put it in front of a real server (moto's S3 server in the benchmarks) to measure what a client does when every
request pays ``delay`` of extra round-trip time, the way a store in another region or another cloud would
answer. It is a reverse proxy: clients connect to it as if it were the server (presigned URLs signed for the
proxy's address stay valid: the bytes, the ``Host`` header included, are forwarded unchanged), and it keeps one
upstream connection per client connection, so keep-alive and concurrency behave as with the server itself.

Bodies are streamed in both directions (``Content-Length``, ``chunked``, or until the server closes), never held
whole. A request with ``Expect: 100-continue`` is answered ``100 Continue`` by the proxy itself (after the
delay) and forwarded without that header, so the client sends its body at once.

``stats`` counts requests, bytes in each direction (heads included) and requests per method; ``reset`` starts
a new window. Every read from either side has a timeout (``idle_timeout``), and so has the upstream connect.

    python -m lightly_devkit.latency_proxy --target 127.0.0.1:5000 --delay-ms 20 --listen 127.0.0.1:5020

In-process (tests, benchmarks): ``LatencyProxy(("127.0.0.1", 5000), delay_s=0.02).start()`` runs it on a
background thread; ``stop()`` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["LatencyProxy", "ProxyStats"]

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
HOP_EXPECT = b"expect"


@dataclass
class ProxyStats:
    """What went through the proxy since the last ``reset``."""

    requests: int = 0
    request_bytes: int = 0  # client -> server, heads and bodies
    response_bytes: int = 0  # server -> client, heads and bodies
    connections: int = 0
    methods: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
            "connections": self.connections,
            "methods": dict(self.methods),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


class ProxyError(Exception):
    """A message that cannot be forwarded (bad framing, a head over ``MAX_HEAD``, a server that went away)."""


@dataclass
class _Head:
    raw: bytes
    first: list[bytes]  # request line or status line, split in at most three parts
    headers: list[tuple[bytes, bytes]]  # (lower-case name, value)

    def get(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def without(self, name: bytes) -> bytes:
        lines = self.raw.split(b"\r\n")
        kept = [lines[0]] + [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() != name]
        return b"\r\n".join(kept)


def _parse_head(raw: bytes) -> _Head:
    lines = raw[:-4].split(b"\r\n")
    first = lines[0].split(b" ", 2)
    if len(first) < 2:
        raise ProxyError(f"malformed first line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProxyError(f"malformed header line {line[:80]!r}")
        headers.append((name.strip().lower(), value.strip()))
    return _Head(raw, first, headers)


class LatencyProxy:
    """Forwards HTTP/1.1 to ``target``, ``delay_s`` after each request's head has arrived."""

    def __init__(
        self,
        target: tuple[str, int],
        delay_s: float,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 600.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.target = target
        self.delay_s = delay_s
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> ProxyStats:
        """The counts so far; counting starts again from zero."""
        with self._lock:
            old, self.stats = self.stats, ProxyStats()
        return old

    # ------------------------------------------------------------------ running

    async def serve(self) -> asyncio.Server:
        """Listen (in the running loop); ``self.port`` is the bound port afterwards."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self._server

    def start(self) -> LatencyProxy:
        """Run on a daemon thread with its own event loop; returns once it listens."""
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:  # handed to the starting thread
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="latency-proxy")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the latency proxy did not start within 30 s")
        if failed:
            raise failed[0]
        return self

    def stop(self) -> None:
        """Stop listening and close every forwarded connection (thread started by ``start``)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not loop.is_running():
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        thread.join(30)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ forwarding

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.stats.connections += 1
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                head = await self._read_head(creader)
                if head is None:
                    return
                await asyncio.sleep(self.delay_s)
                if upstream is None:
                    upstream = await asyncio.wait_for(
                        asyncio.open_connection(*self.target, limit=MAX_HEAD), self.connect_timeout
                    )
                keep = await self._exchange(head, creader, cwriter, *upstream)
                if not keep:
                    return
        except (ProxyError, OSError, TimeoutError, asyncio.IncompleteReadError):
            return  # the connection goes; the client sees it closed, as with a server that went away
        finally:
            self._tasks.discard(task)
            for w in (cwriter, upstream[1] if upstream else None):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _exchange(
        self,
        req: _Head,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
        ureader: asyncio.StreamReader,
        uwriter: asyncio.StreamWriter,
    ) -> bool:
        """One request and its response; whether the connection may carry another."""
        method = req.first[0].decode("ascii", "replace")
        raw = req.raw
        if (req.get(HOP_EXPECT) or b"").lower() == b"100-continue":
            raw = req.without(HOP_EXPECT)
            cwriter.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        uwriter.write(raw)
        sent = len(req.raw) + await self._copy_body(creader, uwriter, _request_framing(req))
        await uwriter.drain()
        received = 0
        while True:
            resp = await self._read_head(ureader)
            if resp is None:
                raise ProxyError("the server closed the connection before answering")
            try:
                status = int(resp.first[1])
            except ValueError:
                raise ProxyError(f"malformed status line {resp.raw[:80]!r}") from None
            cwriter.write(resp.raw)
            received += len(resp.raw)
            if 100 <= status < 200:
                continue  # an interim response; the final one follows
            framing = _response_framing(method, status, resp)
            received += await self._copy_body(ureader, cwriter, framing)
            await cwriter.drain()
            break
        with self._lock:
            self.stats.requests += 1
            self.stats.request_bytes += sent
            self.stats.response_bytes += received
            self.stats.methods[method] += 1
            self.stats.statuses[status] += 1
        closing = any((h.get(b"connection") or b"").lower() == b"close" for h in (req, resp))
        return framing != "eof" and not closing and req.first[-1].strip() != b"HTTP/1.0"

    async def _read_head(self, reader: asyncio.StreamReader) -> _Head | None:
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # a clean end between messages
            raise ProxyError("the connection ended inside a message head") from None
        except asyncio.LimitOverrunError:
            raise ProxyError(f"a message head over {MAX_HEAD} bytes") from None
        return _parse_head(raw)

    async def _read(self, reader: asyncio.StreamReader, n: int) -> bytes:
        return await asyncio.wait_for(reader.read(n), self.idle_timeout)

    async def _copy_body(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, framing: str | int) -> int:
        """Copy one body framed as ``framing`` (a length, ``"chunked"`` or ``"eof"``); bytes copied."""
        copied = 0
        if framing == "chunked":
            while True:
                line = await asyncio.wait_for(src.readuntil(b"\r\n"), self.idle_timeout)
                dst.write(line)
                copied += len(line)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ProxyError(f"malformed chunk size {line[:40]!r}") from None
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = await asyncio.wait_for(src.readuntil(b"\r\n"), self.idle_timeout)
                        dst.write(trailer)
                        copied += len(trailer)
                        if trailer == b"\r\n":
                            return copied
                copied += await self._copy_exactly(src, dst, size + 2)
        if framing == "eof":
            while data := await self._read(src, CHUNK):
                dst.write(data)
                copied += len(data)
                await dst.drain()
            return copied
        assert isinstance(framing, int)
        return await self._copy_exactly(src, dst, framing)

    async def _copy_exactly(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, n: int) -> int:
        left = n
        while left:
            data = await self._read(src, min(CHUNK, left))
            if not data:
                raise ProxyError(f"the body ended {left} bytes early")
            dst.write(data)
            left -= len(data)
            await dst.drain()
        return n


def _length(head: _Head) -> int:
    value = head.get(b"content-length")
    if value is None:
        return 0
    try:
        n = int(value)
    except ValueError:
        raise ProxyError(f"malformed Content-Length {value[:40]!r}") from None
    if n < 0:
        raise ProxyError("negative Content-Length")
    return n


def _is_chunked(head: _Head) -> bool:
    return b"chunked" in (head.get(b"transfer-encoding") or b"").lower()


def _request_framing(head: _Head) -> str | int:
    return "chunked" if _is_chunked(head) else _length(head)


def _response_framing(method: str, status: int, head: _Head) -> str | int:
    if method == "HEAD" or status in (204, 304):
        return 0
    if _is_chunked(head):
        return "chunked"
    if head.get(b"content-length") is not None:
        return _length(head)
    return "eof"


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=_address, required=True, help="HOST:PORT of the server to forward to")
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 0), help="HOST:PORT (default: a free port)")
    p.add_argument("--delay-ms", type=float, default=20.0, help="added before each request is forwarded")
    args = p.parse_args(argv)
    proxy = LatencyProxy(args.target, args.delay_ms / 1000, *args.listen)

    async def run() -> None:
        server = await proxy.serve()
        print(f"listening on {proxy.url} -> {args.target[0]}:{args.target[1]}, +{args.delay_ms:g} ms", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        print(json.dumps(proxy.stats.as_dict()), file=sys.stderr)

    asyncio.run(run())


if __name__ == "__main__":
    main()
