"""The retention job end to end: settings through the API, reports pushed by a phone, cases closed
through the workflow, the job run by the worker, and what it leaves in the database.

It lives with the API tests because it drives the real app (the ``client`` fixture) to build
realistic data; the assertions look straight at the tables the job rewrites.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

import asyncpg
import pytest

from cases.accounts import Role
from server.resources import resources_of
from server.retention import enqueue_retention, run_retention
from server.worker import WorkerContext, run_worker_once
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import (
    Client,
    Phone,
    amend,
    create,
    new_phone,
    pull_all,
    push,
    report,
    withdraw,
)
from tests.api.test_cases_work import case_with_phone, partner, refer, to_open

__all__: list[str] = []

pytestmark = pytest.mark.db

RETENTION_DAYS = 30


async def set_retention(client: Client, admin: Actor, *, legal_hold: bool = False) -> None:
    r = await client.put(
        "/v1/org/retention",
        json={"redact_after_days": RETENTION_DAYS, "legal_hold": legal_hold},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["redact_after_days"] == RETENTION_DAYS


async def closed_case(
    client: Client, staff: Actor, phone: Phone, body: dict[str, Any] | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """Push a report (``body``, or a fresh one) and amend it (so an earlier version is stored
    too), open a case on it and close it from triage; (case id, report id)."""
    body = body or report()
    result = await push(
        client, phone, [create(phone, body), amend(phone, body["id"], 1, {"severity": 2})]
    )
    assert [r["status"] for r in result["results"]] == ["applied", "applied"], result
    r = await client.post("/v1/cases", json={"report_ids": [body["id"]]}, headers=staff.headers)
    assert r.status_code == 201, r.text
    case: dict[str, Any] = r.json()
    steps = (
        {"to": "triage"},
        {"to": "closed", "outcome": "not_actionable", "reason": "Outside our mandate."},
    )
    for step in steps:
        r = await client.post(
            f"/v1/cases/{case['id']}/transitions",
            json={"version": case["version"], **step},
            headers=staff.headers,
        )
        assert r.status_code == 200, r.text
        case = r.json()
    assert case["status"] == "closed"
    return uuid.UUID(case["id"]), uuid.UUID(body["id"])


async def backdate_closing(pool: asyncpg.Pool, case_id: uuid.UUID, days: int) -> None:
    """Move the case's closing (timeline and last update) ``days`` into the past.

    The timeline is append-only by trigger; the test owns the database, so it lifts the trigger
    for this one statement, inside a transaction that restores it.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE case_events DISABLE TRIGGER case_events_append_only")
        moved = await conn.execute(
            "UPDATE case_events SET at = at - make_interval(days => $2) WHERE case_id = $1",
            case_id,
            days,
        )
        await conn.execute("ALTER TABLE case_events ENABLE TRIGGER case_events_append_only")
        assert moved != "UPDATE 0"
        await conn.execute(
            "UPDATE cases SET updated_at = updated_at - make_interval(days => $2) WHERE id = $1",
            case_id,
            days,
        )


