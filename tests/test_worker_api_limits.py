"""The worker's API client stays inside the server's limits (real server, SQLite and PostgreSQL):
an over-long run message is shortened, not refused (the state is never lost), and many log lines
go out in batches the server accepts."""

from __future__ import annotations

import logging

from conftest import Api
from flows import config, dataset, lock, ok, register, schedule, start_run
from lightly_protocol import paths
from lightly_protocol.models import MAX_LOG_ENTRIES, MAX_MESSAGE_LENGTH, LogCreateEntry, LogLevel
from lightly_worker.api import LOG_BATCH_LINES, WorkerApi


def _run(api: Api) -> str:
    ds = dataset(api)
    sid = schedule(api, ds, config(api))
    wid = register(api)
    ok(lock(api, ds, wid, sid), 204)
    return start_run(api, ds, sid)


def test_a_long_run_message_is_shortened_to_the_servers_limit(api: Api, server) -> None:  # type: ignore[no-untyped-def]
    run_id = _run(api)
    WorkerApi(server.url, api.token).run_state(run_id, "EMBEDDING", "x" * (MAX_MESSAGE_LENGTH + 10))
    run = ok(api.get(paths.run(run_id)))
    assert run["state"] == "EMBEDDING" and len(run["message"]) == MAX_MESSAGE_LENGTH


def test_many_log_lines_go_out_in_batches_the_server_accepts(api: Api, server) -> None:  # type: ignore[no-untyped-def]
    run_id = _run(api)
    n = MAX_LOG_ENTRIES + 7  # more lines, and more bytes (10 MB), than one PUT may carry
    entries = [
        LogCreateEntry(ts=1_700_000_000_000 + i, level=LogLevel.INFO, group="t", msg="m" * 2000, state="EMBEDDING")
        for i in range(n)
    ]
    WorkerApi(server.url, api.token).logs(run_id, entries)
    got, cursor = 0, None
    while True:
        params = {"cursor": str(cursor)} if cursor is not None else {}
        page = ok(api.get(paths.run_logs(run_id), params=params))
        got += len(page["logs"])
        if not page["logs"] or cursor == page["cursor"]:
            break
        cursor = page["cursor"]
    assert got == n
    logging.getLogger(__name__).info("%d lines in %d batches", n, -(-n // LOG_BATCH_LINES))
