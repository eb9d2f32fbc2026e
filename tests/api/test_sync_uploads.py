"""Large and direct-to-object-storage attachment uploads, with interruptions."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from tests.api.conftest import make_actor
from tests.api.sync_support import Client, new_phone

pytestmark = pytest.mark.db

SIZE = 50 * 1024 * 1024 + 4321


def chunk(index: int, part_size: int) -> bytes:
    """Part ``index`` of a deterministic pseudo-random file, made on demand (never all at once)."""
    length = min(part_size, SIZE - index * part_size)
    return random.Random(index).randbytes(length)


def file_sha256(part_size: int) -> str:
    digest = hashlib.sha256()
    for i in range(-(-SIZE // part_size)):
        digest.update(chunk(i, part_size))
    return digest.hexdigest()


async def test_50_mb_upload_interrupted_twice(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    probe = await client.post(
        "/v1/sync/attachments",
        json={"sha256": "0" * 64, "size_bytes": SIZE, "media_type": "video/mp4"},
        headers=phone.headers,
    )
    part_size = probe.json()["part_size"]
    sha = file_sha256(part_size)
    declared = {"sha256": sha, "size_bytes": SIZE, "media_type": "video/mp4"}
    url = f"/v1/sync/attachments/{sha}"

    async def put(i: int, body: bytes) -> httpx.Response:
        return await client.put(f"{url}/parts/{i}", content=body, headers=phone.headers)

    status = (await client.post("/v1/sync/attachments", json=declared,
                                headers=phone.headers)).json()  # fmt: skip
    parts = status["parts"]
    assert status["missing"] == list(range(parts))
    sent = 0
    # First attempt: two parts, then the connection dies in the middle of the third.
    for i in (0, 1):
        r = await put(i, chunk(i, part_size))
        assert r.status_code == 200, r.text
        sent += 1
    cut = await put(2, chunk(2, part_size)[:1000])
    assert cut.status_code == 422  # a truncated part is refused, not stored
    # Second attempt after resuming: only what is missing, and dies again.
    status = (await client.get(url, headers=phone.headers)).json()
    assert status["missing"] == list(range(2, parts))
    for i in status["missing"][:2]:
        r = await put(i, chunk(i, part_size))
        assert r.status_code == 200
        sent += 1
    # Third attempt finishes.
    status = (await client.post("/v1/sync/attachments", json=declared,
                                headers=phone.headers)).json()  # fmt: skip
    assert status["missing"] == list(range(4, parts))
    last = None
    for i in status["missing"]:
        last = await put(i, chunk(i, part_size))
        assert last.status_code == 200
        sent += 1
    assert last is not None
    assert last.json()["complete"] is True
    assert sent == parts  # no finished part was ever sent twice
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT size_bytes FROM blobs WHERE sha256 = $1", sha)
    assert stored == SIZE


@pytest.mark.s3
async def test_parts_go_straight_to_object_storage(
    s3_client: AsyncTestClient[Litestar], pool: asyncpg.Pool
) -> None:
    staff = await make_actor(s3_client, pool, Role.CASE_MANAGER)
    phone = await new_phone(s3_client, staff)
    data = random.Random(5).randbytes(12 * 1024 * 1024 + 17)
    sha = hashlib.sha256(data).hexdigest()
    declared = {"sha256": sha, "size_bytes": len(data), "media_type": "video/mp4"}
    status = (await s3_client.post("/v1/sync/attachments", json=declared,
                                   headers=phone.headers)).json()  # fmt: skip
    size = status["part_size"]
    assert set(map(int, status["part_urls"])) == set(status["missing"])
    async with httpx.AsyncClient() as s3:
        first = status["part_urls"]["0"]
        assert (await s3.put(first, content=data[:size])).status_code == 200
        # Interrupted; resuming gives fresh URLs for the missing parts only.
        resumed = (await s3_client.get(f"/v1/sync/attachments/{sha}", headers=phone.headers)).json()
        assert resumed["missing"] == list(range(1, status["parts"]))
        for index, url in resumed["part_urls"].items():
            i = int(index)
            assert (await s3.put(url, content=data[i * size : (i + 1) * size])).status_code == 200
    done = (await s3_client.get(f"/v1/sync/attachments/{sha}", headers=phone.headers)).json()
    assert done["complete"] is True, (done["missing"], list(done["part_urls"]))
    assert done["part_urls"] == {}


async def test_a_part_streaming_in_holds_no_database_connection(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A phone on a slow network may take minutes to send one part. While its bytes stream in,
    the request must not hold a pooled database connection: a handful of such uploads would
    otherwise take the whole pool and stall every other request (pushes, pulls, staff). The
    request is driven at the ASGI level, so the body arrives piece by piece as the app asks."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    data = random.Random(7).randbytes(300_000)
    sha = hashlib.sha256(data).hexdigest()
    declared = {"sha256": sha, "size_bytes": len(data), "media_type": "image/jpeg"}
    started = await client.post("/v1/sync/attachments", json=declared, headers=phone.headers)
    assert started.status_code == 200, started.text
    app_pool = client.app.state.resources.pool
    pieces = [data[i : i + 100_000] for i in range(0, len(data), 100_000)]
    held_while_streaming: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        held_while_streaming.append(app_pool.get_size() - app_pool.get_idle_size())
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(k.lower().encode(), v.encode()) for k, v in phone.headers.items()]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT",
        "scheme": "http", "path": f"/v1/sync/attachments/{sha}/parts/0", "raw_path": b"",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "headers": [*headers, (b"content-length", str(len(data)).encode())],
    }  # fmt: skip
    # In the loop the app (and its pool) runs in, as the test client's own requests are.
    client.blocking_portal.call(client.app, scope, receive, send)

    assert sent[0]["status"] == 200, sent
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert msgspec.json.decode(body)["complete"] is True
    assert held_while_streaming == [0, 0, 0]
