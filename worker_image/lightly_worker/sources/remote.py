"""A bucket datasource (S3, S3DelegatedAccess, GCS, AZURE, OBS), listed through our API and read through
presigned URLs the API hands out; the worker never sees the store's credentials.

``DatasourceApi`` is the API side (``GET .../datasource/list`` paged by cursor, ``.../readUrl`` and
``.../writeUrl``, the contract in docs/worker.md); ``RemoteSource`` is an ``InputSource`` over it:

* ``walk`` pages through the listing (``pageSize`` names at a time: memory bounded by one page plus
  the names the job keeps), skipping hidden keys (any part starting with '.') and unsafe keys (``..``,
  absolute, control characters) with the reason;
* reads use the listing's URL while it is young (``url_max_age``), else a fresh one from ``readUrl``;
  a 403 (expired or refused) fetches a fresh URL and tries once more; throttling and 5xx are retried
  by the transport (``store_http``); a 404 is ``ObjectMissing``;
* ``read_many`` fetches a batch's files concurrently on a thread pool (``io_concurrency`` threads):
  with the DataLoader's prefetch this keeps enough requests in flight to hide the store's latency;
* ``open_seekable`` gives a ``RangeFile`` (ranged reads, a block cache): a video is never read whole.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx
from lightly_protocol import paths
from lightly_protocol.client import ClientCore, error_detail

from .base import FRAME_NAME, ObjectMissing, SourceAccessError, StorageError, key_problem
from .rangefile import RangeFile
from .spill import Spill
from .store_http import StorePolicy, StoreTransport, UrlRefused

__all__ = ["ApiRefused", "DatasourceApi", "ListedFile", "RemoteSource", "datasource_label"]

LOG = logging.getLogger("lightly_worker.embed")
log = logging.getLogger("lightly_worker.storage")


class ApiRefused(Exception):
    """Our API answered 4xx (or did not answer after the retries) to a datasource call; ``message`` is its own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ListedFile:
    name: str
    read_url: str | None


def datasource_label(ds: dict[str, Any]) -> str:
    """``S3 datasource s3://bucket/prefix/`` (type and fullPath; never credentials)."""
    kind = str(ds.get("type", "?"))
    return f"{kind} datasource {ds.get('fullPath', '')}".rstrip()


class DatasourceApi(ClientCore):
    """The datasource calls of our API for one dataset (one httpx client per process)."""

    def __init__(
        self,
        url: str,
        token: str,
        dataset_id: str,
        *,
        verify: Any = True,
        timeout: float = 60.0,
        policy: StorePolicy | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__(url, token)
        self.dataset_id = dataset_id
        self.verify = verify
        self.timeout = timeout
        self.policy = policy or StorePolicy()
        self.stop = stop
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
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
                self._client = httpx.Client(timeout=self.timeout, verify=self.verify)
                self._pid = os.getpid()
            return self._client

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        """GET with the API's retries (5xx, 429, no answer: bounded backoff); other 4xx raise ``ApiRefused`` at once."""
        attempt = 0
        while True:
            try:
                r = self.client.get(self.url_of(path), params=self.query(params))
                if r.status_code < 500 and r.status_code != 429:  # 429: the store throttles the server's listing
                    if r.status_code >= 400:
                        raise ApiRefused(r.status_code, f"{r.status_code} {error_detail(r.text, limit=500)}")
                    return r.json()
                problem = f"{r.status_code} {error_detail(r.text, limit=200)}"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}"
            attempt += 1
            if attempt >= self.policy.attempts or (self.stop is not None and self.stop.is_set()):
                raise ApiRefused(503, f"the API at {self.url} is not answering ({problem})")
            delay = self.policy.delay(attempt - 1)
            log.warning("API at %s: %s; retrying in %.1f s", self.url, problem, delay)
            time.sleep(delay)

    def list_page(
        self,
        purpose: str,
        *,
        prefix: str | None = None,
        cursor: str | None = None,
        page_size: int = 1000,
        window: tuple[int, int] | None = None,
    ) -> tuple[list[ListedFile], str | None]:
        """One page of the listing and the cursor of the next (None: that was the last); ``window``: only
        files last modified in ``[from, to]`` (unix seconds, Lightly's ``from``/``to``)."""
        params: dict[str, Any] = {"cursor": cursor} if cursor else {"purpose": purpose, "pageSize": page_size}
        if prefix and not cursor:  # the cursor carries the purpose, prefix and page size of the first call
            params["prefix"] = prefix
        if window is not None and not cursor:
            params["from"], params["to"] = window
        body = self._get(paths.datasource_list(self.dataset_id), params)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise ApiRefused(502, "the datasource listing is not {hasMore, cursor, data}")
        files = [
            ListedFile(str(x["fileName"]), x.get("readUrl") or None)
            for x in body["data"]
            if isinstance(x, dict) and isinstance(x.get("fileName"), str)
        ]
        more = bool(body.get("hasMore")) and bool(body.get("cursor"))
        return files, (str(body["cursor"]) if more else None)

    def list_all(
        self,
        purpose: str,
        *,
        prefix: str | None = None,
        page_size: int = 1000,
        window: tuple[int, int] | None = None,
    ) -> Iterator[ListedFile]:
        cursor: str | None = None
        while True:
            files, cursor = self.list_page(purpose, prefix=prefix, cursor=cursor, page_size=page_size, window=window)
            yield from files
            if cursor is None:
                return

    def read_url(self, purpose: str, key: str) -> str:
        url = self._get(paths.datasource_read_url(self.dataset_id), {"purpose": purpose, "fileName": key})
        if not isinstance(url, str) or not url:
            raise ApiRefused(502, f"readUrl of {key}: not a URL")
        return url

    def write_url(self, key: str) -> str:
        url = self._get(paths.datasource_write_url(self.dataset_id), {"fileName": key})
        if not isinstance(url, str) or not url:
            raise ApiRefused(502, f"writeUrl of {key}: not a URL")
        return url


