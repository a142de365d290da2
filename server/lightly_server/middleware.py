"""ASGI middleware: request latency by route template."""

from __future__ import annotations

import time
from typing import Any


class RequestMetrics:
    """Pure ASGI middleware: request latency by route template (never the raw path or query)."""

    def __init__(self, app: Any, histogram: Any) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status[0])).observe(time.perf_counter() - start)
