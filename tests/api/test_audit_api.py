"""The audit log API: org admins page through their own chain and verify it."""

from __future__ import annotations

import itertools

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from tests.api.conftest import PASSWORD, make_actor

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


async def test_pages_by_seq_without_gaps_and_only_own_org(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool)
    other = await make_actor(client, pool)
    for _ in range(6):  # each login is an audited action
        r = await client.post("/v1/auth/login", json={"email": admin.email, "password": PASSWORD})
        assert r.status_code == 200
    seen: list[int] = []
    after = 0
    while True:
        page = await client.get(
            "/v1/audit", params={"after_seq": after, "limit": 3}, headers=admin.headers
        )
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [e["seq"] for e in body["items"]]
        assert all(e["action"] for e in body["items"])
        if body.get("next_after_seq") is None:
            break
        after = body["next_after_seq"]
    assert seen == list(range(1, len(seen) + 1))
    assert len(seen) >= 7
    theirs = await client.get("/v1/audit", headers=other.headers)
    assert all(str(admin.user_id) not in str(e) for e in theirs.json()["items"])


async def test_entries_link_into_a_chain(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    await client.post("/v1/auth/login", json={"email": admin.email, "password": PASSWORD})
    items = (await client.get("/v1/audit", headers=admin.headers)).json()["items"]
    assert items[0]["prev_hash"] == "00" * 32
    for before, after in itertools.pairwise(items):
        assert after["prev_hash"] == before["hash"]


async def test_verify_reports_ok_then_detects_tampering(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    ok = await client.post("/v1/audit/verify", headers=admin.headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["ok"] is True
    assert ok.json()["entries_checked"] >= 1
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute(
            "UPDATE audit_log SET actor_id = 'someone-else' WHERE org_id = $1 AND seq = 1",
            admin.org_id,
        )
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
    bad = await client.post("/v1/audit/verify", headers=admin.headers)
    assert bad.status_code == 200
    assert bad.json()["ok"] is False
    assert bad.json()["problem"] == "altered"
    assert bad.json()["first_bad_seq"] == 1
    actions = [
        e["action"] for e in (await client.get("/v1/audit", headers=admin.headers)).json()["items"]
    ]
    assert actions.count("audit.verify") == 2  # both runs are on record


async def test_only_org_admins_read_the_log(client: Client, pool: asyncpg.Pool) -> None:
    for role in (Role.CASE_MANAGER, Role.ANALYST):
        actor = await make_actor(client, pool, role)
        assert (await client.get("/v1/audit", headers=actor.headers)).status_code == 403
        assert (await client.post("/v1/audit/verify", headers=actor.headers)).status_code == 403
    assert (await client.get("/v1/audit")).status_code == 401


async def test_account_actions_are_recorded(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool)
    await client.post(f"/v1/users/{admin.user_id}/password-reset", headers=admin.headers)
    await client.put(
        "/v1/org/retention",
        json={"redact_after_days": 90, "legal_hold": True},
        headers=admin.headers,
    )
    await client.put("/v1/org/privacy", json={"analyst_cell_resolution": 6}, headers=admin.headers)
    items = (await client.get("/v1/audit", headers=admin.headers)).json()["items"]
    actions = {e["action"]: e for e in items}
    assert {"staff.login", "staff.password_reset_issue", "org.retention_update",
            "org.privacy_update"} <= set(actions)  # fmt: skip
    assert actions["org.retention_update"]["detail"] == {
        "redact_after_days": 90,
        "legal_hold": True,
    }
    assert actions["staff.password_reset_issue"]["actor_id"] == str(admin.user_id)
