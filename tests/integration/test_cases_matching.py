"""The hooks matching calls (open, merge, split) and the append-only timeline, on PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import uuid

import asyncpg
import pytest

from storage.case_links import (
    create_case,
    on_incident_merged,
    on_incident_split,
    open_case_for_incident,
)
from storage.cases import CaseActor, get_case
from storage.db import Conn

pytestmark = pytest.mark.db

NOW = dt.datetime.now(dt.UTC)


class World:
    def __init__(self, conn: Conn, org_id: uuid.UUID, monitor_id: uuid.UUID, device_id: uuid.UUID):
        self.conn, self.org_id, self.monitor_id, self.device_id = (
            conn,
            org_id,
            monitor_id,
            device_id,
        )

    async def report(self, categories: list[str], severity: int = 3) -> uuid.UUID:
        rid = uuid.uuid4()
        content = {
            "id": str(rid),
            "categories": categories,
            "severity": severity,
            "narrative": "wages unpaid for three months",
        }
        await self.conn.execute(
            "INSERT INTO reports (id, org_id, monitor_id, device_id, version, content, occurred_at,"
            " latitude, longitude, categories, recorded_at, received_at)"
            " VALUES ($1, $2, $3, $4, 1, $5::jsonb, $6, 27.7, 85.3, $7, $6, $6)",
            rid,
            self.org_id,
            self.monitor_id,
            self.device_id,
            json.dumps(content),
            NOW,
            categories,
        )
        return rid

    async def incident(self, *reports: uuid.UUID) -> uuid.UUID:
        incident: uuid.UUID = await self.conn.fetchval(
            "INSERT INTO incidents (org_id) VALUES ($1) RETURNING id", self.org_id
        )
        await self.assign(incident, *reports)
        return incident

    async def assign(self, incident: uuid.UUID, *reports: uuid.UUID) -> None:
        for rid in reports:
            await self.conn.execute(
                "INSERT INTO incident_members (report_id, org_id, incident_id) VALUES ($1, $2, $3)"
                " ON CONFLICT (report_id) DO UPDATE SET incident_id = EXCLUDED.incident_id",
                rid,
                self.org_id,
                incident,
            )

    async def case_of(self, incident: uuid.UUID) -> uuid.UUID:
        """The incident's case, opened as matching opens it; one must follow the incident."""
        case_id = await open_case_for_incident(self.conn, org_id=self.org_id, incident_id=incident)
        assert case_id is not None
        return case_id

    async def case_reports(self, case_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self.conn.fetch(
            "SELECT report_id FROM case_reports WHERE case_id = $1 ORDER BY report_id", case_id
        )
        return [r["report_id"] for r in rows]

    async def kinds(self, case_id: uuid.UUID) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT kind FROM case_events WHERE case_id = $1 ORDER BY id", case_id
        )
        return [r["kind"] for r in rows]


@pytest.fixture
async def world(db: Conn) -> World:
    org = await db.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ($1, 'Org') RETURNING id", f"o-{uuid.uuid4().hex[:8]}"
    )
    monitor = await db.fetchval(
        "INSERT INTO monitors (org_id, display_name) VALUES ($1, 'M') RETURNING id", org
    )
    device = await db.fetchval(
        "INSERT INTO devices (org_id, monitor_id, credential_hash)"
        " VALUES ($1, $2, $3) RETURNING id",
        org,
        monitor,
        secrets.token_bytes(32),
    )
    return World(db, org, monitor, device)


async def test_open_case_for_incident_is_idempotent(world: World) -> None:
    a = await world.report(["FL.WAGE_WITHHOLDING"])
    incident = await world.incident(a)
    first = await world.case_of(incident)
    again = await world.case_of(incident)
    assert first == again
    b = await world.report(["FL.PHYSICAL_VIOLENCE"], severity=5)
    await world.assign(incident, b)
    assert await world.case_of(incident) == first
    case = await get_case(world.conn, world.org_id, first)
    assert case.report_count == 2 and case.priority == "critical"
    assert await world.kinds(first) == ["created", "reports_linked", "priority_changed"]


async def test_merge_moves_reports_and_closes_an_untriaged_duplicate(world: World) -> None:
    a, b = await world.report(["FL.WAGE_WITHHOLDING"]), await world.report(["FL.DOC_RETENTION"])
    kept, merged = await world.incident(a), await world.incident(b)
    kept_case = await world.case_of(kept)
    merged_case = await world.case_of(merged)
    await world.assign(kept, b)  # matching moves the members first, then calls the hook
    result = await on_incident_merged(
        world.conn, org_id=world.org_id, kept_incident=kept, merged_incident=merged
    )
    assert result == kept_case
    survivor = await get_case(world.conn, world.org_id, kept_case)
    retired = await get_case(world.conn, world.org_id, merged_case)
    assert survivor.report_count == 2 and retired.report_count == 0
    assert retired.status == "closed" and retired.outcome == "duplicate"
    assert retired.merged_into == kept_case and retired.incident_id is None
    assert "merged_from_matching" in await world.kinds(kept_case)
    assert (await world.kinds(merged_case))[-2:] == ["merged_from_matching", "status_changed"]


