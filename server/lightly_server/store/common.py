"""What every resource shares: the owned-row lookup (else the 404), pages of a query or a list, a ping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from lightly_protocol.enums import ApiErrorCode
from sqlalchemy import Connection, Select, Table, select

from ..errors import bad_request, not_found
from ..schema import DbRow

MAX_PAGE = 25000
T = TypeVar("T")


def owned(
    conn: Connection,
    table: Table,
    ident: str,
    owner: str,
    code: ApiErrorCode,
    what: str,
    owner_column: str = "user_id",
) -> DbRow:
    """The row ``ident`` of ``table`` if it belongs to ``owner`` (a user, or with ``owner_column`` the
    parent row the caller already checked, e.g. a tag's dataset); else the 404 that names ``what``."""
    r = conn.execute(select(table).where(table.c.id == ident, table.c[owner_column] == owner)).first()
    if r is None:
        raise not_found(code, what, ident)
    return r


def page(limit: int | None, offset: int | None) -> tuple[int, int]:
    """(size, offset) of the protocol's pageSize/pageOffset (element offsets), at most MAX_PAGE a page."""
    size = MAX_PAGE if limit is None else limit
    off = 0 if offset is None else offset
    if size < 1 or off < 0:
        raise bad_request("pageSize must be >= 1 and pageOffset >= 0 (pageOffset is an element offset)")
    return min(size, MAX_PAGE), off


def paged(conn: Connection, query: Select[Any], page_size: int | None, page_offset: int | None) -> list[DbRow]:
    """One page of an ordered query."""
    size, off = page(page_size, page_offset)
    return list(conn.execute(query.limit(size).offset(off)).all())


def page_of(items: Sequence[T], page_size: int | None, page_offset: int | None) -> list[T]:
    """One page of a list already read."""
    size, off = page(page_size, page_offset)
    return list(items[off : off + size])


def ping(conn: Connection) -> None:
    """The database answers (health checks, the lease sweep's probe)."""
    conn.execute(select(1))
