"""Web console sign-outs: the digests of session cookies signed out before they expire
(``lightly_server.console.session``), so that a copy of a cookie stops working at sign-out too."""

from __future__ import annotations

from sqlalchemy import Connection, delete, exists, insert, select

from ..schema import console_signouts


def record_signout(conn: Connection, digest: str, expires_at: int, now: int) -> None:
    """Remember ``digest`` until ``expires_at``; forget the sign-outs of cookies that have expired since."""
    conn.execute(delete(console_signouts).where(console_signouts.c.expires_at < now))
    if expires_at >= now and not is_signed_out(conn, digest):
        conn.execute(insert(console_signouts).values(digest=digest, expires_at=expires_at))


def is_signed_out(conn: Connection, digest: str) -> bool:
    return bool(conn.execute(select(exists().where(console_signouts.c.digest == digest))).scalar())