async def run_job(client: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await enqueue_retention(conn)
    context = WorkerContext(resources=client.app.state.resources)
    assert await run_worker_once(pool, context=context) >= 1
    while await run_worker_once(pool, context=context):  # what it queued (matching again)
        pass
    async with pool.acquire() as conn:
        failed = await conn.fetch("SELECT kind, last_error FROM jobs WHERE state <> 'done'")
    assert not failed, failed


async def sealed_state(pool: asyncpg.Pool, report_id: uuid.UUID) -> tuple[bool, bool, list[bool]]:
    """(has sealed data, redacted_at set, sealed present per stored earlier version)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT sealed IS NOT NULL AS sealed, redacted_at IS NOT NULL AS redacted"
            " FROM reports WHERE id = $1",
            report_id,
        )
        versions = await conn.fetch(
            "SELECT sealed IS NOT NULL AS sealed FROM report_versions"
            " WHERE report_id = $1 ORDER BY version",
            report_id,
        )
    assert row is not None
    return row["sealed"], row["redacted"], [v["sealed"] for v in versions]


async def redaction_audit(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT org_id, actor_kind, actor_id, object_kind, object_id, detail"
            " FROM audit_log WHERE action = 'report.redact' ORDER BY org_id, seq"
        )


async def test_retention_redacts_only_old_closed_cases_without_hold_and_is_idempotent(
    client: Client, pool: asyncpg.Pool
) -> None:
    slug = f"ret-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    phone = await new_phone(client, staff)
    old_case, old_report = await closed_case(client, staff, phone)
    _, recent_report = await closed_case(client, staff, phone)
    await backdate_closing(pool, old_case, RETENTION_DAYS + 10)

    held_slug = f"hold-{uuid.uuid4().hex[:8]}"
    held_admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=held_slug)
    held_staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=held_slug)
    await set_retention(client, held_admin, legal_hold=True)
    held_case, held_report = await closed_case(
        client, held_staff, await new_phone(client, held_staff)
    )
    await backdate_closing(pool, held_case, RETENTION_DAYS + 10)

    for report_id in (old_report, recent_report, held_report):  # the job has something to erase
        assert await sealed_state(pool, report_id) == (True, False, [True])

    await run_job(client, pool)

    assert await sealed_state(pool, old_report) == (False, True, [False])
    assert await sealed_state(pool, recent_report) == (True, False, [True])
    assert await sealed_state(pool, held_report) == (True, False, [True])
    [entry] = await redaction_audit(pool)
    assert entry["org_id"] == admin.org_id
    assert (entry["actor_kind"], entry["actor_id"]) == ("system", "retention")
    assert (entry["object_kind"], entry["object_id"]) == ("report", str(old_report))
    assert f'"{old_case}"' in entry["detail"]

    # The redacted report still reads through the API, without its worker identity, even for a
    # case manager (the role that sees sensitive fields: the recent report still shows them).
    kept = await client.get(f"/v1/reports/{recent_report}", headers=staff.headers)
    assert kept.status_code == 200, kept.text
    assert "PA1234567" in kept.text
    r = await client.get(f"/v1/reports/{old_report}", headers=staff.headers)
    assert r.status_code == 200, r.text
    assert "Ram Bahadur Thapa" not in r.text and "PA1234567" not in r.text

    async with pool.acquire() as conn:
        before = await conn.fetch("SELECT id, sealed, redacted_at FROM reports ORDER BY id")
    await run_job(client, pool)
    async with pool.acquire() as conn:
        after = await conn.fetch("SELECT id, sealed, redacted_at FROM reports ORDER BY id")
    assert [tuple(r) for r in after] == [tuple(r) for r in before]
    assert len(await redaction_audit(pool)) == 1


async def test_retention_also_drops_referral_copies_and_sealed_conflict_values(
    client: Client, pool: asyncpg.Pool
) -> None:
    slug = f"ret-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    await set_retention(client, admin)
    case, phone = await case_with_phone(client, admin)
    case = await to_open(client, admin, case)
    sent = await refer(client, admin, case, await partner(client, admin, "legal_aid"))
    assert sent.status_code == 201, sent.text
    case_id = uuid.UUID(case["id"])
    r = await client.post(
        f"/v1/cases/{case_id}/transitions",
        json={
            "version": sent.json()["case_version"],
            "to": "closed",
            "outcome": "worker_withdrew",
            "reason": "The worker went home.",
        },
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    async with pool.acquire() as conn:
        report_id = await conn.fetchval(
            "SELECT report_id FROM case_reports WHERE case_id = $1", case_id
        )
        # Two stored conflicts as the push path writes them: one on a sensitive field (values
        # sealed), one on an ordinary field (values in the clear).
        for field, values in (
            ("worker.name", ['{"sealed": "AAAA"}', '{"sealed": "BBBB"}', '{"sealed": "CCCC"}']),
            ("severity", ['"low"', '"high"', '"medium"']),
        ):
            await conn.execute(
                "INSERT INTO report_conflicts (org_id, report_id, field, base_value, server_value,"
                " incoming_value, mutation_id, device_id)"
                " VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6::jsonb, $7, $8)",
                admin.org_id,
                report_id,
                field,
                *values,
                uuid.uuid4(),
                phone.device_id,
            )
    await backdate_closing(pool, case_id, RETENTION_DAYS + 10)
    # The matching job runs now and writes to the closed case's timeline (incident attached):
    # an event after the closing must not postpone the redaction.
    context = WorkerContext(resources=client.app.state.resources)
    assert await run_worker_once(pool, context=context) >= 1
    while await run_worker_once(pool, context=context):  # what it queued (matching again)
        pass
    async with pool.acquire() as conn:
        late = await conn.fetchval(
            "SELECT count(*) FROM case_events WHERE case_id = $1 AND to_state = 'closed'"
            " AND at > now() - interval '1 day'",
            case_id,
        )
    assert late >= 1

    await run_job(client, pool)

    async with pool.acquire() as conn:
        referral = await conn.fetchrow(
            "SELECT sealed_payload, fields FROM referrals WHERE case_id = $1", case_id
        )
        conflicts = await conn.fetch(
            "SELECT field, base_value, server_value, incoming_value FROM report_conflicts"
            " WHERE report_id = $1 ORDER BY field",
            report_id,
        )
    assert await sealed_state(pool, report_id) == (False, True, [])  # never amended
    assert referral is not None
    assert referral["sealed_payload"] is None
    assert "worker_name" in referral["fields"]  # what was sent stays on record
    assert [tuple(c) for c in conflicts] == [
        ("severity", '"low"', '"high"', '"medium"'),
        ("worker.name", None, None, None),
    ]


def declared(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data),
            "media_type": "image/jpeg"}  # fmt: skip


async def upload(client: Client, phone: Phone, data: bytes) -> None:
    info = declared(data)
    r = await client.post("/v1/sync/attachments", json=info, headers=phone.headers)
    assert r.status_code == 200, r.text
    r = await client.put(
        f"/v1/sync/attachments/{info['sha256']}/parts/0", content=data, headers=phone.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["complete"] is True


async def missing_on_device(client: Client, phone: Phone, report_id: uuid.UUID) -> list[str]:
    changes, _ = await pull_all(client, phone)
    [status] = [c for c in changes if c.get("report_id") == str(report_id)]
    missing: list[str] = status["missing_attachments"]
    return missing


async def test_retention_erases_the_attachments_of_redacted_reports(
    client: Client, pool: asyncpg.Pool
) -> None:
    photo, shared, never_sent = (secrets.token_bytes(n) for n in (2000, 3000, 4000))
    slug = f"ret-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    phone = await new_phone(client, staff)
    body = report(attachments=[declared(photo), declared(shared), declared(never_sent)])
    case_id, report_id = await closed_case(client, staff, phone, body)
    await upload(client, phone, photo)
    await upload(client, phone, shared)
    await backdate_closing(pool, case_id, RETENTION_DAYS + 10)
    assert await missing_on_device(client, phone, report_id) == [declared(never_sent)["sha256"]]
    # Another organisation's live report has the same file; its own copy must survive.
    other = await make_actor(client, pool, Role.CASE_MANAGER)
    other_phone = await new_phone(client, other)
    other_body = report(attachments=[declared(shared)])
    await push(client, other_phone, [create(other_phone, other_body)])
    await upload(client, other_phone, shared)

    blobs = resources_of(client.app.state).blobs
    # The job dies right after the redaction commits: nothing was deleted inside the transaction,
    # and the next run finishes the erasure.
    async with pool.acquire() as conn, conn.transaction():
        assert await run_retention(conn) == {str(admin.org_id): 1}
    assert await blobs.exists(declared(photo)["sha256"])
    await run_job(client, pool)

    assert not await blobs.exists(declared(photo)["sha256"])
    assert await blobs.exists(declared(shared)["sha256"])
    view = await client.get(f"/v1/reports/{report_id}", headers=staff.headers)
    assert view.status_code == 200, view.text
    states = {a["sha256"]: (a["arrived"], a["erased"]) for a in view.json()["attachments"]}
    assert states == {declared(f)["sha256"]: (False, True) for f in (photo, shared, never_sent)}
    other_view = await client.get(f"/v1/reports/{other_body['id']}", headers=other.headers)
    [kept] = other_view.json()["attachments"]
    assert (kept["arrived"], kept["erased"]) == (True, False)
    # The phone stops waiting for the erased media, and may not send them again.
    assert await missing_on_device(client, phone, report_id) == []
    r = await client.post("/v1/sync/attachments", json=declared(photo), headers=phone.headers)
    assert r.status_code == 410, r.text
    assert r.json()["type"] == "urn:fairwatch:problem:attachment-erased"

    async with pool.acquire() as conn:
        redacted = await conn.fetchrow(
            "SELECT detail FROM audit_log WHERE action = 'report.redact' AND org_id = $1",
            admin.org_id,
        )
        erasures = await conn.fetch(
            "SELECT object_id, detail FROM audit_log WHERE action = 'attachment.erase'"
            " AND org_id = $1 ORDER BY object_id",
            admin.org_id,
        )
        left = await conn.fetchval("SELECT count(*) FROM blob_erasures")
    assert redacted is not None and '"attachments_erased":3' in redacted["detail"].replace(" ", "")
    assert sorted(e["object_id"] for e in erasures) == sorted(
        declared(f)["sha256"] for f in (photo, shared, never_sent)
    )
    assert left == 0

    await run_job(client, pool)  # idempotent: nothing more to erase or audit
    async with pool.acquire() as conn:
        again = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'attachment.erase'"
        )
    assert again == len(erasures)
    assert await blobs.exists(declared(shared)["sha256"])


async def test_a_withdrawn_report_keeps_its_tombstone_when_its_attachments_are_erased(
    client: Client, pool: asyncpg.Pool
) -> None:
    slug = f"ret-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    phone = await new_phone(client, staff)
    photo = secrets.token_bytes(1500)
    body = report(attachments=[declared(photo)])
    case_id, report_id = await closed_case(client, staff, phone, body)
    await upload(client, phone, photo)
    [result] = (await push(client, phone, [withdraw(phone, str(report_id), 2)]))["results"]
    assert result["status"] == "applied", result
    await backdate_closing(pool, case_id, RETENTION_DAYS + 10)

    await run_job(client, pool)

    assert not await resources_of(client.app.state).blobs.exists(declared(photo)["sha256"])
    changes, _ = await pull_all(client, phone)
    [last] = [c for c in changes if str(report_id) in (c.get("report_id"), c.get("record_id"))]
    assert last["kind"] == "tombstone", last


async def test_a_redacted_report_takes_no_more_edits(client: Client, pool: asyncpg.Pool) -> None:
    """An amendment could bring back the erased identity or media: it is refused as `redacted`,
    and the report stays as retention left it."""
    slug = f"ret-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    phone = await new_phone(client, staff)
    photo = secrets.token_bytes(1500)
    case_id, report_id = await closed_case(client, staff, phone, report())
    await backdate_closing(pool, case_id, RETENTION_DAYS + 10)
    await run_job(client, pool)
    before = await sealed_state(pool, report_id)

    edit = amend(
        phone,
        str(report_id),
        2,
        {"worker": {"name": "Sita Tamang"}, "attachments": [declared(photo)]},
    )
    [result] = (await push(client, phone, [edit]))["results"]

    assert (result["status"], result["reason"]) == ("rejected", "redacted"), result
    assert before[:2] == (False, True)
    assert await sealed_state(pool, report_id) == before
    async with pool.acquire() as conn:
        declared_now = await conn.fetchval(
            "SELECT count(*) FROM report_attachments WHERE report_id = $1", report_id
        )
    assert declared_now == 0
