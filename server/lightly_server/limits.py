"""Request limits enforced before a request reaches its route (pure ASGI middleware).

- The body: refused with 413 as soon as it is known to be too large, from ``Content-Length`` before a
  byte is read, or by counting the bytes of a body sent without one (chunked) as they arrive, so an
  oversized body is never held in memory. The artifact upload route has its own, larger limit; shard
  listings and results (extension) have ``--max-shard-bytes``.
- NUL characters in the path or the query string: refused with 400 (no database can store or compare
  them).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from lightly_protocol.enums import ApiErrorCode
from starlette.exceptions import HTTPException

#: streamed to disk by their routes: artifact contents and embedding CSVs
UPLOAD_PATH = re.compile(r"^/v1/(artifacts/[^/]+/upload|embeddings/[^/]+/csv)$")
SELECTION_PATH = re.compile(r"^/v1/docker/runs/[^/]+/selection$")
#: extension: a shard listing (PUT /v1/ext/scheduled/{id}/shards) and a shard result (PUT .../shards/{id}/result)
SHARD_PATH = re.compile(r"^/v1/ext/(scheduled/[^/]+/shards|shards/[^/]+/result)$")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes its limit; answered 413 by the app."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


def too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than this server accepts here ({limit} bytes); send less per request "
        "(the limits are in docs/server.md, 'Limits')"
    )


class RequestLimits:
    def __init__(
        self, app: Any, max_body_bytes: int, max_selection_bytes: int, max_shard_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_selection = max_selection_bytes
        self.max_shard = max_body_bytes if max_shard_bytes is None else max_shard_bytes

    def limit_for(self, path: str) -> int | None:
        if UPLOAD_PATH.match(path):
            return None  # streamed to disk, limited by --max-upload-bytes in the route
        if SELECTION_PATH.match(path):
            return self.max_selection
        if SHARD_PATH.match(path):
            return self.max_shard
        return self.max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if "\x00" in scope["path"] or b"\x00" in unquote_to_bytes(raw_path):
            await _answer(send, 400, ApiErrorCode.BAD_REQUEST, "the path must not contain NUL characters (%00)")
            return
        if "\x00" in unquote(scope.get("query_string", b"").decode("latin-1")):
            await _answer(send, 400, ApiErrorCode.BAD_REQUEST, "query parameters must not contain NUL characters (%00)")
            return
        limit = self.limit_for(scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _answer(send, 413, ApiErrorCode.PAYLOAD_TOO_LARGE, too_large_message(limit))
                    return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, ApiErrorCode.PAYLOAD_TOO_LARGE, too_large_message(limit))


async def _answer(send: Any, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": str(code), "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
