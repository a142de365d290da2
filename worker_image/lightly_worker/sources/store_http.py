"""Reads and writes of a store's presigned URLs: timeouts, bounded retries with backoff and jitter, a size cap.

A presigned URL carries its signature in the query string, so a URL is never logged or put in a message:
``redact`` keeps scheme, host and path. The policy:

* 429, 500, 502, 503 (S3's SlowDown), 504 and transport errors (timeouts, resets) are retried up to
  ``attempts`` tries, waiting a random time in [0, min(max_backoff, backoff * 2**n)] ("full jitter";
  a ``Retry-After`` header raises the wait to its value, still within ``max_backoff``);
* 403 raises ``UrlRefused``: the URL expired or is refused; the caller fetches a fresh one and tries once more;
* 404 raises ``ObjectMissing``; any other answer >= 400 a ``StorageError`` with the store's own code and message;
* a body over the cap raises ``ObjectTooLarge`` before it is read (Content-Length) or as soon as it
  passes the cap (streamed), so a 5 GB object never sits in memory.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from .base import ObjectMissing, ObjectTooLarge, StorageError, too_large

__all__ = ["RETRIED_STATUSES", "Fetched", "StorePolicy", "StoreTransport", "UrlRefused", "redact", "store_message"]

logging.getLogger("httpx").setLevel(logging.WARNING)  # it would log URLs with their signatures
logging.getLogger("httpcore").setLevel(logging.WARNING)
log = logging.getLogger("lightly_worker.storage")

#: answers that mean "try again later" (S3's 503 SlowDown, GCS's and Azure's 429/503)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class UrlRefused(StorageError):
    """403 on a presigned URL: it expired, or the store refuses it (the caller refreshes it once)."""


@dataclass(frozen=True)
class StorePolicy:
    """Timeouts, retries and the size cap of the store's reads (the worker's ``storage.*`` settings)."""

    timeout: float = 30.0  # seconds per request (connect, and each read of the body)
    attempts: int = 6  # tries of one request on throttling, 5xx and transport errors
    backoff: float = 0.25  # the first retry waits up to this (doubling per try)
    max_backoff: float = 15.0  # no wait is longer
    max_object_bytes: int = 512 * 1024**2  # a file read whole is refused above this

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """The wait before try ``attempt + 1`` (``attempt`` >= 0 failed tries so far): full jitter, bounded."""
        ceiling = min(self.max_backoff, self.backoff * (2**attempt))
        wait = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(self.max_backoff, retry_after))
        return wait


@dataclass(frozen=True)
class Fetched:
    data: bytes
    total: int | None  # the object's whole size where the answer says it (Content-Range / Content-Length)


def redact(url: str) -> str:
    """``url`` without its query string and fragment (where a presigned URL keeps its signature)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"


_XML_FIELD = re.compile(r"<(Code|Message)>([^<]{0,300})</\1>")


