"""Shared fixtures: one real PostgreSQL per test session, a migrated database, isolation per test.

By default the session starts the embedded PostgreSQL in a temporary directory.
``FAIRWATCH_TEST_DATABASE_URL`` points the suite at another server instead (e.g. the machine's own
PostgreSQL 15); either way the suite creates a database of its own and drops it at the end.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from cases.taxonomy import load_taxonomy
from storage.db import Conn, connect, with_database
from storage.embedded import start_embedded_postgres
from storage.feed import publish_taxonomy
from storage.migrate import apply_migrations
from tests.s3server import s3_server

__all__ = ["s3_server"]  # a session fixture shared by integration and API tests


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """A DSN for the maintenance database of a real PostgreSQL server."""
    external = os.environ.get("FAIRWATCH_TEST_DATABASE_URL")
    if external:
        yield external
        return
    tmp = Path(tempfile.mkdtemp(prefix="fairwatch-test-pg-"))
    server = start_embedded_postgres(tmp / "pgdata", delete_on_stop=True)
    try:
        yield server.dsn("postgres")
    finally:
        server.stop()


async def create_scratch_database(server_dsn: str, prefix: str = "fairwatch_test") -> str:
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = await connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_database(server_dsn: str, name: str) -> None:
    conn = await connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_dsn(pg_server_dsn: str) -> AsyncIterator[str]:
    """A freshly created, fully migrated database for this test session."""
    name = await create_scratch_database(pg_server_dsn)
    dsn = with_database(pg_server_dsn, name)
    conn = await connect(dsn)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    try:
        yield dsn
    finally:
        await drop_database(pg_server_dsn, name)


@pytest.fixture(scope="session")
async def pool(database_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=8)
    assert pool is not None
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def db(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A connection inside a transaction that is rolled back after the test."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            yield conn
        finally:
            await tx.rollback()


# Tables whose rows come from migrations (reference data) survive the per-test cleanup.
SEEDED_TABLES: frozenset[str] = frozenset({"schema_migrations", "sync_feed_state"})


async def truncate_all(pool: asyncpg.Pool) -> None:
    """Empty every tenant table: the API tests commit through the app, so they cannot roll back."""
    async with pool.acquire() as conn:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = [r["tablename"] for r in tables if r["tablename"] not in SEEDED_TABLES]
        if names:
            quoted = ", ".join(f'"{n}"' for n in names)
            await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
        # The taxonomy's feed rows went with the truncation: publish them again.
        await publish_taxonomy(conn, load_taxonomy(), force=True)
