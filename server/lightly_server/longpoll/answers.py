"""What the two long polls of an idle worker answer, in one place for both ways in.

* ``queue_poll``: ``GET /v1/docker/worker/{workerId}/schedule`` (the protocol's poll; with our
  ``waitSeconds`` extension it waits for one run).
* ``work_poll``: ``GET /v1/ext/workers/{workerId}/work`` (what our worker polls: a shard of a split
  run first, else the runs, as the queue poll).

Both are reached through FastAPI (``routes/schedule.py``, ``routes/shards.py``) and, for the plain
steady-state shape of an idle fleet's request, through ``asgi_fast_path.FastPolls``, which skips FastAPI's
request machinery. Each returns the answer's wire form (what goes into the JSON body); the caller has
already renewed the worker's lease (``Server.polling_worker_labels`` / ``Server.known_polling_labels``).

A long poll's token was checked when the request came in, but its wait lasts up to ``--max-wait-seconds``:
with ``token`` given, a poll about to answer a run (or to claim a shard) after its wait checks the token
again (the token cache: no database work while the entry is fresh, ``auth.TOKEN_TTL_S``), so a token
revoked during the wait gets 401 and the run goes to the next waiter.
"""

from __future__ import annotations

import time
from typing import Any

from lightly_protocol.enums import ApiErrorCode, ScheduledState
from lightly_protocol.shards import ShardAssignment, WorkData
from starlette.concurrency import run_in_threadpool

from .. import store
from ..errors import ApiError
from ..runtime import Server

INVALID_TOKEN = "invalid token: create one with 'lightly-server create-token --user NAME'"


def invalid_token() -> ApiError:
    return ApiError(401, ApiErrorCode.UNAUTHORIZED, INVALID_TOKEN)


async def token_still_valid(server: Server, token: str | None) -> bool:
    """Whether ``token`` (None: not checked again) is still valid, from the cache while it is fresh."""
    if token is None:
        return True
    hit, user_id = server.tokens.cached(token)
    if not hit:
        user_id = await run_in_threadpool(server.tokens.user_for, token)
    return user_id is not None


async def _refuse_if_revoked(server: Server, token: str | None, rows: list[Any]) -> None:
    """After a wait: 401 when the token was revoked meanwhile; the runs handed to this poll go to the next waiter."""
    if rows and not await token_still_valid(server, token):
        for r in rows:
            server.broker.release(r.id)
        raise invalid_token()


def wait_cap(server: Server, wait_seconds: float) -> float:
    """A long poll waits at most ``--max-wait-seconds`` and half a lease (the poll after it renews)."""
    return min(wait_seconds, server.settings.max_wait_seconds, server.settings.lease_seconds / 2)


async def queue_poll(
    server: Server,
    user_id: str,
    states: list[ScheduledState],
    labels: frozenset[str] | set[str],
    include_unlockable: bool,
    wait_seconds: float,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """Without ``waitSeconds``: the protocol's plain listing. With it (our extension): one run for
    this worker as soon as there is one, handed out so that concurrent pollers get different runs."""
    if wait_seconds > 0 and states in ([], [ScheduledState.OPEN]):
        rows = await server.broker.wait(user_id, labels, include_unlockable, wait_cap(server, wait_seconds))
        await _refuse_if_revoked(server, token, rows)
    else:

        def query() -> list[Any]:
            with server.db.read() as conn:
                return store.schedule_query(conn, user_id, states, labels, include_unlockable)

        rows = await run_in_threadpool(query)
    return [store.scheduled_data(r).wire() for r in rows]


async def work_poll(
    server: Server, user_id: str, worker_id: str, labels: frozenset[str], wait_seconds: float, token: str | None = None
) -> dict[str, Any]:
    """A shard the worker may take (claimed for it), else the scheduled runs it may take; with
    ``waitSeconds`` as soon as a shard opens or a run is scheduled for it, else empty after the wait."""
    wake = server.shard_wakeup

    def try_claim() -> ShardAssignment | None:
        with server.db.read() as conn:
            if not store.has_claimable_shard(conn, user_id, labels):
                return None  # an idle poll takes no write lock
        with server.write() as tx:
            return store.claim_shard(tx.conn, user_id, worker_id, labels)

    def listing() -> list[Any]:
        with server.db.read() as conn:
            rows = store.schedule_query(conn, user_id, [], labels, include_unlockable=False)
        return [store.scheduled_data(r) for r in rows]

    wait = wait_cap(server, wait_seconds)
    deadline = time.monotonic() + wait
    with wake.waiting(user_id) as tickets:
        while True:
            ticket = tickets.take()  # before the claim: a shard opening after it is not missed
            generation = wake.generation(user_id)
            got = None
            if not wake.known_empty(user_id, labels):  # an idle fleet's polls skip the database
                got = await run_in_threadpool(try_claim)
                if got is None:
                    wake.mark_empty(user_id, labels, generation)
            if got is not None:
                return WorkData(shard=got, scheduled=[]).wire()
            if wait <= 0:
                return WorkData(scheduled=await run_in_threadpool(listing)).wire()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return WorkData(scheduled=[]).wire()
            # a shard change (the ticket) ends the wait like its timeout; a run handed meanwhile is answered
            rows = await server.broker.wait(user_id, labels, False, remaining, interrupt=ticket)
            await _refuse_if_revoked(server, token, rows)
            if rows or not ticket.done():
                return WorkData(scheduled=[store.scheduled_data(r) for r in rows]).wire()
            # a shard changed: try the claim again (with a token still valid)
            if not await token_still_valid(server, token):
                raise invalid_token()
