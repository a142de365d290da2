"""The one small interface every provider's bucket implements (``s3.py``, ``gcs.py``, ``azure.py``).

Every call has a timeout (the server's ``--bucket-timeout-seconds``) and a bounded number of retries with
backoff and jitter (the SDK's own); a provider's failure is raised as ``StoreError`` with its own status,
code and message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .keys import Location


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    #: last modification, unix seconds
    modified: float


@dataclass(frozen=True)
class Page:
    objects: list[ObjectInfo]
    #: the provider's continuation token; None at the end of the listing
    token: str | None


class Bucket(Protocol):
    location: Location

    def list_page(self, prefix: str, token: str | None, max_keys: int) -> Page:
        """At most ``max_keys`` objects under the full key ``prefix`` in key order, from ``token`` on."""

    def head(self, key: str) -> ObjectInfo | None:
        """The object's size and time; None when it does not exist."""

    def read(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``start`` .. ``start+length-1`` (fewer at the end); StoreError 404 when missing."""

    def write(self, key: str, data: bytes) -> None: ...

    def delete(self, key: str) -> None: ...

    def sign(self, method: str, key: str, ttl_s: int) -> str:
        """A presigned URL for ``method`` (GET, HEAD or PUT) of the full ``key``, valid ``ttl_s`` seconds."""
