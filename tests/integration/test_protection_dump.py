"""A thief of a database dump learns no worker identity and no free-text place.

Reports with worker identities are pushed through the real app; then the raw contents of EVERY
table (whatever migrations exist now or later) are searched for the sensitive values, both as text
and as the hex that bytea columns show.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from cases.accounts import Role
from tests.api.conftest import api_settings, app_client, client, make_actor
from tests.api.sync_support import (
    amend,
    create,
    enroll,
    enrollment_code,
    new_monitor,
    new_phone,
    push,
    report,
)

__all__ = ["api_settings", "app_client", "client"]  # fixtures used here

pytestmark = pytest.mark.db

Client = AsyncTestClient[Litestar]


def _identity(n: int) -> dict[str, Any]:
    return {"name": f"Sunita Rai Tamang {n}", "passport_number": f"PX99{n:05d}"}


def _secrets(n: int) -> list[str]:
    identity = _identity(n)
    return [identity["name"], identity["passport_number"], f"Hostel Gate {n} near the quarry"]


def _body(n: int) -> dict[str, Any]:
    body = report(worker=_identity(n))
    body["location"] = {**body["location"], "place": f"Hostel Gate {n} near the quarry"}
    return body


async def _leaks(pool: asyncpg.Pool, secrets: list[str]) -> list[str]:
    found = []
    needles = [(s, s.lower()) for s in secrets] + [(s, s.encode().hex()) for s in secrets]
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT schemaname, tablename FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        assert len(tables) > 10
        for t in tables:
            name = f'"{t["schemaname"]}"."{t["tablename"]}"'
            rows = await conn.fetch(f"SELECT x::text AS row FROM {name} x")  # noqa: S608
            for row in rows:
                text = row["row"].lower()
                found += [f"{t['tablename']}: {s}" for s, needle in needles if needle in text]
    return sorted(set(found))


async def test_dump_of_every_table_reveals_no_sensitive_field(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bodies = [_body(n) for n in range(3)]
    answer = await push(client, phone, [create(phone, b) for b in bodies])
    assert [r["status"] for r in answer["results"]] == ["applied"] * 3
    # An amendment replaces an identity: both the old and the new must stay sealed.
    amended = await push(
        client, phone, [amend(phone, bodies[0]["id"], 1, {"worker": _identity(7)})]
    )
    assert amended["results"][0]["status"] == "applied"
    # The case team reads them (audited), so the read path has had its chance to leak too.
    for b in bodies:
        seen = await client.get(f"/v1/reports/{b['id']}", headers=staff.headers)
        assert seen.status_code == 200
    assert (await client.get(f"/v1/reports/{bodies[1]['id']}", headers=staff.headers)).json()[
        "report"
    ]["worker"] == _identity(1)
    secrets = [s for n in (0, 1, 2, 7) for s in _secrets(n)]
    assert await _leaks(pool, secrets) == []


async def test_held_mutations_reveal_no_sensitive_field(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    phone.seq()  # seq 1 is "lost": the next mutation waits for it
    held = await push(client, phone, [create(phone, _body(3))])
    assert held["results"][0]["status"] == "held"
    assert await _leaks(pool, _secrets(3)) == []


async def test_conflicts_on_identity_reveal_no_sensitive_field(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    monitor = await new_monitor(client, staff)
    first = await enroll(client, await enrollment_code(client, staff, monitor))
    second = await enroll(client, await enrollment_code(client, staff, monitor))
    body = _body(4)
    await push(client, first, [create(first, body)])
    await push(client, first, [amend(first, body["id"], 1, {"worker": _identity(5)})])
    clash = await push(client, second, [amend(second, body["id"], 1, {"worker": _identity(6)})])
    assert clash["results"][0]["status"] == "conflict"
    assert await _leaks(pool, [*_secrets(5), *_secrets(6)]) == []
