"""Store errors: what a provider said, and the API error a route answers with (never a 5xx, never keys)."""

from __future__ import annotations

from lightly_protocol.enums import ApiErrorCode

from ..errors import ApiError

#: how long a client should wait before retrying a throttled or unreachable store (Retry-After)
RETRY_AFTER_S = 5


class StoreError(Exception):
    """A provider's answer (or the lack of one).

    ``status``: the provider's HTTP status (None: no answer: connection refused, timeout, DNS);
    ``code``: the provider's error code (``SignatureDoesNotMatch``, ``NoSuchBucket``, ...);
    ``message``: the provider's own message; ``transient``: worth retrying later (throttling, 5xx,
    no answer).
    """

    def __init__(self, status: int | None, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.transient = transient

    def summary(self) -> str:
        """``403 SignatureDoesNotMatch: <message>``, the way the provider said it."""
        head = " ".join(p for p in (str(self.status) if self.status else "", self.code) if p)
        return f"{head}: {self.message}" if head else self.message


def is_transient_status(status: int | None) -> bool:
    return status is None or status in (408, 429) or status >= 500


def api_error(exc: StoreError, where: str) -> ApiError:
    """The answer for a store error at ``where`` (``s3://bucket/prefix/``): 429 when it is worth retrying
    (throttled, unreachable, a 5xx of the store), else 400; the provider's own words and the datasource."""
    text = f"{exc.summary()} for {where}"
    if exc.transient:
        err = ApiError(
            429,
            ApiErrorCode.SERVICE_UNAVAILABLE,
            f"the datasource's store did not answer in time or is throttling: {text}; retry in {RETRY_AFTER_S} s",
        )
        err.headers = {"Retry-After": str(RETRY_AFTER_S)}
        return err
    if exc.status in (401, 403):
        code = ApiErrorCode.DATASET_DATASOURCE_CREDENTIALS_ERROR
    elif exc.status == 413:
        code = ApiErrorCode.DATASET_DATASOURCE_FILE_TOO_LARGE
    else:
        code = ApiErrorCode.DATASET_DATASOURCE_INVALID
    return ApiError(400, code, text)
