"""Turning settings into live resources: which PostgreSQL, which blob store, a migrated schema."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from pathlib import Path

from cases.accounts import Role
from cases.taxonomy import load_taxonomy
from server.passwords import hash_password
from server.resources import Resources
from server.settings import Settings
from storage.accounts import OrgRepository, UserRepository
from storage.blobs import BlobStore, LocalBlobStore, S3BlobStore
from storage.db import connect, create_pool, ensure_database
from storage.embedded import start_embedded_postgres
from storage.feed import publish_taxonomy
from storage.keyring import Keyring, load_master_keys
from storage.migrate import Migration, apply_migrations

__all__ = [
    "DemoAccount",
    "bootstrap_demo",
    "load_keyring",
    "migrate_database",
    "open_blob_store",
    "open_resources",
    "resolve_database_url",
    "resolve_secret_key",
]

_log = logging.getLogger("fairwatch.runtime")
EMBEDDED_DATABASE = "fairwatch"


async def resolve_database_url(settings: Settings) -> str:
    """The configured PostgreSQL, or the embedded one (started on first use in this process)."""
    if settings.database_url is not None:
        return settings.database_url
    pgdata = settings.data_dir / "postgres"
    server = await asyncio.to_thread(start_embedded_postgres, pgdata)
    return await ensure_database(server.dsn(), EMBEDDED_DATABASE)


async def load_keyring(settings: Settings) -> Keyring:
    """The master keys from configuration; in development one is generated into the data dir."""
    masters = await asyncio.to_thread(
        load_master_keys,
        settings.master_key,
        settings.master_key_file,
        list(settings.previous_master_keys),
        settings.generated_master_key_file,
    )
    if masters.generated:
        _log.warning(
            "generated a new master key in %s (mode 0600): back it up, without it the "
            "encrypted fields of this database cannot be read",
            masters.source,
        )
    return Keyring(masters)


async def resolve_secret_key(settings: Settings) -> bytes:
    """The server's signing key: configured, or generated once into the data dir (development)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    return await asyncio.to_thread(_read_or_create_secret, settings.secret_key_file)


def _read_or_create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    secret = secrets.token_urlsafe(48).encode()
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
    return secret


async def open_blob_store(settings: Settings) -> BlobStore:
    if settings.s3 is not None:
        s3 = settings.s3
        store = S3BlobStore(
            endpoint=s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            bucket=s3.bucket,
            secure=s3.secure,
            region=s3.region,
        )
        await store.ensure_bucket()
        return store
    return LocalBlobStore(settings.blob_dir)


async def migrate_database(dsn: str) -> list[Migration]:
    conn = await connect(dsn)
    try:
        return await apply_migrations(conn)
    finally:
        await conn.close()


class DemoAccount:
    def __init__(self, email: str, password: str, credentials_file: Path) -> None:
        self.email = email
        self.password = password
        self.credentials_file = credentials_file


async def bootstrap_demo(dsn: str, data_dir: Path) -> DemoAccount | None:
    """On an empty database, create a demo organisation and its admin; None if not empty."""
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            # Two processes starting at once must not both create the demo org.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('fairwatch.demo'))")
            if await OrgRepository(conn).count() > 0:
                return None
            org = await OrgRepository(conn).add("demo", "Demo organisation")
            email = "admin@demo.fairwatch.org"
            password = secrets.token_urlsafe(12)
            await UserRepository(conn).add(
                org.id, email, "Demo admin", Role.ORG_ADMIN, hash_password(password)
            )
    finally:
        await conn.close()
    path = await asyncio.to_thread(_write_private, data_dir / "demo-admin.txt", email, password)
    return DemoAccount(email, password, path)


def _write_private(path: Path, email: str, password: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"email: {email}\npassword: {password}\n")
    return path


async def open_resources(settings: Settings) -> Resources:
    """Everything a process of any role needs: database pool, blob store, keys, taxonomy."""
    dsn = await resolve_database_url(settings)
    pool = await create_pool(dsn, min_size=settings.db_pool_min, max_size=settings.db_pool_max)
    try:
        blobs = await open_blob_store(settings)
        taxonomy = load_taxonomy()
        async with pool.acquire() as conn:
            await publish_taxonomy(conn, taxonomy)
        return Resources(
            settings=settings,
            pool=pool,
            blobs=blobs,
            dsn=dsn,
            keyring=await load_keyring(settings),
            taxonomy=taxonomy,
            secret_key=await resolve_secret_key(settings),
        )
    except BaseException:
        await pool.close()
        raise
