"""The I/O-free core of a Lightly API client, shared by the worker (sync) and the operator (async).

``ClientCore`` holds the base URL and the token and builds each request's URL and query: the token
travels as the ``token`` query parameter, as the protocol requires, and never appears in a repr.
A failed answer becomes one ``ApiCallError`` that keeps its HTTP status (0: no answer at all), so
a caller asks ``exc.status == 404`` instead of matching text. ``error_detail`` reads Lightly's
``{"code", "error"}`` body (``models.ApiError``). The transports (httpx, sync or async) stay in the
components: this package does no I/O.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "NO_ANSWER",
    "ApiCallError",
    "ClientCore",
    "bare",
    "decode",
    "error_detail",
    "is_server_error",
]

#: the status of an ``ApiCallError`` when no HTTP answer came (connection refused, timeout)
NO_ANSWER = 0


class ApiCallError(Exception):
    """A failed call of the Lightly API; ``status`` is the HTTP status, ``NO_ANSWER`` when none came."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def is_server_error(status: int) -> bool:
    return status >= 500


def error_detail(text: str, *, limit: int | None = None) -> str:
    """The ``error`` of Lightly's ``{"code", "error"}`` body; else the body itself (cut to ``limit``
    characters when it is not JSON at all)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:limit] if limit is not None else text
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return text


def decode(content: bytes) -> Any:
    """An answer's JSON, or None for an empty body (204)."""
    return json.loads(content) if content else None


def bare(path: str) -> str:
    """A path without its query string, for messages."""
    return path.split("?")[0]


class ClientCore:
    """Base URL and token of one client; the transports call ``url_of`` and ``query``."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._token = token

    def __repr__(self) -> str:  # never show the token
        return f"{type(self).__name__}({self.url})"

    def url_of(self, path: str) -> str:
        return f"{self.url}{path}"

    def query(self, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**(params or {}), "token": self._token}
