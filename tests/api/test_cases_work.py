"""Case work through the API: tasks reaching devices, consent-gated referrals, exports."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from typing import Any

import asyncpg
import pytest

from cases.accounts import Role
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, Phone, create, new_phone, pull_all, push, report

pytestmark = pytest.mark.db


async def case_with_phone(
    client: Client, staff: Actor, **overrides: Any
) -> tuple[dict[str, Any], Phone]:
    phone = await new_phone(client, staff)
    body = report(**overrides)
    result = await push(client, phone, [create(phone, body)])
    assert result["results"][0]["status"] == "applied", result
    r = await client.post("/v1/cases", json={"report_ids": [body["id"]]}, headers=staff.headers)
    assert r.status_code == 201, r.text
    case: dict[str, Any] = r.json()
    return case, phone


async def to_open(client: Client, staff: Actor, case: dict[str, Any]) -> dict[str, Any]:
    for step in ({"to": "triage"}, {"to": "open", "assign_to": str(staff.user_id)}):
        r = await client.post(
            f"/v1/cases/{case['id']}/transitions",
            json={"version": case["version"], **step},
            headers=staff.headers,
        )
        assert r.status_code == 200, r.text
        case = r.json()
    return case


async def answer(client: Client, phone: Phone, task_id: str) -> Any:
    """The monitor answers through sync push, as the phone app does."""
    mutation = {
        "kind": "answer_task",
        "seq": phone.seq(),
        "mutation_id": str(uuid.uuid4()),
        "recorded_at": dt.datetime.now(dt.UTC).isoformat(),
        "task_id": task_id,
        "answer": "Photographed the contract; salary differs from the offer.",
    }
    [result] = (await push(client, phone, [mutation]))["results"]
    return result


async def test_task_reaches_the_monitor_and_its_answer_comes_back(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    case, phone = await case_with_phone(client, staff)
    sent = await client.post(
        f"/v1/cases/{case['id']}/tasks",
        json={
            "version": case["version"],
            "monitor_id": str(phone.monitor_id),
            "prompt": "Collect the contract",
        },
        headers=staff.headers,
    )
    assert sent.status_code == 201, sent.text
    task = sent.json()
    changes, cursor = await pull_all(client, phone)
    delivered = [c for c in changes if c["kind"] == "task"]
    assert [(c["task_id"], c["status"], c["prompt"]) for c in delivered] == [
        (task["id"], "open", "Collect the contract")
    ]
    other_phone = await new_phone(client, staff)
    assert not [c for c in (await pull_all(client, other_phone))[0] if c["kind"] == "task"]

    assert (await answer(client, other_phone, task["id"]))["reason"] == "not_owner"
    applied = await answer(client, phone, task["id"])
    assert applied["status"] == "applied"
    assert applied["version"] == 2
    assert (await answer(client, phone, task["id"]))["reason"] == "task_closed"
    assert (await answer(client, phone, str(uuid.uuid4())))["reason"] == "not_found"

    tasks = (await client.get(f"/v1/cases/{case['id']}/tasks", headers=staff.headers)).json()
    assert tasks[0]["status"] == "answered" and tasks[0]["answer"].startswith("Photographed")
    later, _ = await pull_all(client, phone, cursor)
    assert [(c["task_id"], c["status"]) for c in later if c["kind"] == "task"] == [
        (task["id"], "answered")
    ]
    kinds = [
        e["kind"]
        for e in (
            await client.get(f"/v1/cases/{case['id']}/timeline", headers=staff.headers)
        ).json()
    ]
    assert kinds[-2:] == ["task_sent", "task_answered"]


async def partner(client: Client, admin: Actor, kind: str) -> str:
    r = await client.post(
        "/v1/partners", json={"kind": kind, "name": f"{kind} partner"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def refer(
    client: Client, staff: Actor, case: dict[str, Any], partner_id: str, **extra: Any
) -> Any:
    return await client.post(
        f"/v1/cases/{case['id']}/referrals",
        json={"version": case["version"], "partner_id": partner_id, **extra},
        headers=staff.headers,
    )


async def test_referral_with_consent_carries_only_the_minimum_data(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    case = await to_open(client, admin, (await case_with_phone(client, admin))[0])
    legal, union = await partner(client, admin, "legal_aid"), await partner(client, admin, "union")

    sent = await refer(client, admin, case, legal)
    assert sent.status_code == 201, sent.text
    body = sent.json()
    assert body["payload"]["worker_name"] == "Ram Bahadur Thapa"
    assert "passport_number" not in body["payload"]  # legal aid does not need it
    assert body["referral"]["decision"]["reason"] == "consent_current"
    case = (await client.get(f"/v1/cases/{case['id']}", headers=admin.headers)).json()
    assert case["status"] == "referred"

    to_union = await refer(client, admin, case, union)
    assert to_union.status_code == 201
    assert "worker_name" not in to_union.json()["payload"]
    assert to_union.json()["payload"]["employer_name"] == "Al Noor Trading W.L.L."
    async with pool.acquire() as conn:
        reads = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND action = 'report.read_sensitive'",
            admin.org_id,
        )
    assert reads == 2

    outcome = await client.put(
        f"/v1/cases/{case['id']}/referrals/{body['referral']['id']}",
        json={"version": to_union.json()["case_version"], "status": "accepted"},
        headers=admin.headers,
    )
    assert outcome.status_code == 200 and outcome.json()["status"] == "accepted"


async def test_withdrawal_blocks_sharing_and_overrides_need_justification(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    no_consent = {"follow_up": True, "referral": False, "sharing": False}
    case = await to_open(
        client, admin, (await case_with_phone(client, admin, consent=no_consent))[0]
    )
    shelter = await partner(client, admin, "shelter")

    refused = await refer(client, admin, case, shelter)
    assert refused.status_code == 422
    assert refused.json()["reason"] == "no_consent_recorded"
    short = await refer(client, admin, case, shelter, override_justification="urgent")
    assert short.json()["reason"] == "override_justification_too_short"
    why = "Worker locked in the dormitory and cannot be reached; shelter must act today."
    overridden = await refer(client, admin, case, shelter, override_justification=why)
    assert overridden.status_code == 201, overridden.text
    assert overridden.json()["referral"]["override"] is True
    async with pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT detail->>'justification' FROM audit_log "
            "WHERE org_id = $1 AND action = 'case.referral_override'",
            admin.org_id,
        )
    assert audited == why

    withdrawn = await client.post(
        f"/v1/cases/{case['id']}/consents",
        json={
            "version": overridden.json()["case_version"],
            "action": "withdrawn",
            "purposes": ["referral", "sharing"],
            "method": "verbal",
        },
        headers=admin.headers,
    )
    assert withdrawn.status_code == 201, withdrawn.text
    case = (await client.get(f"/v1/cases/{case['id']}", headers=admin.headers)).json()
    blocked = await refer(client, admin, case, shelter, override_justification=why)
    assert blocked.status_code == 422
    assert blocked.json()["reason"] == "consent_withdrawn"


async def test_exports_respect_the_callers_view_and_are_audited(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    case, _ = await case_with_phone(client, admin)
    async with pool.acquire() as conn:
        org_slug = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", admin.org_id)
    analyst = await make_actor(client, pool, Role.ANALYST, org_slug=org_slug)

    staff_csv = await client.get("/v1/cases/export.csv", headers=admin.headers)
    assert staff_csv.status_code == 200, staff_csv.text
    rows = list(csv.DictReader(io.StringIO(staff_csv.text)))
    assert [r["id"] for r in rows] == [case["id"]]
    assert rows[0]["latitude"] and not rows[0]["h3_cell"]

    analyst_csv = list(
        csv.DictReader(
            io.StringIO((await client.get("/v1/cases/export.csv", headers=analyst.headers)).text)
        )
    )
    assert analyst_csv[0]["h3_cell"] and not analyst_csv[0]["latitude"]
    assert not analyst_csv[0]["title"]
    geo = (await client.get("/v1/cases/export.geojson", headers=analyst.headers)).json()
    assert geo["features"][0]["geometry"]["type"] == "Polygon"
    staff_geo = (await client.get("/v1/cases/export.geojson", headers=admin.headers)).json()
    assert staff_geo["features"][0]["geometry"]["type"] == "Point"

    async with pool.acquire() as conn:
        exports = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE org_id = $1 AND action = 'case.export'",
            admin.org_id,
        )
    assert exports == 4


async def test_sla_settings_apply_to_new_cases(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    sla = {"critical": "PT12H", "high": "PT48H", "normal": "P5D", "low": "P20D"}
    put = await client.put("/v1/case-settings", json={"sla": sla}, headers=admin.headers)
    assert put.status_code == 200, put.text
    stale = await client.put("/v1/case-settings", json={"sla": sla}, headers=admin.headers)
    assert stale.status_code == 409
    bad = {**sla, "critical": "P30D"}
    rejected = await client.put(
        "/v1/case-settings", json={"sla": bad, "version": 1}, headers=admin.headers
    )
    assert rejected.status_code == 422
    case, _ = await case_with_phone(client, admin)
    created = dt.datetime.fromisoformat(case["created_at"])
    assert dt.datetime.fromisoformat(case["due_at"]) - created == dt.timedelta(hours=48)
