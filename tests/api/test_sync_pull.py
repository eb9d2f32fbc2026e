"""Enrollment, pull, revocation, attachments and protection at rest, through the real app."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.taxonomy import load_taxonomy
from sync.changes import ReportStatusChange, TaskChange, TaxonomyChange
from sync.codec import CONTENT_TYPES, WireFormat, decode, encode
from sync.messages import PullRequest, PullResponse
from tests.api.conftest import make_actor
from tests.api.sync_support import (
    Client,
    amend,
    create,
    enroll,
    enrollment_code,
    new_monitor,
    new_phone,
    pull_all,
    push,
    report,
)

pytestmark = pytest.mark.db


async def test_enrollment_codes_are_single_use_and_expire(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    monitor = await new_monitor(client, staff)
    code = await enrollment_code(client, staff, monitor)
    phone = await enroll(client, code.lower().replace("-", " "))  # typed by hand
    assert phone.monitor_id == monitor
    assert phone.credential.startswith("fwd_")
    reused = await client.post("/v1/sync/enroll", json={"code": code})
    assert reused.status_code == 401
    assert reused.json()["type"] == "urn:fairwatch:problem:invalid-enrollment-code"
    stale = await enrollment_code(client, staff, monitor)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE enrollment_codes SET expires_at = now() - interval '1 s'")
        hashes = await conn.fetch("SELECT code_hash FROM enrollment_codes")
        creds = await conn.fetch("SELECT credential_hash FROM devices")
    assert (await client.post("/v1/sync/enroll", json={"code": stale})).status_code == 401
    assert all(code.encode() not in bytes(h["code_hash"]) for h in hashes)
    assert all(phone.credential.encode() not in bytes(c["credential_hash"]) for c in creds)
    other = await make_actor(client, pool, Role.ORG_ADMIN)
    crossed = await client.post(f"/v1/monitors/{monitor}/enrollment-codes", headers=other.headers)
    assert crossed.status_code == 404


async def test_first_pull_brings_taxonomy_and_own_reports_only(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    mine, theirs = await new_phone(client, staff), await new_phone(client, staff)
    body = report()
    await push(client, mine, [create(mine, body)])
    await push(client, theirs, [create(theirs, report())])
    changes, cursor = await pull_all(client, mine, limit=7)
    taxonomy = [c for c in changes if c["kind"] == "taxonomy"]
    assert {c["code"] for c in taxonomy} == {c.code for c in load_taxonomy().categories}
    assert all(set(c["labels"]) >= {"en", "ne", "id", "tl", "ar", "th"} for c in taxonomy)
    statuses = [c for c in changes if c["kind"] == "report_status"]
    assert [s["report_id"] for s in statuses] == [body["id"]]
    assert statuses[0]["report_version"] == 1
    # Nothing new: an empty page, same position.
    again, _ = await pull_all(client, mine, cursor)
    assert again == []
    await push(client, mine, [amend(mine, body["id"], 1, {"severity": 5})])
    after, _ = await pull_all(client, mine, cursor)
    assert [(c["kind"], c["report_version"]) for c in after] == [("report_status", 2)]


async def test_tampered_cursor_asks_for_a_reset(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    _, cursor = await pull_all(client, phone)
    assert cursor is not None
    forged = cursor[:-4] + ("AAAA" if not cursor.endswith("AAAA") else "BBBB")
    for token in (forged, "not-a-cursor", "x" * 600):
        r = await client.post(
            "/v1/sync/pull",
            json={"device_id": str(phone.device_id), "cursor": token},
            headers=phone.headers,
        )
        if r.status_code == 200:
            assert r.json()["reset_required"] is True
            assert r.json()["reset_reason"] == "cursor_invalid"
        else:
            assert r.status_code == 422  # longer than any cursor we issue


async def test_revoked_device_is_told_to_wipe(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    revoked = await client.post(
        f"/v1/devices/{phone.device_id}/revoke", json={"reason": "lost"}, headers=staff.headers
    )
    assert revoked.status_code == 200
    for method, path in (("POST", "/v1/sync/pull"), ("POST", "/v1/sync/push")):
        r = await client.request(method, path, json={}, headers=phone.headers)
        assert r.status_code == 403
        body = r.json()
        assert body["type"] == "urn:fairwatch:problem:device-revoked"
        assert body["wipe"] is True
        assert body["reason"] == "lost"
    other = await make_actor(client, pool, Role.CASE_MANAGER)
    r = await client.post(
        f"/v1/devices/{phone.device_id}/revoke", json={"reason": "x"}, headers=other.headers
    )
    assert r.status_code == 404


async def test_sensitive_fields_are_not_in_the_database_in_clear(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    body = report()
    await push(client, phone, [create(phone, body)])
    async with pool.acquire() as conn:
        dump = []
        for table in ("reports", "report_versions", "sync_mutations", "sync_changes", "jobs"):
            rows = await conn.fetch(f"SELECT * FROM {table}")  # noqa: S608 - fixed names
            dump += [repr(dict(r)) for r in rows]
    text = "\n".join(dump)
    for secret in ("Ram Bahadur Thapa", "PA1234567", "Dorm 4, Block B"):
        assert secret not in text
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert view.status_code == 200
    assert view.json()["report"]["worker"]["passport_number"] == "PA1234567"
    assert view.json()["report"]["location"]["place"] == "Dorm 4, Block B"
    async with pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'report.read_sensitive'"
            " AND object_id = $1",
            body["id"],
        )
    assert audited == 1
    analyst = await make_actor(client, pool, Role.ANALYST)
    denied = await client.get(f"/v1/reports/{body['id']}", headers=analyst.headers)
    assert denied.status_code == 403


async def test_resumable_attachment_upload(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    data = os.urandom(11 * 1024 * 1024 + 123)
    sha = hashlib.sha256(data).hexdigest()
    declared = {"sha256": sha, "size_bytes": len(data), "media_type": "video/mp4"}
    body = report(attachments=[declared])
    await push(client, phone, [create(phone, body)])
    changes, cursor = await pull_all(client, phone)
    [status] = [c for c in changes if c["kind"] == "report_status"]
    assert status["missing_attachments"] == [sha]

    start = await client.post("/v1/sync/attachments", json=declared, headers=phone.headers)
    assert start.status_code == 200, start.text
    plan = start.json()
    assert plan["complete"] is False
    assert plan["parts"] >= 2
    size = plan["part_size"]

    def part(i: int) -> bytes:
        return data[i * size : (i + 1) * size]

    url = f"/v1/sync/attachments/{sha}/parts"
    first = await client.put(f"{url}/0", content=part(0), headers=phone.headers)
    assert first.status_code == 200, first.text
    # Interrupted: ask where it stands and send only what is missing.
    resumed = await client.get(f"/v1/sync/attachments/{sha}", headers=phone.headers)
    assert resumed.json()["missing"] == list(range(1, plan["parts"]))
    wrong = await client.put(f"{url}/1", content=b"short", headers=phone.headers)
    assert wrong.status_code == 422
    last = None
    for i in resumed.json()["missing"]:
        last = await client.put(f"{url}/{i}", content=part(i), headers=phone.headers)
        assert last.status_code == 200, last.text
    assert last is not None
    assert last.json()["complete"] is True
    after, _ = await pull_all(client, phone, cursor)
    [update] = [c for c in after if c["kind"] == "report_status"]
    assert update["missing_attachments"] == []
    assert update["version"] > status["version"]

    # Another organisation knowing the hash must still upload the bytes itself.
    other_staff = await make_actor(client, pool, Role.CASE_MANAGER)
    other = await new_phone(client, other_staff)
    theirs = await client.post("/v1/sync/attachments", json=declared, headers=other.headers)
    assert theirs.json()["complete"] is False


async def test_upload_with_wrong_hash_keeps_nothing(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    data = os.urandom(2048)
    claimed = hashlib.sha256(b"something else" + data[14:]).hexdigest()
    declared = {"sha256": claimed, "size_bytes": len(data), "media_type": "image/jpeg"}
    start = await client.post("/v1/sync/attachments", json=declared, headers=phone.headers)
    assert start.status_code == 200
    r = await client.put(f"/v1/sync/attachments/{claimed}/parts/0", content=data,
                         headers=phone.headers)  # fmt: skip
    assert r.status_code == 422
    assert r.json()["type"] == "urn:fairwatch:problem:hash-mismatch"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM blobs") == 0
        assert await conn.fetchval("SELECT count(*) FROM blob_uploads") == 0


async def test_device_sync_health_is_visible_to_admins(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    phone = await new_phone(client, admin)
    mutation = create(phone, report())
    r = await client.post(
        "/v1/sync/push",
        json={
            "device_id": str(phone.device_id),
            "sent_at": "2020-01-01T00:00:00Z",  # a phone whose clock is years behind
            "outbox_depth": 17,
            "mutations": [mutation],
        },
        headers=phone.headers,
    )
    assert r.status_code == 200
    assert r.json()["clock_offset_seconds"] > 3600 * 24 * 365
    await pull_all(client, phone)
    devices = await client.get("/v1/devices", headers=admin.headers)
    [device] = devices.json()
    assert device["id"] == str(phone.device_id)
    assert device["outbox_depth"] == 17
    assert device["last_push_at"] is not None
    assert device["last_pull_at"] is not None
    assert device["clock_offset_seconds"] > 3600 * 24 * 365
    async with pool.acquire() as conn:
        flags = await conn.fetchval("SELECT time_flags FROM reports")
    assert "clock_skew_large" in flags
    assert uuid.UUID(device["monitor_id"]) == phone.monitor_id


async def test_stored_bodies_reach_devices_alike_in_json_and_msgpack(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    body = report()
    await push(client, phone, [create(phone, body)])
    # A task stored in another JSON layout (as jsonb left rows before migration 0010: keys
    # reordered, spaces after separators); pages pass stored bodies through, so it must still
    # reach the device as the same typed change.
    task = TaskChange(
        version=1,
        changed_at=dt.datetime(2025, 3, 1, 9, 5, 0, 123456, tzinfo=dt.UTC),
        task_id=uuid.uuid4(),
        report_id=uuid.UUID(body["id"]),
        prompt="Which agency took the fee? कुन एजेन्सी?",
        due_at=dt.datetime(2025, 3, 8, tzinfo=dt.UTC),
    )
    fields = msgspec.json.decode(msgspec.json.encode(task))
    relaid = json.dumps(dict(sorted(fields.items(), key=lambda kv: (len(kv[0]), kv[0]))))
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sync_changes (org_id, audience, record_kind, record_id, version, body) "
            "VALUES ($1, $2, 'task', $3, 1, $4)",
            staff.org_id,
            f"monitor:{phone.monitor_id}",
            str(task.task_id),
            relaid,
        )
    pages = {}
    for fmt, encoding in ((WireFormat.JSON, "identity"), (WireFormat.MSGPACK, "zstd")):
        media = CONTENT_TYPES[fmt]
        headers = {"Content-Type": media, "Accept": media, "Accept-Encoding": encoding}
        r = await client.post(
            "/v1/sync/pull",
            content=encode(PullRequest(device_id=phone.device_id, limit=1000), fmt),
            headers={**phone.headers, **headers},
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith(media)
        assert r.headers.get("content-encoding", "identity") == encoding
        pages[fmt] = decode(PullResponse, r.content, fmt)  # httpx inflated the zstd body
    assert pages[WireFormat.JSON].changes == pages[WireFormat.MSGPACK].changes
    kinds = [type(c) for c in pages[WireFormat.JSON].changes]
    assert kinds.count(TaxonomyChange) == len(load_taxonomy().categories)
    assert [c for c in pages[WireFormat.JSON].changes if isinstance(c, TaskChange)] == [task]
    [status] = [c for c in pages[WireFormat.JSON].changes if isinstance(c, ReportStatusChange)]
    assert str(status.report_id) == body["id"]


async def test_last_pull_is_noted_at_the_start_and_end_of_a_sync(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)

    async def page(cursor: str | None) -> tuple[dict[str, Any], object]:
        r = await client.post(
            "/v1/sync/pull",
            json={"device_id": str(phone.device_id), "cursor": cursor, "limit": 5},
            headers=phone.headers,
        )
        assert r.status_code == 200, r.text
        async with pool.acquire() as conn:
            noted = await conn.fetchval(
                "SELECT last_pull_at FROM devices WHERE id = $1", phone.device_id
            )
        result: dict[str, Any] = r.json()
        return result, noted

    first, started = await page(None)
    assert started is not None and first["has_more"]  # the taxonomy alone takes several pages
    second, between = await page(first["next_cursor"])
    assert second["has_more"] and between == started
    cursor = second["next_cursor"]
    while True:
        last, ended = await page(cursor)
        cursor = last["next_cursor"]
        if not last["has_more"]:
            break
        assert ended == started
    assert isinstance(ended, dt.datetime) and isinstance(started, dt.datetime)
    assert ended > started
