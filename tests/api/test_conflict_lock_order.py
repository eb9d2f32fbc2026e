"""Resolving a conflict locks the report before the conflict, as every other writer does.

Retention's redaction locks a report and then rewrites its conflicts; a push locks reports and
then inserts conflicts. A resolution that locked the conflict first and then waited for the
report could meet a redaction in a cycle (a deadlock: one of them aborted). The test holds the
report from a third connection, starts a resolution, sees it waiting, and checks that the
conflict row is still free while it waits.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from cases.accounts import Role
from server.resources import resources_of
from storage.conflicts import Resolution, resolve_conflict
from tests.api.conftest import make_actor
from tests.api.sync_support import (
    Client,
    amend,
    create,
    new_monitor,
    new_phone,
    push,
    report,
)

pytestmark = pytest.mark.db


async def waiting(pool: asyncpg.Pool, pid: int) -> bool:
    async with pool.acquire() as conn:
        return bool(
            await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", pid
            )
        )


async def test_a_resolution_waits_for_the_report_without_holding_the_conflict(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    monitor = await new_monitor(client, staff)
    first, second = await new_phone(client, staff, monitor), await new_phone(client, staff, monitor)
    body = report()
    await push(client, first, [create(first, body)])
    await push(client, first, [amend(first, body["id"], 1, {"severity": 5})])
    answer = await push(client, second, [amend(second, body["id"], 1, {"severity": 2})])
    assert answer["results"][0]["status"] == "conflict"
    [conflict] = (await client.get("/v1/conflicts", headers=staff.headers)).json()["items"]

    keyring = resources_of(client.app.state).keyring
    async with pool.acquire() as holder, pool.acquire() as resolver:
        hold = holder.transaction()
        await hold.start()
        await holder.execute(
            "SELECT 1 FROM reports WHERE id = $1 FOR UPDATE", uuid.UUID(body["id"])
        )
        task = asyncio.create_task(
            resolve_conflict(
                resolver,
                keyring,
                org_id=staff.org_id,
                conflict_id=uuid.UUID(conflict["id"]),
                resolution=Resolution.TAKE_INCOMING,
                value=None,
                user_id=staff.user_id,
            )
        )
        try:
            while not await waiting(pool, resolver.get_server_pid()):
                assert not task.done(), "the resolution finished without waiting for the report"
                await asyncio.sleep(0.005)  # polling for a state, not timing anything
            async with pool.acquire() as probe, probe.transaction():
                locked = await probe.fetchval(
                    "SELECT id FROM report_conflicts WHERE id = $1 FOR UPDATE NOWAIT",
                    uuid.UUID(conflict["id"]),
                )
            assert str(locked) == conflict["id"]  # free: the resolver holds nothing of it yet
        finally:
            await hold.rollback()
            done = await asyncio.gather(task, return_exceptions=True)
    assert list(done) == [3]  # the resolution went through once the report was free
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert view.json()["report"]["severity"] == 2
