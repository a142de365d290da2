"""Google Cloud Storage through google-cloud-storage, with the datasource's service account key.

Requests authenticate with a self-signed JWT of the service account (no token exchange), and URLs are V4
signed with its private key, so the key must be a service account key with ``private_key`` and
``client_email``. The endpoint is Google's unless the server is given ``STORAGE_EMULATOR_HOST`` (the
Google SDKs' own variable; an emulator's URL, e.g. ``http://127.0.0.1:9023``).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import google.api_core.exceptions as gexc
import google.auth.exceptions
import requests
from google.api_core.retry import Retry
from google.cloud import storage
from google.oauth2 import service_account

from .base import ObjectInfo, Page
from .errors import StoreError, is_transient_status
from .keys import Location

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GOOGLE_ENDPOINT = "https://storage.googleapis.com"


@contextmanager
def provider_errors() -> Iterator[None]:
    try:
        yield
    except gexc.GoogleAPICallError as exc:
        status = int(exc.code) if exc.code else None
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise StoreError(status, str(reason), exc.message or str(exc), transient=is_transient_status(status)) from None
    except gexc.RetryError as exc:
        raise StoreError(None, "RetryError", str(exc.cause or exc), transient=True) from None
    except google.auth.exceptions.GoogleAuthError as exc:
        raise StoreError(401, "InvalidCredentials", str(exc)) from None
    except requests.exceptions.RequestException as exc:
        raise StoreError(None, "Unreachable", str(exc), transient=True) from None


def gcs_credentials(key_json: str) -> service_account.Credentials:
    try:
        info = json.loads(key_json)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        make = service_account.Credentials.from_service_account_info
        creds: service_account.Credentials = make(info, scopes=[SCOPE], always_use_jwt_access=True)  # type: ignore[no-untyped-call]
        return creds
    except (ValueError, KeyError) as exc:
        raise StoreError(
            400,
            "InvalidCredentials",
            f"gcsCredentials must be a service account key (JSON with private_key and client_email): {exc}",
        ) from None


class GCSBucket:
    def __init__(self, location: Location, project: str, key_json: str, timeout_s: float, endpoint: str | None) -> None:
        self.location = location
        self._endpoint = (endpoint or GOOGLE_ENDPOINT).rstrip("/")
        self._timeout = timeout_s
        self._retry = Retry(initial=0.5, maximum=4.0, multiplier=2.0, timeout=3 * timeout_s)  # jittered backoff
        creds = gcs_credentials(key_json)
        self._client = storage.Client(
            project=project, credentials=creds, client_options={"api_endpoint": self._endpoint}
        )
        self._bucket = self._client.bucket(location.bucket)

    def list_page(self, prefix: str, token: str | None, max_keys: int) -> Page:
        with provider_errors():
            it = self._client.list_blobs(
                self._bucket,
                prefix=prefix,
                max_results=max_keys,
                page_token=token,
                timeout=self._timeout,
                retry=self._retry,
            )
            page = next(it.pages, None)
            objects = [] if page is None else [ObjectInfo(b.name, int(b.size or 0), _seconds(b.updated)) for b in page]
            return Page(objects, it.next_page_token or None)

    def head(self, key: str) -> ObjectInfo | None:
        with provider_errors():
            blob = self._bucket.get_blob(key, timeout=self._timeout, retry=self._retry)
        return None if blob is None else ObjectInfo(key, int(blob.size or 0), _seconds(blob.updated))

    def read(self, key: str, start: int, length: int) -> bytes:
        with provider_errors():
            data: bytes = self._bucket.blob(key).download_as_bytes(
                start=start, end=start + length - 1, timeout=self._timeout, retry=self._retry
            )
        return data

    def write(self, key: str, data: bytes) -> None:
        with provider_errors():
            self._bucket.blob(key).upload_from_string(data, timeout=self._timeout)

    def delete(self, key: str) -> None:
        with provider_errors():
            self._bucket.blob(key).delete(timeout=self._timeout)

    def sign(self, method: str, key: str, ttl_s: int) -> str:
        with provider_errors():
            url: str = self._bucket.blob(key).generate_signed_url(
                version="v4",
                expiration=datetime.timedelta(seconds=ttl_s),
                method=method,
                api_access_endpoint=self._endpoint,
            )
        return url


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime.datetime) else 0.0
