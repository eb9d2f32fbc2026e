"""Each worker process keeps its own matching index: it must hold every report matched before
the one it matches, whichever process matched it and whenever its transaction committed."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from cases.accounts import Role
from storage.matching import MatchingCache, match_report
from storage.queries import Q
from tests.api.conftest import make_actor
from tests.api.sync_support import Client, create, new_phone, push, report
from tests.api.test_matching import raid
from tests.integration.test_push_locking import until_waiting

pytestmark = pytest.mark.db

_FAR = {"lat": 3.139, "lon": 101.6869, "accuracy_m": 10.0}  # Kuala Lumpur, far from the raid


async def _match(
    client: Client, pool: asyncpg.Pool, cache: MatchingCache, org_id: uuid.UUID, report_id: str
) -> None:
    keyring = client.app.state.resources.keyring
    async with pool.acquire() as conn, conn.transaction():
        await match_report(conn, keyring, cache, org_id, uuid.UUID(report_id))


async def _incident(pool: asyncpg.Pool, report_id: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        found: uuid.UUID = await conn.fetchval(Q.incident_of_report, uuid.UUID(report_id))
    return found


async def test_a_report_released_late_is_in_every_workers_index(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A held report is stored when its predecessor arrives, with the time it first arrived:
    older than reports another worker has indexed meanwhile. That worker must still find it
    (it used to read reports by arrival time after the newest it had seen, and never did)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    first, second = await new_phone(client, staff), await new_phone(client, staff)
    worker_a, worker_b = MatchingCache(), MatchingCache()  # two worker processes
    gap, held = report(worker=None, location=_FAR), raid()
    await push(client, first, [create(first, held, seq=2)])  # held: seq 1 has not arrived
    elsewhere = report(worker=None, location=_FAR, occurred_at="2026-10-01T10:00:00+00:00")
    await push(client, second, [create(second, elsewhere)])
    await _match(client, pool, worker_b, staff.org_id, elsewhere["id"])
    await push(client, first, [create(first, gap, seq=1)])  # releases the held report
    async with pool.acquire() as conn:
        arrived = {
            str(r["id"]): r["received_at"]
            for r in await conn.fetch(
                "SELECT id, received_at FROM reports WHERE org_id = $1", staff.org_id
            )
        }
    assert arrived[held["id"]] < arrived[elsewhere["id"]]  # the premise of this test
    await _match(client, pool, worker_a, staff.org_id, gap["id"])
    await _match(client, pool, worker_a, staff.org_id, held["id"])

    second_account = raid(
        occurred_at="2026-11-20T22:10:00+00:00",
        location={"lat": 25.2214, "lon": 51.4476, "accuracy_m": 40.0},
    )
    await push(client, second, [create(second, second_account)])
    await _match(client, pool, worker_b, staff.org_id, second_account["id"])
    assert await _incident(pool, second_account["id"]) == await _incident(pool, held["id"])


async def test_two_workers_matching_one_raid_at_once_make_one_incident(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two reports of one raid, matched at the same moment by two worker processes: the second
    waits for the first to commit and joins its incident."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    one = raid()
    other = raid(
        occurred_at="2026-11-20T22:10:00+00:00",
        location={"lat": 25.2214, "lon": 51.4476, "accuracy_m": 40.0},
    )
    await push(client, phone, [create(phone, one), create(phone, other)])
    keyring = client.app.state.resources.keyring
    worker_a, worker_b = MatchingCache(), MatchingCache()
    async with pool.acquire() as first, pool.acquire() as second, pool.acquire() as watcher:
        opened = first.transaction()
        await opened.start()
        await match_report(first, keyring, worker_a, staff.org_id, uuid.UUID(one["id"]))

        async def match_other() -> None:
            async with second.transaction():
                await match_report(second, keyring, worker_b, staff.org_id, uuid.UUID(other["id"]))

        racing = asyncio.create_task(match_other())
        await until_waiting(watcher, second.get_server_pid(), racing)
        await opened.commit()
        await racing
        cases = await watcher.fetch(
            "SELECT case_id, count(*) AS n FROM case_reports WHERE report_id = ANY($1::uuid[])"
            " GROUP BY case_id",
            [uuid.UUID(one["id"]), uuid.UUID(other["id"])],
        )
    assert await _incident(pool, one["id"]) == await _incident(pool, other["id"])
    assert [r["n"] for r in cases] == [2]  # one case holds both, no case holds one alone


async def test_a_registry_edit_that_commits_late_reaches_the_index(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two registry edits, the one that started first committing last: a worker that read the
    registry between the two commits reads it again (it used to compare only the count and the
    newest edit time, which the late edit does not change)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    ids = []
    for name in ("Everest Overseas Recruitment", "Himal Manpower Pvt. Ltd."):
        body = {"kind": "recruitment_agency", "legal_name": name, "country": "NP"}
        r = await client.post("/v1/registry/entities", json=body, headers=staff.headers)
        assert r.status_code == 201, r.text
        ids.append(uuid.UUID(r.json()["id"]))
    everest, himal = ids
    phone = await new_phone(client, staff)
    worker = MatchingCache()

    async def mention(name: str) -> str:
        body = report(worker=None, origin_country="NP", recruiter={"name": name})
        await push(client, phone, [create(phone, body)])
        await _match(client, pool, worker, staff.org_id, body["id"])
        return f"{body['id']}:recruiter"

    await mention("Himal Manpower")
    edit = "UPDATE entities SET {} = {}, version = version + 1, updated_at = now() WHERE id = $1"
    async with pool.acquire() as first, pool.acquire() as second:
        started = first.transaction()
        await started.start()
        await first.execute(edit.format("aliases", "ARRAY['Sagarmatha Services']"), everest)
        await second.execute(edit.format("address", "'Putalisadak, Kathmandu'"), himal)
        await mention("Himal Manpower")  # the worker reads the registry between the commits
        await started.commit()
    subject = await mention("Sagarmatha Services")
    async with pool.acquire() as conn:
        candidates = await conn.fetch(
            "SELECT candidate_id FROM match_decisions WHERE org_id = $1 AND subject_id = $2",
            staff.org_id,
            subject,
        )
    assert [r["candidate_id"] for r in candidates] == [str(everest)]
