"""Azure Blob Storage through azure-storage-blob.

Lightly's ``set_azure_config`` stores a SAS token in ``accountKey``; an account key works too:

* an account key (base64): the server signs a service SAS per blob, valid for the URL lifetime, with
  only the permission asked for (read, or create+write);
* a SAS token (``sv=...&sig=...``): the server cannot mint narrower tokens. Its URLs are the blob's URL
  with the user's token appended, so a worker holding one may do whatever that token allows, until it
  expires. Give such a datasource a token limited to its container, with the permissions a run needs
  (read and list; add, create and write for the LIGHTLY datasource), and a near expiry.

The endpoint is ``https://{account}.blob.core.windows.net`` unless the server is given
``--azure-blob-endpoint`` (``{account}`` is replaced, e.g. Azurite's ``http://127.0.0.1:10000/{account}``).
"""

from __future__ import annotations

import datetime
import logging
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import azure.core.exceptions as aexc
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from .base import ObjectInfo, Page
from .errors import StoreError, is_transient_status
from .keys import Location

AZURE_ENDPOINT = "https://{account}.blob.core.windows.net"

# the SDK logs every request's URL and headers at INFO (a SAS's parameters among them, if only redacted):
# the server's log keeps the store's errors (our StoreError answers), not its traffic
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def is_sas_token(secret: str) -> bool:
    query = urllib.parse.parse_qs(secret.lstrip("?"))
    return "sig" in query and "sv" in query


@contextmanager
def provider_errors() -> Iterator[None]:
    try:
        yield
    except aexc.HttpResponseError as exc:
        status = exc.status_code
        code = str(getattr(exc, "error_code", None) or exc.reason or type(exc).__name__)
        message = str(exc.message or exc).split("\n")[0]
        raise StoreError(status, code, message, transient=is_transient_status(status)) from None
    except (aexc.ServiceRequestError, aexc.ServiceResponseError) as exc:
        raise StoreError(None, "Unreachable", str(exc).split("\n")[0], transient=True) from None
    except aexc.AzureError as exc:
        raise StoreError(None, type(exc).__name__, str(exc).split("\n")[0]) from None
    except ValueError as exc:  # a malformed key (not base64)
        raise StoreError(400, "InvalidCredentials", f"accountKey: {exc}") from None


class AzureBucket:
    def __init__(self, location: Location, account: str, secret: str, timeout_s: float, endpoint: str | None) -> None:
        self.location = location
        self._account = account
        self._sas = secret.lstrip("?") if is_sas_token(secret) else None
        self._key = None if self._sas else secret
        self._timeout = timeout_s
        url = (endpoint or AZURE_ENDPOINT).replace("{account}", account).rstrip("/")
        credential: Any = self._sas if self._sas else {"account_name": account, "account_key": secret}
        with provider_errors():
            self._service = BlobServiceClient(
                url,
                credential=credential,
                connection_timeout=min(5.0, timeout_s),
                read_timeout=timeout_s,
                retry_total=2,  # exponential backoff with jitter (the SDK's ExponentialRetry)
            )
            self._container = self._service.get_container_client(location.bucket)

    def list_page(self, prefix: str, token: str | None, max_keys: int) -> Page:
        with provider_errors():
            pages: Any = self._container.list_blobs(
                name_starts_with=prefix, results_per_page=max_keys, timeout=int(self._timeout)
            ).by_page(continuation_token=token)
            page = next(pages, None)
            objects = (
                []
                if page is None
                else [ObjectInfo(b.name, int(b.size or 0), _seconds(b.last_modified)) for b in page][:max_keys]
            )
            return Page(objects, pages.continuation_token or None)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with provider_errors():
                props = self._container.get_blob_client(key).get_blob_properties(timeout=int(self._timeout))
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise
        return ObjectInfo(key, int(props.size or 0), _seconds(props.last_modified))

    def read(self, key: str, start: int, length: int) -> bytes:
        with provider_errors():
            data: bytes = (
                self._container.get_blob_client(key)
                .download_blob(offset=start, length=length, timeout=int(self._timeout))
                .readall()
            )
        return data

    def write(self, key: str, data: bytes) -> None:
        with provider_errors():
            self._container.get_blob_client(key).upload_blob(data, overwrite=True, timeout=int(self._timeout))

    def delete(self, key: str) -> None:
        with provider_errors():
            self._container.get_blob_client(key).delete_blob(timeout=int(self._timeout))

    def sign(self, method: str, key: str, ttl_s: int) -> str:
        # the blob's URL without a query: a client built on a SAS token puts the token in ``.url`` already
        blob_url: str = self._container.get_blob_client(key).url.split("?", 1)[0]
        if self._sas:
            return f"{blob_url}?{self._sas}"
        now = datetime.datetime.now(datetime.UTC)
        permission = BlobSasPermissions(create=True, write=True) if method == "PUT" else BlobSasPermissions(read=True)
        with provider_errors():
            sas = generate_blob_sas(
                self._account,
                self.location.bucket,
                key,
                account_key=self._key,
                permission=permission,
                start=now - datetime.timedelta(minutes=5),  # clock skew
                expiry=now + datetime.timedelta(seconds=ttl_s),
            )
        return f"{blob_url}?{sas}"


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime.datetime) else 0.0
