"""Presigned S3 object URLs (AWS Signature Version 4, query parameters) at a fraction of botocore's cost.

A listing answers each file with a presigned read URL, so the server signs once per key listed:
botocore's ``generate_presigned_url`` takes about 0.2 ms per URL (``bench/storage_libraries.py``),
most of the server's CPU per key of a listing (docs/benchmarks.md, "Data in buckets"). The signature
itself is a few HMACs; the rest is botocore's per-call machinery (endpoint rules, event hooks).

So botocore stays the authority on the URL's shape and signs one *probe* URL per method for the bucket
(endpoint, virtual-host or path addressing, region and credential scope, the extra query parameters
of that botocore version); ``Presigner`` then computes the per-key signature with the same
algorithm: the canonical request of a query-signed S3 request (``UNSIGNED-PAYLOAD``, the ``host``
header only), the string to sign and the derived key (cached per day). A probe that does not have the
expected shape (another signature version, an unexpected parameter) is refused with ``ValueError``
and the caller keeps using botocore. tests/test_sigv4.py checks the URLs equal botocore's for hostile
keys, session tokens, endpoints with ports and dotted buckets, and that a real store (moto) serves them.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = ["PROBE_KEY", "Presigner", "encode_key"]

PROBE_KEY = "lightly-probe/key"
ALGORITHM = "AWS4-HMAC-SHA256"
#: the query parameters a probe may carry: the ones computed per URL, and fixed ones kept as they are
_PER_URL = {"X-Amz-Date", "X-Amz-Expires", "X-Amz-Signature"}
_KNOWN = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-SignedHeaders", "X-Amz-Security-Token", *_PER_URL}


def encode_key(key: str) -> str:
    """An object key in a URL path as S3 signs it: UTF-8 percent-encoded, ``/`` and ``~`` kept."""
    return quote(key, safe="/~")


def _uri_encode(text: str) -> str:
    return quote(text, safe="-_.~")


class Presigner:
    """Presigned URLs of one method for one bucket, shaped like the botocore-signed ``probe_url`` of
    ``PROBE_KEY``; ``secret_key`` is the secret of the probe's access key."""

    def __init__(self, method: str, probe_url: str, secret_key: str) -> None:
        parts = urlsplit(probe_url)
        suffix = encode_key(PROBE_KEY)
        if not parts.path.endswith(suffix) or parts.fragment:
            raise ValueError("the probe URL's path does not end with the probe key")
        params = parse_qsl(parts.query, keep_blank_values=True)
        names = [name for name, _ in params]
        query = dict(params)
        if len(set(names)) != len(names) or not set(names) <= _KNOWN:
            raise ValueError(f"unexpected query parameters {sorted(set(names) - _KNOWN)}")
        if query.get("X-Amz-Algorithm") != ALGORITHM or query.get("X-Amz-SignedHeaders") != "host":
            raise ValueError("not a SigV4 query signature over the host header alone")
        access_key, _day, region, service, terminal = query["X-Amz-Credential"].split("/")
        if terminal != "aws4_request":
            raise ValueError("unexpected credential scope")
        self.method = method
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc
        self._prefix = parts.path[: -len(suffix)]
        self._access_key, self._region, self._service = access_key, region, service
        self._secret = secret_key
        self._names = names  # the URL's parameters in botocore's order
        self._fixed = {k: v for k, v in query.items() if k not in _PER_URL and k != "X-Amz-Credential"}
        self._keys: tuple[str, bytes] | None = None  # (day, signing key)
        self._lock = threading.Lock()

    def _signing_key(self, day: str) -> bytes:
        with self._lock:
            if self._keys is None or self._keys[0] != day:
                key = f"AWS4{self._secret}".encode()
                for part in (day, self._region, self._service, "aws4_request"):
                    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
                self._keys = (day, key)
            return self._keys[1]

    def sign(self, key: str, ttl_s: int, now: datetime | None = None) -> str:
        """The presigned URL of ``key``, valid ``ttl_s`` seconds from ``now`` (default: the current time)."""
        when = (now or datetime.now(UTC)).astimezone(UTC)
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        values = {
            **self._fixed,
            "X-Amz-Credential": f"{self._access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(int(ttl_s)),
        }
        canonical_query = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(values.items()))
        path = self._prefix + encode_key(key)
        request = f"{self.method}\n{path}\n{canonical_query}\nhost:{self._host}\n\nhost\nUNSIGNED-PAYLOAD"
        digest = hashlib.sha256(request.encode()).hexdigest()
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"
        values["X-Amz-Signature"] = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        query = "&".join(f"{_uri_encode(k)}={_uri_encode(values[k])}" for k in self._names)
        return f"{self._origin}{path}?{query}"
