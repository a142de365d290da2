"""The worker's API client: an API that is down or failing is retried with backoff, never a crash."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lightly_worker.api import ApiError, WorkerApi


class Flaky(BaseHTTPRequestHandler):
    failures = 2
    seen: list[str] = []

    def do_GET(self) -> None:
        Flaky.seen.append(self.path)
        if Flaky.failures > 0:
            Flaky.failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps([]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server():  # type: ignore[no-untyped-def]
    Flaky.failures, Flaky.seen = 2, []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_5xx_answers_are_retried_with_backoff(flaky_server: str) -> None:
    api = WorkerApi(flaky_server, "tok", timeout=5, max_backoff=0.2)
    t0 = time.monotonic()
    assert api.queue("a" * 24, wait=0) == []
    assert len(Flaky.seen) == 3 and time.monotonic() - t0 >= 1.0  # waited 1 s, then 0.2 s
    assert all("token=tok" in p for p in Flaky.seen)


def test_an_unreachable_api_is_retried_until_stopped() -> None:
    api = WorkerApi("http://127.0.0.1:9", "tok", timeout=1, max_backoff=0.2)
    threading.Timer(1.5, api.stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(ApiError) as err:
        api.worker("a" * 24)
    assert err.value.status == 503 and "not answering" in str(err.value)
    assert time.monotonic() - t0 >= 1.0
    assert "tok" not in str(err.value)
