"""S3 and S3-compatible stores (S3, S3DelegatedAccess, OBS) through boto3.

* S3: the datasource's keys and region. The endpoint is AWS's, unless the server's environment sets the
  AWS SDKs' standard ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (on-prem S3, tests): botocore reads
  them itself.
* OBS: the datasource's own ``obsEndpoint`` and keys (signature v4, path-style addressing).
* S3DelegatedAccess: the server assumes the role (``s3ARN``) with the external id (``s3ExternalId``)
  through STS with its own AWS credentials (the SDK's default chain: environment, config files, instance
  or pod role); the temporary keys are kept until five minutes before they expire.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from .base import ObjectInfo, Page
from .errors import StoreError, is_transient_status
from .keys import Location
from .sigv4 import PROBE_KEY, Presigner

log = logging.getLogger(__name__)

_SIGNED = {"GET": "get_object", "HEAD": "head_object", "PUT": "put_object"}
# sessions load botocore's data files: one per thread-safe use is enough (clients are thread-safe)
_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _boto_session() -> boto3.session.Session:
    global _session
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        return _session


def _config(timeout_s: float, path_style: bool) -> Config:
    return Config(
        signature_version="s3v4",
        connect_timeout=min(5.0, timeout_s),
        read_timeout=timeout_s,
        retries={"mode": "standard", "total_max_attempts": 3},  # 3 tries in all; backoff with jitter; throttling
        s3={"addressing_style": "path" if path_style else "auto"},
    )


@contextmanager
def provider_errors(what: str = "") -> Iterator[None]:
    """boto3's exceptions as ``StoreError`` (the provider's own status, code and message)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(err.get("Code") or "")
        message = str(err.get("Message") or "") or {404: "not found", 403: "access denied"}.get(status or 0, code)
        if code.isdigit() and status is None:
            status = int(code)
        raise StoreError(
            status, code if not code.isdigit() else "", message, transient=is_transient_status(status)
        ) from None
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
        raise StoreError(None, "NoCredentials", f"{what}{exc}") from None
    except (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
        botocore.exceptions.ReadTimeoutError,
        botocore.exceptions.ConnectionClosedError,
    ) as exc:
        raise StoreError(None, "Unreachable", f"{what}{exc}", transient=True) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise StoreError(None, type(exc).__name__, f"{what}{exc}") from None


class S3Bucket:
    """One bucket through a boto3 client; ``secret_key`` (the client's) lets presigned URLs be computed by
    ``sigv4.Presigner`` in the shape botocore gives them, about ten times faster than botocore."""

    def __init__(
        self, location: Location, client: Any, kms_key: str | None = None, *, secret_key: str | None = None
    ) -> None:
        self.location = location
        self._client = client
        self._kms_key = kms_key
        self._secret_key = secret_key
        self._presigners: dict[str, Presigner | None] = {}
        self._lock = threading.Lock()

    def list_page(self, prefix: str, token: str | None, max_keys: int) -> Page:
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if token:
            args["ContinuationToken"] = token
        with provider_errors():
            out = self._client.list_objects_v2(**args)
        objects = [
            ObjectInfo(o["Key"], int(o.get("Size", 0)), _seconds(o.get("LastModified")))
            for o in out.get("Contents", [])
        ]
        return Page(objects, out.get("NextContinuationToken") if out.get("IsTruncated") else None)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with provider_errors():
                out = self._client.head_object(Bucket=self.location.bucket, Key=key)
        except StoreError as exc:
            if exc.status == 404:
                return None
            raise
        return ObjectInfo(key, int(out.get("ContentLength", 0)), _seconds(out.get("LastModified")))

    def read(self, key: str, start: int, length: int) -> bytes:
        with provider_errors():
            out = self._client.get_object(
                Bucket=self.location.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            data: bytes = out["Body"].read(length)
            out["Body"].close()
        return data

    def write(self, key: str, data: bytes) -> None:
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": key, "Body": data}
        if self._kms_key:
            args.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self._kms_key)
        with provider_errors():
            self._client.put_object(**args)

    def delete(self, key: str) -> None:
        with provider_errors():
            self._client.delete_object(Bucket=self.location.bucket, Key=key)

    def sign(self, method: str, key: str, ttl_s: int) -> str:
        presigner = self._presigner(method)
        if presigner is not None:
            return presigner.sign(key, ttl_s)
        with provider_errors():
            url: str = self._client.generate_presigned_url(
                _SIGNED[method], Params={"Bucket": self.location.bucket, "Key": key}, ExpiresIn=ttl_s
            )
        return url

    def _presigner(self, method: str) -> Presigner | None:
        """The fast signer of ``method``, made once from a URL botocore signs; None: botocore signs each URL
        (no secret key given, or a probe URL of another shape, said once in the log)."""
        if self._secret_key is None:
            return None
        with self._lock:
            if method not in self._presigners:
                with provider_errors():
                    probe = self._client.generate_presigned_url(
                        _SIGNED[method], Params={"Bucket": self.location.bucket, "Key": PROBE_KEY}, ExpiresIn=60
                    )
                try:
                    self._presigners[method] = Presigner(method, probe, self._secret_key)
                except ValueError as exc:
                    log.info("presigned %s URLs of bucket %s come from botocore: %s", method, self.location.bucket, exc)
                    self._presigners[method] = None
            return self._presigners[method]


def _seconds(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def s3_client(
    region: str,
    access_key: str,
    secret_key: str,
    timeout_s: float,
    endpoint: str | None = None,
    token: str | None = None,
) -> Any:
    """A client with these keys; ``endpoint`` None: AWS, or the environment's AWS_ENDPOINT_URL(_S3)."""
    with provider_errors():
        return _boto_session().client(
            "s3",
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=token,
            endpoint_url=endpoint,
            config=_config(timeout_s, path_style=endpoint is not None),
        )


class AssumedRole:
    """Temporary keys of a role assumed through STS, renewed five minutes before they expire."""

    def __init__(self, region: str, role_arn: str, external_id: str, timeout_s: float) -> None:
        self._args = {"RoleArn": role_arn, "ExternalId": external_id, "RoleSessionName": "lightly-server"}
        self._region = region
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._keys: tuple[str, str, str] | None = None
        self._renew_at = 0.0

    def keys(self) -> tuple[str, str, str]:
        with self._lock:
            if self._keys is None or time.time() >= self._renew_at:
                what = (
                    f"assuming role {self._args['RoleArn']} through STS (S3DelegatedAccess needs the server to reach "
                    "AWS STS, or AWS_ENDPOINT_URL_STS, with AWS credentials of its own): "
                )
                with provider_errors(what):
                    sts = _boto_session().client(
                        "sts", region_name=self._region, config=_config(self._timeout_s, path_style=False)
                    )
                    creds = sts.assume_role(**self._args, DurationSeconds=3600)["Credentials"]
                self._keys = (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
                expires = creds["Expiration"]
                self._renew_at = (expires.timestamp() if isinstance(expires, datetime) else time.time() + 3600) - 300
            return self._keys
