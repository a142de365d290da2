"""What the datasource file routes and the scheduling check share: a dataset's datasource opened as a
bucket (credentials unsealed in memory only), store errors as answers, presigned and redirect URLs."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from lightly_protocol import paths
from lightly_protocol.enums import ApiErrorCode, DatasourcePurpose

from .. import crypto, storage, store
from ..errors import ApiError
from ..runtime import Server

#: the scheduling check's budget (list one page, read one byte), whatever the store does
CHECK_BUDGET_S = 20.0
_checks = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bucket-check")


def bucket_settings(server: Server) -> storage.BucketSettings:
    s = server.settings
    return storage.BucketSettings(
        timeout_s=s.bucket_timeout_seconds, gcs_endpoint=s.gcs_endpoint_url, azure_endpoint=s.azure_blob_endpoint
    )


def not_a_bucket(config: dict[str, Any]) -> ApiError:
    kind = config.get("type")
    if kind == "LOCAL":
        why = (
            "LOCAL datasource files are on the worker's /input_mount; this server neither lists nor signs them "
            "(the worker reads its mounts; for files the server can hand out, use an S3, GCS, AZURE or OBS datasource)"
        )
    else:
        why = f"a {kind} datasource keeps no files in a bucket this server can reach; use S3, GCS, AZURE or OBS"
    return ApiError(400, ApiErrorCode.DATASET_DATASOURCE_ACTION_NOT_IMPLEMENTED, why)


def datasource_config(server: Server, user_id: str, dataset_id: str, purpose: str) -> dict[str, Any]:
    """The stored config serving ``purpose`` (404 for another user's dataset or a missing datasource)."""
    with server.db.read() as conn:
        store.get_dataset(conn, user_id, dataset_id)
        config = store.resolve_datasource(store.get_datasources(conn, dataset_id), purpose)
    if config is None:
        what = "writeable (LIGHTLY or INPUT_OUTPUT)" if purpose == DatasourcePurpose.LIGHTLY else purpose
        raise ApiError(
            404 if purpose != DatasourcePurpose.LIGHTLY else 400,
            ApiErrorCode.DATASET_DATASOURCE_UNKNOWN
            if purpose != DatasourcePurpose.LIGHTLY
            else ApiErrorCode.DATASET_DATASOURCE_ILLEGAL_ACTION,
            f"dataset {dataset_id} has no {what} datasource; set one with PUT .../datasource",
        )
    return config


def open_config(server: Server, config: dict[str, Any]) -> storage.Bucket:
    if config.get("type") not in storage.BUCKET_TYPES:
        raise not_a_bucket(config)
    opened = crypto.open_datasource(server.keyring, config)
    try:
        return storage.open_bucket(opened, bucket_settings(server))
    except ValueError as exc:
        raise ApiError(400, ApiErrorCode.DATASET_DATASOURCE_INVALID, str(exc)) from None
    except storage.StoreError as exc:
        raise storage.api_error(exc, str(config.get("fullPath", ""))) from None


def open_datasource(server: Server, user_id: str, dataset_id: str, purpose: str) -> storage.Bucket:
    return open_config(server, datasource_config(server, user_id, dataset_id, purpose))


@contextlib.contextmanager
def store_errors(bucket: storage.Bucket, key: str | None = None) -> Iterator[None]:
    """A StoreError as the answer naming the datasource (or the object)."""
    try:
        yield
    except storage.StoreError as exc:
        loc = bucket.location
        where = f"{loc.scheme}://{loc.bucket}/{key}" if key is not None else str(loc)
        raise storage.api_error(exc, where) from None


def file_name_or_400(name: str, what: str = "fileName") -> str:
    problem = storage.relative_key_problem(name)
    if problem:
        raise ApiError(
            400, ApiErrorCode.BAD_REQUEST, f"{what} {storage.shown(name)!r} {problem} (relative to the datasource root)"
        )
    return name


def presign(server: Server, bucket: storage.Bucket, method: str, relative: str) -> str:
    key = bucket.location.key(relative)
    with store_errors(bucket, key):
        return bucket.sign(method, key, server.settings.bucket_url_seconds)


def presigned_read(server: Server, config: dict[str, Any], relative: str, ttl_s: int) -> str:
    """A presigned GET URL of ``relative`` (a sample's name) in the bucket of ``config``, valid ``ttl_s``
    seconds (at least one, at most the provider's limit of 7 days)."""
    bucket = open_config(server, config)
    key = bucket.location.key(file_name_or_400(relative, "the sample's fileName"))
    with store_errors(bucket, key):
        return bucket.sign("GET", key, max(1, min(ttl_s, 7 * 24 * 3600)))


def _redirect_signature(server: Server, user_id: str, dataset_id: str, purpose: str, path: str, expires: int) -> str:
    msg = f"readurlRedirect\0{user_id}\0{dataset_id}\0{purpose}\0{path}\0{expires}".encode()
    return hmac.new(server.artifacts.key, msg, hashlib.sha256).hexdigest()


def redirect_url(base: str, server: Server, user_id: str, dataset_id: str, purpose: str, path: str) -> str:
    """A URL of this server that redirects to a fresh presigned URL (signed; valid as long as artifact URLs)."""
    expires = int(time.time()) + server.artifacts.url_ttl_s
    sig = _redirect_signature(server, user_id, dataset_id, purpose, path, expires)
    query = urllib.parse.urlencode(
        {"path": path, "purpose": purpose, "user": user_id, "expires": expires, "signature": sig}
    )
    return f"{base}{paths.datasource_read_redirect(dataset_id)}?{query}"


def redirect_valid(
    server: Server, user_id: str, dataset_id: str, purpose: str, path: str, expires: int, sig: str
) -> bool:
    if expires < time.time() or not sig.isascii():
        return False
    return hmac.compare_digest(_redirect_signature(server, user_id, dataset_id, purpose, path, expires), sig)


def check_run_access(server: Server, config: dict[str, Any]) -> None:
    """Scheduling: refuse a run whose INPUT bucket cannot be listed or read (400 with the provider's words);
    bounded by ``CHECK_BUDGET_S`` whatever the store does."""
    bucket = open_config(server, config)
    future = _checks.submit(storage.check_readable, bucket)
    try:
        with store_errors(bucket):
            future.result(timeout=CHECK_BUDGET_S)
    except FutureTimeout:
        raise ApiError(
            400,
            ApiErrorCode.DATASET_DATASOURCE_INVALID,
            f"the INPUT datasource {bucket.location} did not answer a listing and a read within "
            f"{CHECK_BUDGET_S:.0f} s; "
            "check the store, or schedule with worker_config={'datasource': {'bypass_verify': True}}",
        ) from None
    except ApiError as exc:
        exc.message = (
            f"the INPUT datasource cannot be listed or read, so the run would fail: {exc.message}; fix its "
            "credentials or permissions (or schedule with worker_config={'datasource': {'bypass_verify': True}})"
        )
        if exc.status == 429:  # a store that does not answer refuses the run as well
            exc.status, exc.code, exc.headers = 400, str(ApiErrorCode.DATASET_DATASOURCE_INVALID), {}
        raise
