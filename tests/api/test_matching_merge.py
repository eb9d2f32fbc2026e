"""The worker merges two persons when a new report links both and the two agree, as a batch
clustering would; the merge is the matcher's decision and undoing it restores both exactly."""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

import asyncpg
import pytest

from cases.accounts import Role
from storage.queries import Q
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, create, new_phone, push, report
from tests.api.test_matching import decisions, drain, raid

pytestmark = pytest.mark.db

_NAME = "Ram Bahadur Thapa"
# One worker's reports: the first gives the passport, the second the phone and district, the
# third all of them, so it alone links to both.
_BY_PASSPORT = {"name": _NAME, "date_of_birth": "1994-03-12", "passport_number": "PA1234567"}
_BY_PHONE = {"name": _NAME, "phone": "+9779841234567", "home_district": "Kaski"}
_EVERYTHING = {**_BY_PASSPORT, **_BY_PHONE}


async def _persons(pool: asyncpg.Pool, *bodies: dict[str, Any]) -> list[uuid.UUID | None]:
    async with pool.acquire() as conn:
        return [await conn.fetchval(Q.person_of_report, uuid.UUID(b["id"])) for b in bodies]


class _Bridged(NamedTuple):
    staff: Actor
    phone: Any
    a: dict[str, Any]
    b: dict[str, Any]
    c: dict[str, Any]
    person_a: uuid.UUID | None
    person_b: uuid.UUID | None


async def _bridged(client: Client, pool: asyncpg.Pool) -> _Bridged:
    """Reports a and b of one worker in two persons, then c, which links both."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    a, b = report(worker=_BY_PASSPORT), report(worker=_BY_PHONE)
    await push(client, phone, [create(phone, a), create(phone, b)])
    await drain(client, pool)
    person_a, person_b = await _persons(pool, a, b)
    assert person_a != person_b  # too little in common to link by themselves
    c = report(worker=_EVERYTHING)
    await push(client, phone, [create(phone, c)])
    await drain(client, pool)
    return _Bridged(staff, phone, a, b, c, person_a, person_b)


async def test_a_report_linking_two_persons_merges_them_and_undo_restores_both(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff, phone, a, b, c, person_a, person_b = await _bridged(client, pool)

    assert await _persons(pool, a, b, c) == [person_a] * 3
    links = await decisions(client, staff, job="person", status="auto_linked")
    by_candidate = {d["candidate_id"]: d for d in links}
    assert {d["subject_id"] for d in links} == {c["id"]}
    assert set(by_candidate) == {a["id"], b["id"]}
    merge = by_candidate[b["id"]]
    assert merge["decided_by"] == "matcher" and merge["explanation"]["fields"]
    assert 0.5 <= merge["probability"] < by_candidate[a["id"]]["probability"]

    r = await client.post(f"/v1/matching/decisions/{merge['id']}/undo", headers=staff.headers)
    assert r.status_code == 200, r.text
    assert await _persons(pool, a, b, c) == [person_a, person_b, person_a]
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval(
                "SELECT decision_id FROM person_members WHERE report_id = $1", uuid.UUID(b["id"])
            )
            is None
        )  # as before the merge: B was alone in its person, joined by no decision
    r = await client.get(f"/v1/persons/{person_b}", headers=staff.headers)
    assert [m["report_id"] for m in r.json()["members"]] == [b["id"]]

    # The undo is the case team's word: a later report linking both does not merge them again.
    d = report(worker=_EVERYTHING)
    await push(client, phone, [create(phone, d)])
    await drain(client, pool)
    assert await _persons(pool, a, b, c, d) == [person_a, person_b, person_a, person_a]


async def test_undoing_the_link_that_made_a_merge_parts_the_persons_again(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The report that linked two persons was not that worker after all: undoing its link puts
    it back alone and parts the two persons it had merged, as before it arrived."""
    staff, _, a, b, c, person_a, person_b = await _bridged(client, pool)
    [link] = [
        d
        for d in await decisions(client, staff, job="person", status="auto_linked")
        if d["candidate_id"] == a["id"]
    ]

    r = await client.post(f"/v1/matching/decisions/{link['id']}/undo", headers=staff.headers)
    assert r.status_code == 200, r.text

    person_c = (await _persons(pool, c))[0]
    assert await _persons(pool, a, b) == [person_a, person_b]
    assert person_c not in (person_a, person_b)
    undone = await decisions(client, staff, job="person", status="undone")
    assert sorted((d["candidate_id"], d["decided_by"].split(":")[0]) for d in undone) == sorted(
        [(a["id"], "staff"), (b["id"], "matcher")]
    )
    async with pool.acquire() as conn:  # only the case team's undo is a label
        labels = await conn.fetch(Q.match_labels, staff.org_id, "person")
    assert [(r["subject_id"], r["candidate_id"]) for r in labels] == [(c["id"], a["id"])]


async def test_the_worker_merges_what_a_batch_would_and_no_more(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A report that links to a person of a different worker with the same name only weakly
    (its link demoted or the groups disagreeing) leaves that person alone."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    a = report(worker=_BY_PASSPORT)
    namesake = report(
        worker={"name": _NAME, "date_of_birth": "1971-08-30", "phone": "+9779800000001",
                "home_district": "Jhapa", "passport_number": "PX7777777"}
    )  # fmt: skip
    await push(client, phone, [create(phone, a), create(phone, namesake)])
    await drain(client, pool)
    c = report(worker=_EVERYTHING)
    await push(client, phone, [create(phone, c)])
    await drain(client, pool)
    person_a, person_namesake, person_c = await _persons(pool, a, namesake, c)
    assert person_c == person_a != person_namesake


async def test_a_report_linking_two_incidents_leaves_the_other_to_the_case_team(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two reports of one raid two days apart stayed two incidents (two cases); a third, between
    them, links both. It joins the first; the second is put to the case team as a suggestion,
    not merged by the worker (merging incidents merges cases someone may be working on)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phones = [await new_phone(client, staff) for _ in range(3)]
    a = raid(occurred_at="2026-11-19T23:30:00+00:00")
    b = raid(occurred_at="2026-11-21T23:30:00+00:00")
    for phone, body in zip(phones, (a, b), strict=False):
        await push(client, phone, [create(phone, body)])
    await drain(client, pool)
    incident_a, incident_b = await _incidents(pool, a, b)
    assert incident_a != incident_b

    c = raid(occurred_at="2026-11-20T23:30:00+00:00")
    await push(client, phones[2], [create(phones[2], c)])
    await drain(client, pool)

    assert await _incidents(pool, a, b, c) == [incident_a, incident_b, incident_a]
    [linked] = await decisions(client, staff, job="incident", status="auto_linked")
    [suggested] = await decisions(client, staff, job="incident")
    assert (linked["subject_id"], linked["candidate_id"]) == (c["id"], a["id"])
    assert (suggested["subject_id"], suggested["candidate_id"]) == (c["id"], b["id"])
    assert suggested["status"] == "pending_review" and suggested["suggestion"] == "link"


async def _incidents(pool: asyncpg.Pool, *bodies: dict[str, Any]) -> list[uuid.UUID | None]:
    async with pool.acquire() as conn:
        return [await conn.fetchval(Q.incident_of_report, uuid.UUID(b["id"])) for b in bodies]
