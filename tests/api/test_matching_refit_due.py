"""The nightly refit: every org's matching models are refitted once their data or their team's
decisions changed, and not again until something else changes."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from cases.accounts import Role
from server.matching_jobs import HANDLERS, REFIT, REFIT_DUE, enqueue_refits_due
from tests.api.conftest import make_actor
from tests.api.sync_support import Client, amend, create, new_phone, push
from tests.api.test_matching import drain, raid, spread_raids

pytestmark = pytest.mark.db


async def due(pool: asyncpg.Pool, org_id: uuid.UUID) -> set[str]:
    """The refit jobs queued now for the org (after queueing what is due)."""
    async with pool.acquire() as conn:
        await enqueue_refits_due(conn)
        rows = await conn.fetch(
            "SELECT payload->>'job' AS job FROM jobs WHERE kind = $1 AND org_id = $2 "
            "AND state IN ('pending', 'running')",
            REFIT,
            org_id,
        )
    return {r["job"] for r in rows}


async def outcomes(pool: asyncpg.Pool, org_id: uuid.UUID) -> dict[str, str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT job, outcome FROM match_refit_attempts WHERE org_id = $1", org_id
        )
    return {r["job"]: r["outcome"] for r in rows}


async def test_models_are_refitted_when_their_data_or_decisions_change(
    client: Client, pool: asyncpg.Pool
) -> None:
    assert REFIT_DUE in HANDLERS
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    quiet = await make_actor(client, pool, Role.CASE_MANAGER)  # an org with no reports
    phone = await new_phone(client, staff)
    bodies = spread_raids(60)
    # and two reports of one raid, which matching links into one incident
    bodies += [raid(), raid(occurred_at="2026-11-20T22:10:00+00:00")]
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)

    assert await due(pool, staff.org_id) == {"incident", "entity", "person"}
    assert await due(pool, quiet.org_id) == set()
    await drain(client, pool)
    done = await outcomes(pool, staff.org_id)
    assert done["incident"] == "em"
    # No registry and no worker identities: tried, recorded, and not retried every night.
    assert done["entity"].startswith("unchanged") and done["person"].startswith("unchanged")
    assert await due(pool, staff.org_id) == set()

    # A decision of the team on the incident queue: that job only.
    linked = await client.get(
        "/v1/matching/decisions",
        params={"job": "incident", "status": "auto_linked"},
        headers=staff.headers,
    )
    assert linked.status_code == 200 and linked.json()["items"], linked.text
    decision = linked.json()["items"][0]["id"]
    undone = await client.post(f"/v1/matching/decisions/{decision}/undo", headers=staff.headers)
    assert undone.status_code in (200, 204), undone.text
    assert await due(pool, staff.org_id) == {"incident"}
    await drain(client, pool)
    assert await due(pool, staff.org_id) == set()

    # A new report: every job may have something new to learn from.
    await push(client, phone, [create(phone, raid())])
    await drain(client, pool)
    assert await due(pool, staff.org_id) == {"incident", "entity", "person"}


async def test_a_held_report_released_late_makes_refits_due(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A report held for its predecessor is stored when that arrives, with the time it first
    arrived: before the last refit. It is new data all the same (the query used to compare the
    arrival time with the refit's, and skipped it)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    await push(client, phone, [create(phone, b) for b in spread_raids(60)])
    await drain(client, pool)
    held = create(phone, raid(), seq=phone.seq() + 1)
    [result] = (await push(client, phone, [held]))["results"]
    assert result["status"] == "held", result
    assert await due(pool, staff.org_id) == {"incident", "entity", "person"}
    await drain(client, pool)
    assert await due(pool, staff.org_id) == set()

    # The predecessor is refused (an unknown category), which releases the held report.
    refused = create(phone, raid(categories=["NOT.A_CATEGORY"]), seq=held["seq"] - 1)
    results = {r["seq"]: r["status"] for r in (await push(client, phone, [refused]))["results"]}
    assert results[refused["seq"]] == "rejected", results
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM reports WHERE id = $1", uuid.UUID(held["report"]["id"])
        )
    assert stored == 1
    await drain(client, pool)
    assert await due(pool, staff.org_id) == {"incident", "entity", "person"}


async def test_an_amendment_makes_refits_due(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bodies = spread_raids(60)
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)
    await due(pool, staff.org_id)
    await drain(client, pool)
    assert await due(pool, staff.org_id) == set()

    fix = {"location": {"lat": 25.3, "lon": 51.5, "accuracy_m": 10.0}}
    [result] = (await push(client, phone, [amend(phone, bodies[0]["id"], 1, fix)]))["results"]
    assert result["status"] == "applied", result
    await drain(client, pool)
    assert await due(pool, staff.org_id) == {"incident", "entity", "person"}
