"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import State

from server.resources import resources_of

__all__ = ["healthz", "readyz"]

_PUBLIC: dict[str, Any] = {"public": True, "exclude_from_auth": True}


class Readiness(msgspec.Struct, frozen=True):
    status: str
    database: str
    blob_store: str


@get("/healthz", opt=_PUBLIC, tags=["health"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", opt=_PUBLIC, tags=["health"], summary="The database and blob store are reachable")
async def readyz(state: State) -> Response[Readiness]:
    res = resources_of(state)

    async def database() -> str:
        try:
            async with asyncio.timeout(3):
                async with res.pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
        except Exception:  # any failure means "not ready"; the reason is in the server log
            return "unreachable"
        return "ok"

    async def blobs() -> str:
        try:
            async with asyncio.timeout(3):
                await res.blobs.check()
        except Exception:
            return "unreachable"
        return "ok"

    db_status, blob_status = await asyncio.gather(database(), blobs())
    ready = db_status == "ok" and blob_status == "ok"
    return Response(
        Readiness("ready" if ready else "not ready", db_status, blob_status),
        status_code=200 if ready else 503,
    )