def hidden(key: str) -> bool:
    """Whether a part of the key starts with '.' (``.lightly/``, dot files): skipped like in a local folder."""
    return any(part.startswith(".") for part in key.split("/"))


class RemoteSource:
    """An INPUT (or LIGHTLY) datasource in a bucket, read through the API's presigned URLs."""

    def __init__(
        self,
        api: DatasourceApi,
        datasource: dict[str, Any],
        *,
        purpose: str = "INPUT",
        transport: StoreTransport | None = None,
        prefetch: int = 16,
        page_size: int = 1000,
        url_max_age: float = 300.0,
        url_cache_entries: int = 100_000,
        spill: Spill | None = None,
        log: logging.Logger = LOG,
    ) -> None:
        self.api = api
        self.purpose = purpose
        self.label = datasource_label(datasource)
        self.transport = transport or StoreTransport(api.policy, verify=api.verify)
        self.io_concurrency = max(1, prefetch)
        self.page_size = page_size
        self.url_max_age = url_max_age
        self.url_cache_entries = url_cache_entries
        self.spill = spill  # whole files read once, for their next read (the check's, for the embedding)
        self.log = log
        self._urls: dict[str, tuple[str, float]] = {}  # key -> (listed URL, when), bounded
        self._listed: set[str] | None = None  # every listed key once walk() finished
        self._probed: dict[str, bool] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemoteSource({self.label})"

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawned) rebuild their pool
        state = dict(self.__dict__)
        state.update(_pool=None, _pool_pid=0, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ listing

    def check(self) -> None:
        """List one key and read one byte of it: a datasource that cannot be listed or read fails the run now."""
        try:
            files, _ = self.api.list_page(self.purpose, page_size=1)
        except ApiRefused as exc:
            raise SourceAccessError(f"the {self.purpose} datasource ({self.label}) cannot be listed: {exc}") from None
        for f in files:
            if key_problem(f.name) is None:
                try:
                    self.read_range(f.name, 0, 0, url=f.read_url)
                except ObjectMissing:
                    pass  # deleted since: the run lists again and goes on
                except (StorageError, ApiRefused) as exc:
                    raise SourceAccessError(
                        f"the {self.purpose} datasource ({self.label}) cannot be read: {exc}"
                    ) from None

    def walk(self, log: logging.Logger | None = None, modified: tuple[int, int] | None = None) -> Iterator[str]:
        log = log or self.log
        listed: set[str] = set()
        skipped = 0
        window = None if modified is None else (modified[0] + 1, modified[1])
        try:
            for f in self.api.list_all(self.purpose, page_size=self.page_size, window=window):
                problem = key_problem(f.name)
                if problem is not None:
                    skipped += 1
                    log.warning("skipping %r from the listing: %s", f.name, problem)
                    continue
                if hidden(f.name):
                    continue
                listed.add(f.name)
                if f.read_url and len(self._urls) < self.url_cache_entries:
                    self._urls[f.name] = (f.read_url, time.monotonic())
                yield f.name
        except ApiRefused as exc:
            raise SourceAccessError(f"the {self.purpose} datasource ({self.label}) cannot be listed: {exc}") from None
        if skipped:
            log.warning("%d listed name(s) skipped as unsafe", skipped)
        self._listed = listed

    def is_file(self, key: str) -> bool:
        """Whether the key is a file. Without a listing in this process (a shard worker gets its names from the
        coordinator's listing) a name is taken to exist (a read reports it missing) unless it looks like a
        video frame's name: then the store is asked (cached), so a frame is told from an image of that name."""
        if self._listed is not None:
            return key in self._listed
        if not FRAME_NAME.match(key.rsplit("/", 1)[-1]):
            return True
        if key not in self._probed:
            try:
                self.read_range(key, 0, 0)
                self._probed[key] = True
            except ObjectMissing:
                self._probed[key] = False
            except (StorageError, ApiRefused):
                return True  # unknown: a read reports what is wrong
        return self._probed[key]

    # ------------------------------------------------------------ reads

    def _url(self, key: str, fresh: bool = False) -> str:
        if not fresh:
            cached = self._urls.get(key)
            if cached is not None and time.monotonic() - cached[1] < self.url_max_age:
                return cached[0]
        try:
            url = self.api.read_url(self.purpose, key)
        except ApiRefused as exc:
            if exc.status == 404:
                raise ObjectMissing(f"{key}: file not found ({exc})") from None
            raise StorageError(f"{key}: no read URL from the API ({exc})") from None
        self._urls.pop(key, None)
        return url

    def _with_url(self, key: str, read: Any, url: str | None = None) -> Any:
        """``read(url)`` with a fresh URL once more when the store refuses the first (403: expired)."""
        try:
            return read(url or self._url(key))
        except UrlRefused:
            log.info("%s: the store refused the read URL; fetching a fresh one", key)
        try:
            return read(self._url(key, fresh=True))
        except UrlRefused as exc:
            raise StorageError(f"{exc} even with a fresh URL") from None

    def read_bytes(self, key: str) -> bytes:
        if self.spill is not None and (kept := self.spill.get(key)) is not None:
            return kept
        data: bytes = self._with_url(key, lambda url: self.transport.get(url, key).data)
        if self.spill is not None:
            self.spill.put(key, data)
        return data

    def read_range(self, key: str, start: int, end: int, *, url: str | None = None) -> tuple[bytes, int | None]:
        fetched = self._with_url(key, lambda u: self.transport.get(u, key, start=start, end=end), url)
        return fetched.data, fetched.total

    def _read_or_error(self, key: str) -> bytes | OSError:
        try:
            return self.read_bytes(key)
        except OSError as exc:
            return exc

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                self._pool = ThreadPoolExecutor(self.io_concurrency, thread_name_prefix="prefetch")
                self._pool_pid = os.getpid()
            return self._pool

    def read_many(self, keys: list[str]) -> Iterator[bytes | OSError]:
        if len(keys) <= 1:
            yield from (self._read_or_error(k) for k in keys)
            return
        yield from self.pool().map(self._read_or_error, keys)

    @contextmanager
    def _range_file(self, key: str) -> Iterator[IO[bytes]]:
        rf = RangeFile(lambda a, b: self.read_range(key, a, b), name=key)
        try:
            yield rf  # type: ignore[misc]  # a RawIOBase is a binary file for PyAV
        finally:
            rf.close()

    def open_seekable(self, key: str) -> AbstractContextManager[str | IO[bytes]]:
        return self._range_file(key)

    def fingerprint(self, key: str) -> tuple[str, int, int]:
        return f"{self.label}/{key}", 0, 0
