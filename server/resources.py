"""What a running app holds: the settings, the database pool and the blob store."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from litestar.datastructures import State
from litestar.di import NamedDependency

from cases.taxonomy import Taxonomy
from server.settings import Settings
from storage.blobs import BlobStore
from storage.keyring import Keyring

__all__ = ["Db", "Resources", "provide_conn", "resources_of"]


@dataclass(slots=True)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    dsn: str
    keyring: Keyring
    taxonomy: Taxonomy
    secret_key: bytes

    @property
    def cursor_key(self) -> bytes:
        # A key of its own for sync cursors, derived so rotating one purpose never touches others.
        return hmac.new(self.secret_key, b"fairwatch sync cursor v1", hashlib.sha256).digest()


def resources_of(state: State | Any) -> Resources:
    res = state.resources
    assert isinstance(res, Resources)
    return res


async def provide_conn(state: State) -> AsyncGenerator[PoolConnectionProxy, None]:
    """One pooled connection per request that needs one, returned to the pool afterwards."""
    async with resources_of(state).pool.acquire() as conn:
        yield conn


# A route parameter ``db: Db`` receives the request's pooled connection. (One concrete type:
# Litestar's signature model cannot take a union of two custom types here.)
Db = NamedDependency[PoolConnectionProxy]