def store_message(status: int, body: bytes | str) -> str:
    """``403 AccessDenied: Access Denied`` from an S3/GCS/Azure XML error body (else its first 200 characters)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    fields = dict(_XML_FIELD.findall(text))
    if fields:
        return f"{status} {fields.get('Code', '')}: {fields.get('Message', '')}".strip().rstrip(":")
    text = " ".join(text.split())[:200]
    return f"{status} {text}".strip()


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _total(response: httpx.Response) -> int | None:
    content_range = response.headers.get("content-range", "")
    if "/" in content_range:
        tail = content_range.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    if response.status_code == 200 and response.headers.get("content-length", "").isdigit():
        return int(response.headers["content-length"])
    return None


class StoreTransport:
    """The HTTP client of the store's presigned URLs (one per process: it is rebuilt after a fork)."""

    def __init__(
        self,
        policy: StorePolicy | None = None,
        *,
        verify: Any = True,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.policy = policy or StorePolicy()
        self.verify = verify
        self.stop = stop
        self.rng = rng or random.Random()
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # a DataLoader worker builds its own client
        state = dict(self.__dict__)
        state.update(_client=None, _pid=0, _lock=None, stop=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                self._client = httpx.Client(timeout=self.policy.timeout, verify=self.verify, limits=limits)
                self._pid = os.getpid()
            return self._client

    def _wait(self, attempt: int, retry_after: float | None, what: str, problem: str) -> None:
        delay = self.policy.delay(attempt, retry_after, self.rng)
        log.info("%s: %s; retrying in %.2f s (try %d of %d)", what, problem, delay, attempt + 2, self.policy.attempts)
        if self.stop is not None:
            if self.stop.wait(delay):
                raise StorageError(f"{what}: stopped while the store was not answering ({problem})")
        else:
            time.sleep(delay)

    @contextmanager
    def _request(
        self, method: str, url: str, key: str, body: Callable[[], Any] | None = None, **kw: Any
    ) -> Iterator[httpx.Response]:
        """A streamed answer < 400 after the retries; raises the errors of the module's policy. ``body``
        makes the request's content anew for each try."""
        what = f"{method} {key}"
        attempt = 0
        while True:
            problem: str
            retry_after: float | None = None
            try:
                content = body() if body is not None else None
                with self.client.stream(method, url, content=content, **kw) as response:
                    status = response.status_code
                    if status < 400:
                        yield response
                        return
                    error_body = response.read()[:4096] if status != 404 else b""
                    message = store_message(status, error_body)
                    if status == 403:
                        raise UrlRefused(f"{key}: the store refused the URL ({message})")
                    if status == 404:
                        raise ObjectMissing(f"{key}: file not found (deleted after it was listed?)")
                    if status not in RETRIED_STATUSES:
                        raise StorageError(f"{key}: the store answered {message} ({redact(url)})")
                    problem, retry_after = message, _retry_after(response.headers)
            except httpx.TransportError as exc:  # timeouts, resets, refused connections: never the URL
                problem = f"{type(exc).__name__} talking to {redact(url)}"
            attempt += 1
            if attempt >= self.policy.attempts:
                raise StorageError(f"{what}: the store did not answer after {attempt} tries (last: {problem})")
            self._wait(attempt - 1, retry_after, what, problem)

    def get(self, url: str, key: str, *, start: int | None = None, end: int | None = None) -> Fetched:
        """The object (capped), or bytes ``start``..``end`` inclusive of it (a Range read)."""
        cap = self.policy.max_object_bytes
        headers = {}
        if start is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        want = None if start is None or end is None else end - start + 1
        with self._request("GET", url, key, headers=headers) as response:
            total = _total(response)
            skip = 0
            if start is not None and response.status_code == 200:
                skip = start  # the store ignored the Range header: skip to it (and stop at its end)
            if want is None and start is None:
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > cap:
                    raise ObjectTooLarge(too_large(key, int(length), cap))
            buf = bytearray()
            for chunk in response.iter_bytes(1 << 16):
                if skip:
                    cut = min(skip, len(chunk))
                    chunk, skip = chunk[cut:], skip - cut
                buf += chunk
                if want is not None and len(buf) >= want:
                    del buf[want:]
                    break
                if want is None and len(buf) > cap:
                    raise ObjectTooLarge(too_large(key, total, cap))
        return Fetched(bytes(buf), total)

    def put(self, url: str, key: str, path: Path, headers: dict[str, str] | None = None) -> None:
        """Upload the file at ``path`` to a presigned PUT URL (retried like the reads; 403 raises UrlRefused);
        ``headers``: what the store needs beside the signature (Azure: ``x-ms-blob-type``)."""
        size = path.stat().st_size
        timeout = httpx.Timeout(self.policy.timeout, write=max(self.policy.timeout, size / 2e6))
        with path.open("rb") as fh:

            def body() -> Iterator[bytes]:  # the file from its start: each try sends it again
                fh.seek(0)
                while chunk := fh.read(1 << 20):
                    yield chunk

            sent = {**(headers or {}), "Content-Length": str(size), "Content-Type": "application/octet-stream"}
            with self._request("PUT", url, key, body=body, headers=sent, timeout=timeout):
                pass
