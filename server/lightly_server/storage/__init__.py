"""Bucket datasources (S3, S3DelegatedAccess, OBS, GCS, AZURE): one small interface over the providers' SDKs.

``open_bucket(config, settings)`` gives the ``Bucket`` (``base.py``) of an opened datasource config (its
credentials in plain text: the caller opened the sealed ones with ``crypto.open_datasource``; they never
leave the process). A bucket lists pages, heads, reads, writes and signs URLs; every call has a timeout;
errors are ``StoreError``, which ``api_error`` turns into the answer (4xx, the provider's own message, the
datasource named, never the keys). ``listing.py`` pages listings through opaque cursors with bounded
memory, ``verify.py`` checks access. Why these SDKs: docs/server.md, "Bucket datasources".
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .base import Bucket, ObjectInfo, Page
from .errors import StoreError, api_error
from .keys import LIGHTLY_FOLDER, SCHEMES, Location, parse_location, relative_key_problem, shown
from .listing import ListState, PageResult, decode_cursor, encode_cursor, list_page
from .verify import check_readable, verify

__all__ = [
    "BUCKET_TYPES",
    "LIGHTLY_FOLDER",
    "Bucket",
    "BucketSettings",
    "ListState",
    "Location",
    "ObjectInfo",
    "Page",
    "PageResult",
    "StoreError",
    "api_error",
    "check_readable",
    "decode_cursor",
    "encode_cursor",
    "list_page",
    "open_bucket",
    "parse_location",
    "relative_key_problem",
    "shown",
    "verify",
]

#: the datasource types whose files live in a bucket
BUCKET_TYPES = frozenset(SCHEMES)
_CACHE_SIZE = 128


@dataclass(frozen=True)
class BucketSettings:
    """What the server's settings say about stores (``ServerSettings``)."""

    timeout_s: float = 10.0
    gcs_endpoint: str | None = None
    azure_endpoint: str | None = None


class _Clients:
    """Buckets by config, so a listing's pages reuse one client (SDK clients are thread-safe and costly to
    build); bounded, least recently used out first. Keys are digests; the configs stay in memory only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Bucket] = OrderedDict()

    def get(self, config: dict[str, Any], settings: BucketSettings) -> Bucket:
        digest = hashlib.sha256(
            json.dumps([config, settings.__dict__], sort_keys=True, default=str).encode()
        ).hexdigest()
        with self._lock:
            hit = self._items.get(digest)
            if hit is not None:
                self._items.move_to_end(digest)
                return hit
        bucket = _build(config, settings)
        with self._lock:
            self._items[digest] = bucket
            while len(self._items) > _CACHE_SIZE:
                self._items.popitem(last=False)
        return bucket


_clients = _Clients()


def open_bucket(config: dict[str, Any], settings: BucketSettings) -> Bucket:
    """The bucket of an opened datasource config; ValueError (what to fix) for a bad fullPath; StoreError
    for credentials the SDK refuses."""
    return _clients.get(config, settings)


def _build(config: dict[str, Any], settings: BucketSettings) -> Bucket:
    kind = config["type"]
    location = parse_location(kind, config.get("fullPath", ""))
    t = settings.timeout_s
    if kind in ("S3", "OBS", "S3DelegatedAccess"):
        from .s3 import AssumedRole, S3Bucket, s3_client

        kms = config.get("s3ServerSideEncryptionKMSKey")
        if kind == "S3":
            client = s3_client(config["s3Region"], config["s3AccessKeyId"], config["s3SecretAccessKey"], t)
            return S3Bucket(location, client, kms, secret_key=config["s3SecretAccessKey"])
        if kind == "OBS":
            client = s3_client(
                "us-east-1", config["obsAccessKeyId"], config["obsSecretAccessKey"], t, config["obsEndpoint"]
            )
            return S3Bucket(location, client, secret_key=config["obsSecretAccessKey"])
        role = AssumedRole(config["s3Region"], config["s3ARN"], config["s3ExternalId"], t)
        return _DelegatedBucket(location, role, config["s3Region"], t, kms)
    if kind == "GCS":
        from .gcs import GCSBucket

        return GCSBucket(location, config["gcsProjectId"], config["gcsCredentials"], t, settings.gcs_endpoint)
    if kind == "AZURE":
        from .azure import AzureBucket

        return AzureBucket(location, config["accountName"], config["accountKey"], t, settings.azure_endpoint)
    raise ValueError(f"datasource type {kind} keeps no files in a bucket")


class _DelegatedBucket:
    """S3 through a role assumed with STS; a new client whenever the temporary keys change."""

    def __init__(self, location: Location, role: Any, region: str, timeout_s: float, kms: str | None) -> None:
        self.location = location
        self._role = role
        self._region = region
        self._timeout_s = timeout_s
        self._kms = kms
        self._lock = threading.Lock()
        self._current: tuple[tuple[str, str, str], Bucket] | None = None

    def _bucket(self) -> Bucket:
        from .s3 import S3Bucket, s3_client

        keys = self._role.keys()
        with self._lock:
            if self._current is None or self._current[0] != keys:
                client = s3_client(self._region, keys[0], keys[1], self._timeout_s, token=keys[2])
                self._current = (keys, S3Bucket(self.location, client, self._kms, secret_key=keys[1]))
            return self._current[1]

    def list_page(self, prefix: str, token: str | None, max_keys: int) -> Page:
        return self._bucket().list_page(prefix, token, max_keys)

    def head(self, key: str) -> ObjectInfo | None:
        return self._bucket().head(key)

    def read(self, key: str, start: int, length: int) -> bytes:
        return self._bucket().read(key, start, length)

    def write(self, key: str, data: bytes) -> None:
        self._bucket().write(key, data)

    def delete(self, key: str) -> None:
        self._bucket().delete(key)

    def sign(self, method: str, key: str, ttl_s: int) -> str:
        return self._bucket().sign(method, key, ttl_s)