async def test_split_gives_the_new_incident_its_own_case(world: World) -> None:
    a, b = await world.report(["FL.WAGE_WITHHOLDING"]), await world.report(["FL.DOC_RETENTION"])
    source = await world.incident(a, b)
    source_case = await world.case_of(source)
    split_off = await world.incident(b)  # matching moved b to a new incident
    [new_case] = await on_incident_split(
        world.conn, org_id=world.org_id, source_incident=source, new_incidents=[split_off]
    )
    assert new_case is not None and new_case != source_case
    assert (await get_case(world.conn, world.org_id, source_case)).report_count == 1
    assert (await get_case(world.conn, world.org_id, new_case)).categories == ["FL.DOC_RETENTION"]
    # The source case records the split, then derives its priority from what it kept.
    assert (await world.kinds(source_case))[-2:] == ["split_by_matching", "priority_changed"]
    assert (await world.kinds(new_case))[-1] == "split_by_matching"


async def test_matching_never_takes_a_report_out_of_a_case_a_person_made(world: World) -> None:
    # A case manager follows two reports of two incidents in one case before matching runs.
    a, b = await world.report(["FL.WAGE_WITHHOLDING"]), await world.report(["FL.DOC_RETENTION"])
    first, second = await world.incident(a), await world.incident(b)
    person = CaseActor.staff(uuid.uuid4(), supervisor=False)
    made = await create_case(world.conn, org_id=world.org_id, actor=person, report_ids=[a, b])
    assert made is not None
    # The first incident adopts it; the second finds its only report held there by a person:
    # no empty case is opened for it, and the report stays where the person put it.
    assert await world.case_of(first) == made.id
    assert await open_case_for_incident(world.conn, org_id=world.org_id, incident_id=second) is None
    assert await world.case_reports(made.id) == sorted([a, b])
    assert (
        await world.conn.fetchval("SELECT count(*) FROM cases WHERE org_id = $1", world.org_id) == 1
    )
    # A later report of the second incident opens its case, which holds only that report.
    c = await world.report(["FL.DOC_RETENTION"])
    await world.assign(second, c)
    opened = await world.case_of(second)
    assert opened != made.id and await world.case_reports(opened) == [c]
    assert await world.case_reports(made.id) == sorted([a, b])


async def test_a_split_takes_what_matching_linked_and_leaves_what_a_person_linked(
    world: World,
) -> None:
    a, b, c = [await world.report(["FL.WAGE_WITHHOLDING"]) for _ in range(3)]
    source = await world.incident(a, b)
    source_case = await world.case_of(source)  # matching linked a and b
    person = CaseActor.staff(uuid.uuid4(), supervisor=False)
    await world.conn.execute(  # a case manager linked c by hand
        "INSERT INTO case_reports (report_id, org_id, case_id, cells, linked_by)"
        " VALUES ($1, $2, $3, '{}', $4)",
        c, world.org_id, source_case, person.label,
    )  # fmt: skip
    await world.assign(source, c)
    # Matching splits b and c off into incidents of their own.
    split_b, split_c = await world.incident(b), await world.incident(c)
    [case_b, case_c] = await on_incident_split(
        world.conn, org_id=world.org_id, source_incident=source, new_incidents=[split_b, split_c]
    )
    assert case_b is not None and await world.case_reports(case_b) == [b]
    assert case_c is None
    assert await world.case_reports(source_case) == sorted([a, c])


async def test_timeline_refuses_update_and_delete(world: World) -> None:
    incident = await world.incident(await world.report(["FL.WAGE_WITHHOLDING"]))
    case_id = await world.case_of(incident)
    for statement in (
        "UPDATE case_events SET kind = 'forged' WHERE case_id = $1",
        "DELETE FROM case_events WHERE case_id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            async with world.conn.transaction():
                await world.conn.execute(statement, case_id)


async def test_amending_a_report_refreshes_the_case_search(world: World) -> None:
    rid = await world.report(["FL.WAGE_WITHHOLDING"])
    case_id = await world.case_of(await world.incident(rid))
    await world.conn.execute(
        "UPDATE reports SET content = jsonb_set(content, '{narrative}', '\"dormitory locked\"'),"
        " categories = '{FL.RESTRICTED_MOVEMENT}' WHERE id = $1",
        rid,
    )
    found = await world.conn.fetchval(
        "SELECT categories FROM cases"
        " WHERE id = $1 AND search @@ plainto_tsquery('simple', 'locked')",
        case_id,
    )
    assert found == ["FL.RESTRICTED_MOVEMENT"]
