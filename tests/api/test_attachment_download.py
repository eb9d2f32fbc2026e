"""The case team downloads a report's attachments (GET /v1/reports/{id}/attachments/{sha256}).

Reports are pushed and their files uploaded by enrolled phones through the sync routes, as in
production; the erased case goes through the retention job the retention tests use.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import uuid
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from server.resources import resources_of
from server.retention import run_retention
from server.settings import Settings
from tests.api.asgi import get_scope
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, Phone, create, new_phone, push, report
from tests.api.test_retention import (
    RETENTION_DAYS,
    backdate_closing,
    closed_case,
    run_job,
    set_retention,
)

__all__: list[str] = []

pytestmark = pytest.mark.db

PROBLEM = "urn:fairwatch:problem:"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def declared(
    data: bytes, media_type: str = "image/jpeg", *, sensitive: bool = False
) -> dict[str, Any]:
    return {"sha256": sha(data), "size_bytes": len(data), "media_type": media_type,
            "sensitive": sensitive}  # fmt: skip


async def upload(client: Client, phone: Phone, data: bytes, media_type: str = "image/jpeg") -> None:
    """Upload ``data`` through the sync routes, part by part, as a phone does."""
    info = declared(data, media_type)
    del info["sensitive"]
    r = await client.post("/v1/sync/attachments", json=info, headers=phone.headers)
    assert r.status_code == 200, r.text
    status = r.json()
    size = status["part_size"]
    for index in status["missing"]:
        r = await client.put(
            f"/v1/sync/attachments/{info['sha256']}/parts/{index}",
            content=data[index * size : (index + 1) * size],
            headers=phone.headers,
        )
        assert r.status_code == 200, r.text
    assert r.json()["complete"] is True


def url(report_id: str | uuid.UUID, sha256: str) -> str:
    return f"/v1/reports/{report_id}/attachments/{sha256}"


class Org(msgspec.Struct):
    manager: Actor
    admin: Actor
    analyst: Actor
    phone: Phone


async def new_org(client: Client, pool: asyncpg.Pool) -> Org:
    slug = f"dl-{uuid.uuid4().hex[:8]}"
    manager = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    analyst = await make_actor(client, pool, Role.ANALYST, org_slug=slug)
    return Org(manager, admin, analyst, await new_phone(client, manager))


async def report_with(client: Client, phone: Phone, *attachments: dict[str, Any]) -> str:
    body = report(attachments=list(attachments))
    result = await push(client, phone, [create(phone, body)])
    assert [r["status"] for r in result["results"]] == ["applied"], result
    report_id: str = body["id"]
    return report_id


async def downloads(pool: asyncpg.Pool, org_id: uuid.UUID) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT actor_id, object_kind, object_id, detail FROM audit_log"
            " WHERE org_id = $1 AND action = 'report.attachment_download' ORDER BY seq",
            org_id,
        )
    return [(r["actor_id"], r["object_kind"], r["object_id"], msgspec.json.decode(r["detail"]))
            for r in rows]  # fmt: skip


async def test_a_case_manager_downloads_the_uploaded_file(
    client: Client, pool: asyncpg.Pool
) -> None:
    org = await new_org(client, pool)
    photo = secrets.token_bytes(70_000)
    report_id = await report_with(client, org.phone, declared(photo))
    await upload(client, org.phone, photo)

    r = await client.get(url(report_id, sha(photo)), headers=org.manager.headers)
    assert r.status_code == 200, r.text
    assert r.content == photo
    assert sha(r.content) == sha(photo)
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["content-length"] == str(len(photo))
    assert r.headers["content-disposition"] == f'attachment; filename="{sha(photo)}.jpg"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["etag"] == f'"{sha(photo)}"'
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["accept-ranges"] == "none"
    assert await downloads(pool, org.manager.org_id) == [
        (str(org.manager.user_id), "report", report_id, {"sha256": sha(photo)})
    ]

    # The client already holds it: 304, no body, nothing more to audit.
    for tag in (f'"{sha(photo)}"', f'W/"{sha(photo)}"', f'"{"0" * 64}", "{sha(photo)}"', "*"):
        again = await client.get(
            url(report_id, sha(photo)), headers={**org.manager.headers, "If-None-Match": tag}
        )
        assert again.status_code == 304, (tag, again.text)
        assert again.content == b""
        assert again.headers["etag"] == f'"{sha(photo)}"'
        assert again.headers["cache-control"] == "private, no-store"
    stale = await client.get(
        url(report_id, sha(photo)), headers={**org.manager.headers, "If-None-Match": '"other"'}
    )
    assert stale.status_code == 200
    assert stale.content == photo
    assert len(await downloads(pool, org.manager.org_id)) == 2
    # A Range request is answered with the whole file (ranges are not served).
    ranged = await client.get(
        url(report_id, sha(photo)), headers={**org.manager.headers, "Range": "bytes=0-99"}
    )
    assert (ranged.status_code, ranged.content) == (200, photo)


async def test_a_declared_type_that_could_render_goes_out_as_opaque_bytes(
    client: Client, pool: asyncpg.Pool
) -> None:
    org = await new_org(client, pool)
    page = b"<html><script>alert(document.cookie)</script></html>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    report_id = await report_with(
        client, org.phone, declared(page, "text/html"), declared(svg, "image/svg+xml")
    )
    await upload(client, org.phone, page, "text/html")
    await upload(client, org.phone, svg, "image/svg+xml")
    for data in (page, svg):
        r = await client.get(url(report_id, sha(data)), headers=org.manager.headers)
        assert r.status_code == 200, r.text
        assert r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == f'attachment; filename="{sha(data)}.bin"'
        assert r.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in r.headers["content-security-policy"]


async def test_another_organisation_gets_404_exactly_like_a_missing_attachment(
    client: Client, pool: asyncpg.Pool
) -> None:
    org, other = await new_org(client, pool), await new_org(client, pool)
    photo, elsewhere = secrets.token_bytes(5000), secrets.token_bytes(6000)
    report_id = await report_with(client, org.phone, declared(photo))
    second_report = await report_with(client, org.phone, declared(elsewhere))
    await upload(client, org.phone, photo)
    await upload(client, org.phone, elsewhere)
    # The other organisation holds the same bytes, on a report of its own.
    own_report = await report_with(client, other.phone, declared(photo))
    await upload(client, other.phone, photo)
    own = await client.get(url(own_report, sha(photo)), headers=other.manager.headers)
    assert (own.status_code, own.content) == (200, photo)

    def answer(r: Any) -> tuple[int, dict[str, Any]]:
        body = r.json()
        body.pop("instance")
        return r.status_code, body

    missing = answer(await client.get(url(report_id, "ab" * 32), headers=org.manager.headers))
    assert missing[0] == 404
    assert missing[1]["type"] == PROBLEM + "not-found"
    for caller in (other.manager, other.admin):
        for path in (url(report_id, sha(photo)), url(uuid.uuid4(), sha(photo))):
            assert answer(await client.get(path, headers=caller.headers)) == missing, path
    # A hash the organisation holds, but this report does not declare.
    assert (
        answer(await client.get(url(report_id, sha(elsewhere)), headers=org.manager.headers))
        == missing
    )
    assert (
        answer(await client.get(url(second_report, sha(photo)), headers=org.manager.headers))
        == missing
    )
    assert await downloads(pool, org.manager.org_id) == []


async def test_a_sensitive_attachment_needs_a_role_that_sees_sensitive_fields(
    client: Client, pool: asyncpg.Pool
) -> None:
    org = await new_org(client, pool)
    face, receipt = secrets.token_bytes(4000), secrets.token_bytes(3000)
    report_id = await report_with(
        client,
        org.phone,
        declared(face, "image/png", sensitive=True),
        declared(receipt, "application/pdf"),
    )
    await upload(client, org.phone, face, "image/png")
    await upload(client, org.phone, receipt, "application/pdf")

    r = await client.get(url(report_id, sha(face)), headers=org.admin.headers)
    assert r.status_code == 403, r.text
    assert r.json()["type"] == PROBLEM + "forbidden"
    assert "sensitive" in r.json()["detail"]
    r = await client.get(url(report_id, sha(receipt)), headers=org.admin.headers)
    assert (r.status_code, r.content) == (200, receipt)
    assert r.headers["content-type"] == "application/pdf"
    r = await client.get(url(report_id, sha(face)), headers=org.manager.headers)
    assert (r.status_code, r.content) == (200, face)
    # Analysts never see attachments, sensitive or not.
    for data in (face, receipt):
        r = await client.get(url(report_id, sha(data)), headers=org.analyst.headers)
        assert r.status_code == 403, r.text
    audited = await downloads(pool, org.manager.org_id)
    assert [(actor, detail["sha256"]) for actor, _, _, detail in audited] == [
        (str(org.admin.user_id), sha(receipt)),
        (str(org.manager.user_id), sha(face)),
    ]


async def test_an_attachment_not_yet_uploaded_is_409(client: Client, pool: asyncpg.Pool) -> None:
    org = await new_org(client, pool)
    video = random.Random(3).randbytes(9 * 1024 * 1024)  # two parts
    report_id = await report_with(client, org.phone, declared(video, "video/mp4"))
    r = await client.get(url(report_id, sha(video)), headers=org.manager.headers)
    assert r.status_code == 409, r.text
    assert r.json()["type"] == PROBLEM + "attachment-not-yet-uploaded"
    assert "not yet uploaded" in r.json()["title"]
    # Half of it is in: still not downloadable.
    info = declared(video, "video/mp4")
    del info["sensitive"]
    status = (await client.post("/v1/sync/attachments", json=info,
                                headers=org.phone.headers)).json()  # fmt: skip
    assert status["parts"] == 2
    part = await client.put(
        f"/v1/sync/attachments/{sha(video)}/parts/0",
        content=video[: status["part_size"]],
        headers=org.phone.headers,
    )
    assert part.status_code == 200, part.text
    r = await client.get(url(report_id, sha(video)), headers=org.manager.headers)
    assert r.status_code == 409, r.text
    assert await downloads(pool, org.manager.org_id) == []


async def test_an_attachment_erased_by_retention_is_410(client: Client, pool: asyncpg.Pool) -> None:
    org = await new_org(client, pool)
    await set_retention(client, org.admin)
    photo = secrets.token_bytes(2500)
    body = report(attachments=[declared(photo)])
    case_id, report_id = await closed_case(client, org.manager, org.phone, body)
    await upload(client, org.phone, photo)
    r = await client.get(url(report_id, sha(photo)), headers=org.manager.headers)
    assert (r.status_code, r.content) == (200, photo)
    await backdate_closing(pool, case_id, RETENTION_DAYS + 10)
    blobs = resources_of(client.app.state).blobs

    # The redaction commits first; the bytes leave the store in a later step of the job.
    async with pool.acquire() as conn, conn.transaction():
        assert await run_retention(conn) == {str(org.admin.org_id): 1}
    assert await blobs.exists(sha(photo))
    r = await client.get(url(report_id, sha(photo)), headers=org.manager.headers)
    assert r.status_code == 410, r.text
    assert r.json()["type"] == PROBLEM + "attachment-erased"

    await run_job(client, pool)
    assert not await blobs.exists(sha(photo))
    for extra in ({}, {"If-None-Match": "*"}):  # even a client that kept the file is told
        r = await client.get(url(report_id, sha(photo)), headers={**org.manager.headers, **extra})
        assert r.status_code == 410, r.text
        assert r.json()["type"] == PROBLEM + "attachment-erased"
    assert len(await downloads(pool, org.manager.org_id)) == 1


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, "not-a-hash"])
async def test_a_malformed_hash_is_422(client: Client, pool: asyncpg.Pool, bad: str) -> None:
    org = await new_org(client, pool)
    r = await client.get(url(uuid.uuid4(), bad), headers=org.manager.headers)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == PROBLEM + "validation"
    assert [e["field"] for e in body["errors"]] == ["sha256"]


async def test_a_large_file_is_streamed_in_pieces(client: Client, pool: asyncpg.Pool) -> None:
    org = await new_org(client, pool)
    video = random.Random(11).randbytes(3 * 1024 * 1024 + 12345)
    report_id = await report_with(client, org.phone, declared(video, "video/mp4"))
    await upload(client, org.phone, video, "video/mp4")
    start: dict[str, Any] = {}
    pieces: list[bytes] = []
    await _get_over_asgi(client, url(report_id, sha(video)), org.manager.headers, start, pieces)
    assert start["status"] == 200
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["content-length"] == str(len(video))
    assert headers["content-type"] == "video/mp4"
    assert len(pieces) > 4  # a whole-file answer would be one event
    assert max(len(p) for p in pieces) < len(video) // 4
    assert b"".join(pieces) == video


async def test_a_file_corrupted_at_rest_never_arrives_whole(
    client: Client, pool: asyncpg.Pool, api_settings: Settings
) -> None:
    org = await new_org(client, pool)
    photo = secrets.token_bytes(1024 * 1024 + 3)
    report_id = await report_with(client, org.phone, declared(photo))
    await upload(client, org.phone, photo)
    digest = sha(photo)
    stored = api_settings.blob_dir / "sha256" / digest[:2] / digest[2:4] / digest
    assert stored.read_bytes() == photo
    stored.write_bytes(photo[:-1] + bytes([photo[-1] ^ 1]))  # one bit flipped, same length

    start: dict[str, Any] = {}
    pieces: list[bytes] = []
    with pytest.raises(Exception, match="after response started"):
        await _get_over_asgi(client, url(report_id, digest), org.manager.headers, start, pieces)
    assert start["status"] == 200
    received = b"".join(pieces)
    assert len(received) < len(photo)  # short of its Content-Length: a broken transfer
    assert photo.startswith(received)


async def _get_over_asgi(
    client: Client, path: str, headers: dict[str, str], start: dict[str, Any], pieces: list[bytes]
) -> None:
    """GET ``path`` straight over ASGI, on the loop that owns the app's pool, filling ``start``
    (the response start event) and ``pieces`` (each body event's bytes) as they are sent.

    The test client would hand back the joined body; here each event of the response is seen.
    """
    portal = client.blocking_portal
    await anyio.to_thread.run_sync(portal.call, _asgi_get, client.app, path, headers, start, pieces)


async def _asgi_get(
    app: Any, path: str, headers: dict[str, str], start: dict[str, Any], pieces: list[bytes]
) -> None:
    done = anyio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # as a server does: the client "leaves" once the response is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            if message.get("body"):
                pieces.append(message["body"])
            if not message.get("more_body", False):
                done.set()

    scope = get_scope(path, headers)
    await app(scope, receive, send)


@pytest.mark.s3
async def test_a_download_from_object_storage(
    s3_client: AsyncTestClient[Litestar], pool: asyncpg.Pool
) -> None:
    org = await new_org(s3_client, pool)
    recording = random.Random(7).randbytes(9 * 1024 * 1024 + 5)  # two parts
    report_id = await report_with(s3_client, org.phone, declared(recording, "audio/amr"))
    await upload(s3_client, org.phone, recording, "audio/amr")
    assert await resources_of(s3_client.app.state).blobs.exists(sha(recording))

    r = await s3_client.get(url(report_id, sha(recording)), headers=org.manager.headers)
    assert r.status_code == 200, r.text
    assert sha(r.content) == sha(recording)
    assert r.content == recording
    assert r.headers["content-length"] == str(len(recording))
    assert r.headers["content-type"] == "audio/amr"
    again = await s3_client.get(
        url(report_id, sha(recording)),
        headers={**org.manager.headers, "If-None-Match": f'"{sha(recording)}"'},
    )
    assert again.status_code == 304
    assert len(await downloads(pool, org.manager.org_id)) == 1
