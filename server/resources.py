"""What a running app holds: the settings, the database pool and the blob store."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from litestar.datastructures import State
from litestar.di import NamedDependency

from server.settings import Settings
from storage.blobs import BlobStore

__all__ = ["Db", "Resources", "provide_conn", "resources_of"]


@dataclass(slots=True)
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    blobs: BlobStore
    dsn: str


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
