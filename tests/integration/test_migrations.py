"""Migrations: ordered, recorded with checksums, safe when two processes migrate at once."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from storage.db import connect, with_database
from storage.errors import MigrationError
from storage.migrate import Migration, apply_migrations, load_migrations
from tests.conftest import create_scratch_database, drop_database

pytestmark = pytest.mark.db


def test_project_migrations_are_numbered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(len(m.checksum) == 64 for m in migrations)


async def test_migrations_are_recorded_with_checksums(db: asyncpg.Connection) -> None:
    rows = await db.fetch("SELECT version, checksum FROM schema_migrations ORDER BY version")
    expected = [(m.version, m.checksum) for m in load_migrations()]
    assert [(r["version"], r["checksum"]) for r in rows] == expected


async def test_two_concurrent_migrators_neither_fails(pg_server_dsn: str) -> None:
    name = await create_scratch_database(pg_server_dsn, "fairwatch_migrate")
    dsn = with_database(pg_server_dsn, name)
    try:
        first, second = await connect(dsn), await connect(dsn)
        try:
            results = await asyncio.gather(apply_migrations(first), apply_migrations(second))
            # Exactly one of them applied everything; the other waited and found nothing to do.
            applied = sorted(len(r) for r in results)
            assert applied == [0, len(load_migrations())]
            count = await first.fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(load_migrations())
        finally:
            await first.close()
            await second.close()
    finally:
        await drop_database(pg_server_dsn, name)


async def test_changed_applied_migration_is_refused(pg_server_dsn: str) -> None:
    name = await create_scratch_database(pg_server_dsn, "fairwatch_migrate")
    dsn = with_database(pg_server_dsn, name)
    try:
        conn = await connect(dsn)
        try:
            original = [Migration(1, "first", "CREATE TABLE t1 (id int);")]
            assert len(await apply_migrations(conn, original)) == 1
            edited = [msgspec.structs.replace(original[0], sql="CREATE TABLE t1 (id bigint);")]
            with pytest.raises(MigrationError, match=r"0001_first\.sql was changed"):
                await apply_migrations(conn, edited)
        finally:
            await conn.close()
    finally:
        await drop_database(pg_server_dsn, name)


async def test_failed_migration_leaves_previous_version(pg_server_dsn: str) -> None:
    name = await create_scratch_database(pg_server_dsn, "fairwatch_migrate")
    dsn = with_database(pg_server_dsn, name)
    try:
        conn = await connect(dsn)
        try:
            steps = [
                Migration(1, "good", "CREATE TABLE t1 (id int);"),
                Migration(2, "bad", "CREATE TABLE t2 (id int); SELECT no_such_function();"),
            ]
            with pytest.raises(asyncpg.UndefinedFunctionError):
                await apply_migrations(conn, steps)
            versions = await conn.fetch("SELECT version FROM schema_migrations")
            assert [r["version"] for r in versions] == [1]
            t2 = await conn.fetchval("SELECT to_regclass('t2')")
            assert t2 is None  # the half-applied migration rolled back whole
        finally:
            await conn.close()
    finally:
        await drop_database(pg_server_dsn, name)
