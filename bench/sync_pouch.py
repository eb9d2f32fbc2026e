"""The PouchDB side of the comparison: ``_bulk_docs`` pushes and paged ``_changes`` pulls.

Documents are the same report bodies the Fairwatch devices push (``_id`` = report id, plus the
mutation's envelope fields), sent in the same batches from the same number of concurrent clients.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec

__all__ = ["bulk_docs_body", "create_database", "pull_changes", "push_bulk_docs"]


def bulk_docs_body(mutations: list[dict[str, Any]]) -> bytes:
    docs = []
    for m in mutations:
        envelope = {k: v for k, v in m.items() if k != "report"}
        docs.append({"_id": m["report"]["id"], **m["report"], "mutation": envelope})
    return msgspec.json.encode({"docs": docs})


async def create_database(client: httpx.AsyncClient, name: str) -> None:
    r = await client.put(f"/{name}")
    if r.status_code not in (201, 202):
        raise RuntimeError(f"cannot create {name}: {r.status_code} {r.text[:300]}")


async def push_bulk_docs(client: httpx.AsyncClient, db: str, work: list[list[bytes]]) -> float:
    """One list of ``_bulk_docs`` bodies per client, all clients at once; wall seconds."""

    async def one_client(bodies: list[bytes]) -> None:
        for body in bodies:
            r = await client.post(
                f"/{db}/_bulk_docs", content=body, headers={"Content-Type": "application/json"}
            )
            if r.status_code != 201:
                raise RuntimeError(f"_bulk_docs failed: {r.status_code} {r.text[:300]}")
            failed = [x for x in msgspec.json.decode(r.content) if not x.get("ok")]
            if failed:
                raise RuntimeError(f"_bulk_docs refused: {failed[0]}")

    start = time.perf_counter()
    await asyncio.gather(*(one_client(b) for b in work))
    return time.perf_counter() - start


async def pull_changes(
    client: httpx.AsyncClient, db: str, *, limit: int = 1000
) -> tuple[float, int, int]:
    """Every change with its document, ``limit`` per page via ``since``; (seconds, changes, bytes)."""
    since: object = 0
    total = wire = 0
    start = time.perf_counter()
    while True:
        r = await client.get(
            f"/{db}/_changes",
            params={"since": str(since), "limit": str(limit), "include_docs": "true"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"_changes failed: {r.status_code} {r.text[:300]}")
        wire += len(r.content)
        page = msgspec.json.decode(r.content)
        total += len(page["results"])
        since = page["last_seq"]
        if len(page["results"]) < limit:
            return time.perf_counter() - start, total, wire
