"""Connection pool creation and the one place asyncpg connection errors become domain errors."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from storage.errors import StorageUnavailable

__all__ = [
    "KEYSET_START",
    "Acquire",
    "Conn",
    "connect",
    "create_pool",
    "ensure_database",
    "from_row",
    "one_connection",
    "with_database",
]

T = TypeVar("T")

# What repositories accept: a plain connection or one borrowed from a pool.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# Opens a connection for one short step, and gives it back after (``pool.acquire``): for work
# that must not hold a connection while it waits on something slow in between.
Acquire: TypeAlias = Callable[[], contextlib.AbstractAsyncContextManager[Conn]]


def one_connection(conn: Conn) -> Acquire:
    """Every step on ``conn`` itself (a caller that already holds one: tests, scripts)."""
    return lambda: contextlib.nullcontext(conn)


# The position before every (timestamp, id) keyset: what a first page starts after.
KEYSET_START: tuple[datetime, uuid.UUID] = (datetime(1970, 1, 1, tzinfo=UTC), uuid.UUID(int=0))


def from_row(kind: type[T], row: asyncpg.Record) -> T:
    """A row as a msgspec Struct (column names are field names)."""
    return msgspec.convert(dict(row), kind, strict=False)


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CONNECT_ERRORS = (OSError, asyncpg.PostgresError, asyncio.TimeoutError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as text; repositories decode with msgspec where they need structure.
    await conn.execute("SET TIME ZONE 'UTC'")


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, timeout=10
        )
    except _CONNECT_ERRORS as exc:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    assert pool is not None
    return pool


async def connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except _CONNECT_ERRORS as exc:
        raise StorageUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc


def with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


async def ensure_database(dsn: str, database: str) -> str:
    """Create ``database`` on the server of ``dsn`` if missing; return a DSN for it."""
    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"not a plain database name: {database!r}")
    conn = await connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Another process may create it first; either way it exists afterwards.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return with_database(dsn, database)
