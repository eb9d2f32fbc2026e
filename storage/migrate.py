"""Forward-only numbered ``.sql`` migrations, applied in order under a PostgreSQL advisory lock.

Each file runs in its own transaction together with its bookkeeping row, so a failure leaves the
schema at the previous version. A file changed after it was applied is refused: the database would
otherwise silently differ from what the code believes.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import asyncpg
import msgspec

from storage.errors import MigrationError

__all__ = ["Migration", "apply_migrations", "load_migrations"]

# Arbitrary but fixed: every Fairwatch process migrating the same database contends on this key.
MIGRATION_LOCK_KEY = 0x4641_4952_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(package: str = "storage.migrations") -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"migration numbers must be 1..n without gaps; missing {expected:04d}"
            )
    return found


_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def apply_migrations(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply pending migrations; return those applied now. Safe to run from many processes."""
    migrations = load_migrations() if migrations is None else migrations
    # Session-level lock: a second process blocks here until the first has finished, then finds
    # nothing left to do.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(_BOOKKEEPING)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {row["version"]: row for row in rows}
        for migration in migrations:
            row = applied.get(migration.version)
            if row is not None and row["checksum"] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{row['name']}.sql was changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
        newer = sorted(v for v in applied if v > len(migrations))
        if newer:
            raise MigrationError(
                f"the database has migration {newer[-1]:04d}, newer than this code"
            )
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
