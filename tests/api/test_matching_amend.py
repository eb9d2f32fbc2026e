"""A report that changes after it was matched (amended by its monitor, a conflict resolved,
withdrawn, redacted) is matched as it is now: every worker's index holds its current version
or drops it, a job it was never matched in is matched, and what it now resembles reaches the
review queue. The worker used to keep the version it first matched, for good."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, NamedTuple

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from server import matching_jobs
from storage.matching import MatchingCache, match_report, rematch_report, undo_decision
from storage.queries import Q
from storage.reports import REPORT_CHANGED
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import (
    Client,
    amend,
    create,
    enroll,
    enrollment_code,
    new_monitor,
    new_phone,
    push,
    report,
    withdraw,
)
from tests.api.test_matching import decisions, drain, raid
from tests.api.test_retention import backdate_closing, closed_case, run_job, set_retention
from tests.integration.test_push_locking import until_waiting

pytestmark = pytest.mark.db

_FAR = {"lat": 3.139, "lon": 101.6869, "accuracy_m": 10.0}  # Kuala Lumpur, far from the raid
_FAR_DAY = "2026-10-01T10:00:00+00:00"
_RAID_PLACE = {"lat": 25.2214, "lon": 51.4476, "accuracy_m": 40.0}
_RAID_TIME = "2026-11-20T22:10:00+00:00"
_RAM = {"name": "Ram Bahadur Thapa", "date_of_birth": "1994-03-12", "passport_number": "PA1234567"}
_RAM_AGAIN = {
    "name": "Thapa Ram Bahadur",
    "date_of_birth": "1994-03-12",
    "passport_number": "PA 1234567",
}
_SITA = {"name": "Sita Kumari Rai", "date_of_birth": "1990-07-01", "passport_number": "PB7654321"}


async def _member(pool: asyncpg.Pool, query: str, report_id: str) -> uuid.UUID | None:
    async with pool.acquire() as conn:
        found: uuid.UUID | None = await conn.fetchval(query, uuid.UUID(report_id))
    return found


async def _rematch_anew(client: Client, pool: asyncpg.Pool, staff: Actor, report_id: str) -> None:
    """Run a report's rematch again, in a worker process with a fresh index."""
    async with pool.acquire() as conn, conn.transaction():
        keyring = client.app.state.resources.keyring
        await rematch_report(conn, keyring, MatchingCache(), staff.org_id, uuid.UUID(report_id))


async def _applied(client: Client, phone: Any, mutations: list[dict[str, Any]]) -> None:
    result = await push(client, phone, mutations)
    assert [r["status"] for r in result["results"]] == ["applied"] * len(mutations), result


async def test_an_identity_added_by_an_amendment_is_matched(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The monitor first sent the report without the worker's identity (no consent yet), then
    added it: the report must join the person the other report of that worker is in."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    first, later = report(worker=_RAM), report(worker=None)
    await _applied(client, phone, [create(phone, first), create(phone, later)])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, later["id"]) is None

    await _applied(client, phone, [amend(phone, later["id"], 1, {"worker": _RAM_AGAIN})])
    await drain(client, pool)

    person = await _member(pool, Q.person_of_report, first["id"])
    assert person is not None
    assert await _member(pool, Q.person_of_report, later["id"]) == person


async def test_an_employer_named_by_an_amendment_is_linked_to_the_registry(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    agency = {
        "kind": "employer",
        "legal_name": "Gulf Star Contracting W.L.L.",
        "country": "QA",
        "phones": ["+974 4455 6677"],
    }
    created = await client.post("/v1/registry/entities", json=agency, headers=staff.headers)
    assert created.status_code == 201, created.text
    phone = await new_phone(client, staff)
    body = report(worker=None, employer=None, destination_country="QA")
    await _applied(client, phone, [create(phone, body)])
    await drain(client, pool)
    employer = {"name": "Gulf Star Contracting WLL", "phone": "+97444556677"}

    await _applied(client, phone, [amend(phone, body["id"], 1, {"employer": employer})])
    await drain(client, pool)

    linked = await client.get(
        f"/v1/registry/entities/{created.json()['id']}/reports", headers=staff.headers
    )
    assert [(m["report_id"], m["role"]) for m in linked.json()["members"]] == [
        (body["id"], "employer")
    ]


async def test_a_later_report_meets_the_amended_place_and_time(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The monitor corrects where and when the incident happened; a second account of the raid
    arriving afterwards must be compared with the corrected report and join its incident."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone, other_phone = await new_phone(client, staff), await new_phone(client, staff)
    corrected = raid(location=_FAR, occurred_at=_FAR_DAY)
    await _applied(client, phone, [create(phone, corrected)])
    await drain(client, pool)  # the worker's index now holds the report in Kuala Lumpur

    fix = {"location": raid()["location"], "occurred_at": raid()["occurred_at"]}
    await _applied(client, phone, [amend(phone, corrected["id"], 1, fix)])
    await drain(client, pool)
    second = raid(location=_RAID_PLACE, occurred_at=_RAID_TIME)
    await _applied(client, other_phone, [create(other_phone, second)])
    await drain(client, pool)

    incident = await _member(pool, Q.incident_of_report, corrected["id"])
    assert incident is not None
    assert await _member(pool, Q.incident_of_report, second["id"]) == incident


async def test_every_workers_index_takes_the_amendment(client: Client, pool: asyncpg.Pool) -> None:
    """Two worker processes had indexed the report before it was amended; one rematches it, and
    the other, matching the next report, reads the amended version."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    keyring = client.app.state.resources.keyring
    worker_a, worker_b = MatchingCache(), MatchingCache()
    corrected = raid(location=_FAR, occurred_at=_FAR_DAY)
    unrelated = report(worker=None, location=_FAR, occurred_at="2026-09-01T10:00:00+00:00")
    await _applied(client, phone, [create(phone, corrected), create(phone, unrelated)])

    async def run(cache: MatchingCache, body: dict[str, Any], again: bool = False) -> None:
        step = rematch_report if again else match_report
        async with pool.acquire() as conn, conn.transaction():
            await step(conn, keyring, cache, staff.org_id, uuid.UUID(body["id"]))

    await run(worker_a, corrected)
    await run(worker_b, unrelated)  # worker_b's index holds the report in Kuala Lumpur too
    fix = {"location": raid()["location"], "occurred_at": raid()["occurred_at"]}
    await _applied(client, phone, [amend(phone, corrected["id"], 1, fix)])
    await run(worker_a, corrected, again=True)
    second = raid(location=_RAID_PLACE, occurred_at=_RAID_TIME)
    await _applied(client, phone, [create(phone, second)])
    await run(worker_b, second)

    assert await _member(pool, Q.incident_of_report, second["id"]) == await _member(
        pool, Q.incident_of_report, corrected["id"]
    )


async def test_a_withdrawn_report_takes_in_no_later_report(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A report withdrawn as recorded by mistake leaves the indexes: a later report of the same
    place and time opens its own incident instead of joining the withdrawn one's."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone, other_phone = await new_phone(client, staff), await new_phone(client, staff)
    mistake = raid()
    await _applied(client, phone, [create(phone, mistake)])
    await drain(client, pool)
    await _applied(client, phone, [withdraw(phone, mistake["id"], 1)])
    await drain(client, pool)
    later = raid(location=_RAID_PLACE, occurred_at=_RAID_TIME)
    await _applied(client, other_phone, [create(other_phone, later)])
    await drain(client, pool)

    own = await _member(pool, Q.incident_of_report, later["id"])
    assert own is not None
    assert own != await _member(pool, Q.incident_of_report, mistake["id"])
    assert await decisions(client, staff, job="incident") == []


async def test_a_redacted_identity_leaves_the_person_index(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Retention erases the worker's identity from a report; the worker process, which held it
    decrypted in memory, must drop it too: a later report naming that worker is not joined to
    the redacted report's person."""
    slug = f"amend-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    phone = await new_phone(client, staff)
    case_id, redacted = await closed_case(client, staff, phone, report(worker=_RAM))
    await drain(client, pool)  # matched: the index holds Ram's identity
    await backdate_closing(pool, case_id, 60)
    await run_job(client, pool)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sealed FROM reports WHERE id = $1", redacted) is None

    later = report(worker=_RAM_AGAIN)
    await _applied(client, phone, [create(phone, later)])
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, later["id"]) != await _member(
        pool, Q.person_of_report, str(redacted)
    )
    assert await decisions(client, staff, job="person") == []


async def test_every_workers_index_drops_a_redacted_identity_at_its_next_chore(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A second worker process had Ram's identity in its person index; another process ran the
    redaction's rematch. The second drops the identity at its next chore (every minute), not
    only at its next person match in that organisation, which may be days away."""
    slug = f"amend-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    keyring = client.app.state.resources.keyring
    phone = await new_phone(client, staff)
    case_id, redacted = await closed_case(client, staff, phone, report(worker=_RAM))
    await drain(client, pool)
    other_worker = MatchingCache()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await rematch_report(conn, keyring, other_worker, staff.org_id, redacted)
        held = await other_worker.corpus(conn, staff.org_id, "person")
        assert str(redacted) in held.features

    await backdate_closing(pool, case_id, 60)
    await run_job(client, pool)
    await drain(client, pool)  # this process rematches the redacted report
    async with pool.acquire() as conn:
        assert str(redacted) in held.features  # the other process has not looked yet
        assert await other_worker.refresh_persons(conn, keyring) == 1

    assert str(redacted) not in held.features
    assert str(redacted) not in held.records


class _LinkedPair(NamedTuple):
    staff: Actor
    phone: Any
    ram: dict[str, Any]
    again: dict[str, Any]
    person: uuid.UUID | None
    link: dict[str, Any]


async def _linked_pair(client: Client, pool: asyncpg.Pool) -> _LinkedPair:
    """Two reports of Ram from one phone, which the matcher joined in one person."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    ram, again = report(worker=_RAM), report(worker=_RAM_AGAIN)
    await _applied(client, phone, [create(phone, ram), create(phone, again)])
    await drain(client, pool)
    person = await _member(pool, Q.person_of_report, ram["id"])
    assert await _member(pool, Q.person_of_report, again["id"]) == person
    [link] = await decisions(client, staff, job="person", status="auto_linked")
    return _LinkedPair(staff, phone, ram, again, person, link)


async def _person_members(client: Client, staff: Any, person: uuid.UUID | None) -> list[str]:
    r = await client.get(f"/v1/persons/{person}", headers=staff.headers)
    assert r.status_code == 200, r.text
    return sorted(m["report_id"] for m in r.json()["members"])


async def test_a_report_whose_identity_is_removed_leaves_its_person(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The worker withdrew consent and the monitor removed the identity from the report: the
    report no longer names that worker, so the person's view and clusters stop listing it and
    the matcher's link that put it there is undone (not a label). Named again, it joins again."""
    staff, phone, ram, again, person, link = await _linked_pair(client, pool)
    assert await _person_members(client, staff, person) == sorted([ram["id"], again["id"]])

    await _applied(client, phone, [amend(phone, again["id"], 1, {"worker": None})])
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, again["id"]) is None
    assert await _person_members(client, staff, person) == [ram["id"]]
    r = await client.get("/v1/matching/clusters?job=person&min_size=1", headers=staff.headers)
    assert [sorted(c["members"]) for c in r.json()] == [[ram["id"]]]
    [undone] = await decisions(client, staff, job="person", status="undone")
    assert (undone["id"], undone["decided_by"]) == (link["id"], "matcher")

    await _applied(client, phone, [amend(phone, again["id"], 2, {"worker": _RAM_AGAIN})])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, again["id"]) == person


async def test_a_redacted_report_leaves_its_person_even_when_staff_linked_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Retention erases the identity of a closed case's report: the association with the
    worker's other reports goes with it, even where a case manager made it; their decision
    stays on record as they made it."""
    slug = f"amend-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    await set_retention(client, admin)
    review_all = {"link": 0.9999, "review": 0.3, "merge": 0.9999}  # a person decides every pair
    r = await client.put("/v1/matching/person/thresholds", json=review_all, headers=admin.headers)
    assert r.status_code == 200, r.text
    phone = await new_phone(client, staff)
    # Another incident, far away: not in the closed case, so retention leaves it as it is.
    later = report(worker=_RAM_AGAIN, location=_FAR, occurred_at=_FAR_DAY)
    case_id, redacted = await closed_case(client, staff, phone, report(worker=_RAM))
    await _applied(client, phone, [create(phone, later)])
    await drain(client, pool)
    [pending] = await decisions(client, staff, job="person")
    r = await client.post(f"/v1/matching/decisions/{pending['id']}/accept", headers=staff.headers)
    assert r.status_code == 200, r.text
    person = await _member(pool, Q.person_of_report, later["id"])
    assert person is not None and await _member(pool, Q.person_of_report, str(redacted)) == person
    [linked] = await decisions(client, staff, job="person", status="accepted")

    await backdate_closing(pool, case_id, 60)
    await run_job(client, pool)
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, str(redacted)) is None
    assert await _person_members(client, staff, person) == [later["id"]]
    [kept] = await decisions(client, staff, job="person", status="accepted")
    assert kept["id"] == linked["id"]


async def test_an_amended_report_is_suggested_not_moved_and_only_once(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A report in an incident (and a case) of its own, amended to the place and time of
    another incident: the case team gets a suggestion to merge, the report stays where it is
    until someone accepts it; rematching again adds nothing."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone, other_phone = await new_phone(client, staff), await new_phone(client, staff)
    moved, there = raid(location=_FAR, occurred_at=_FAR_DAY), raid()
    await _applied(client, phone, [create(phone, moved)])
    await _applied(client, other_phone, [create(other_phone, there)])
    await drain(client, pool)
    own = await _member(pool, Q.incident_of_report, moved["id"])
    assert own is not None and own != await _member(pool, Q.incident_of_report, there["id"])

    fix = {"location": _RAID_PLACE, "occurred_at": _RAID_TIME}
    await _applied(client, phone, [amend(phone, moved["id"], 1, fix)])
    await drain(client, pool)
    await _rematch_anew(client, pool, staff, moved["id"])

    [suggestion] = await decisions(client, staff, job="incident")
    assert (suggestion["subject_id"], suggestion["candidate_id"]) == (moved["id"], there["id"])
    assert suggestion["status"] == "pending_review"
    assert suggestion["explanation"]["fields"]
    assert await _member(pool, Q.incident_of_report, moved["id"]) == own
    r = await client.post(
        f"/v1/matching/decisions/{suggestion['id']}/accept", headers=staff.headers
    )
    assert r.status_code == 200, r.text
    assert await _member(pool, Q.incident_of_report, moved["id"]) == await _member(
        pool, Q.incident_of_report, there["id"]
    )


async def test_a_person_alone_joins_after_an_amendment_but_a_refusal_holds(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The monitor corrects the worker's identity on a report alone in its person: it joins the
    person of the worker it now names, unless the case team had said the two are not one."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    ram, typo = report(worker=_RAM), report(worker=_SITA)
    await _applied(client, phone, [create(phone, ram), create(phone, typo)])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, typo["id"]) != await _member(
        pool, Q.person_of_report, ram["id"]
    )

    await _applied(client, phone, [amend(phone, typo["id"], 1, {"worker": _RAM_AGAIN})])
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, typo["id"]) == await _member(
        pool, Q.person_of_report, ram["id"]
    )
    [link] = await decisions(client, staff, job="person", status="auto_linked")
    assert (link["subject_id"], link["candidate_id"], link["status"]) == (
        typo["id"],
        ram["id"],
        "auto_linked",
    )
    undone = await client.post(f"/v1/matching/decisions/{link['id']}/undo", headers=staff.headers)
    assert undone.status_code == 200, undone.text
    await _applied(client, phone, [amend(phone, typo["id"], 2, {"severity": 5})])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, typo["id"]) != await _member(
        pool, Q.person_of_report, ram["id"]
    )
    assert [d["id"] for d in await decisions(client, staff, job="person", status="undone")] == [
        link["id"]
    ]
    assert await decisions(client, staff, job="person", status="auto_linked") == []
    assert await decisions(client, staff, job="person") == []  # nor a suggestion of the pair


async def test_a_resolved_conflict_is_matched_as_resolved(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two phones of one monitor edit the worker's identity apart; the case manager takes the
    incoming one, which names a worker another report names: the report joins that person."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    monitor = await new_monitor(client, staff)
    first = await enroll(client, await enrollment_code(client, staff, monitor))
    second = await enroll(client, await enrollment_code(client, staff, monitor))
    ram, body = report(worker=_RAM), report(worker=_SITA)
    await _applied(client, first, [create(first, ram), create(first, body)])
    sita_typo = {**_SITA, "name": "Sita Kumari Ray"}
    await _applied(client, first, [amend(first, body["id"], 1, {"worker": sita_typo})])
    conflicted = await push(client, second, [amend(second, body["id"], 1, {"worker": _RAM_AGAIN})])
    assert [r["status"] for r in conflicted["results"]] == ["conflict"], conflicted
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, body["id"]) != await _member(
        pool, Q.person_of_report, ram["id"]
    )
    queue = await client.get("/v1/conflicts", headers=staff.headers)
    for conflict in queue.json()["items"]:
        resolved = await client.post(
            f"/v1/conflicts/{conflict['id']}/resolve",
            json={"resolution": "take_incoming"},
            headers=staff.headers,
        )
        assert resolved.status_code == 200, resolved.text
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, body["id"]) == await _member(
        pool, Q.person_of_report, ram["id"]
    )


async def test_a_report_whose_rematch_fails_is_retried_alone(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One push of amendments queues one rematch; a report that fails there gets a job of its
    own, and the other reports of the push are matched again all the same."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    ram, sita, nobody = report(worker=_RAM), report(worker=None), report(worker=None)
    await _applied(client, phone, [create(phone, b) for b in (ram, sita, nobody)])
    await drain(client, pool)
    real = rematch_report
    bad = uuid.UUID(nobody["id"])

    async def flaky(conn: Any, keyring: Any, cache: Any, org_id: uuid.UUID, rid: uuid.UUID) -> None:
        await real(conn, keyring, cache, org_id, rid)
        if rid == bad:  # after writing, so the savepoint must undo what it wrote
            raise RuntimeError("rematch broke")

    monkeypatch.setattr(matching_jobs, "rematch_report", flaky)
    edits = [
        amend(phone, sita["id"], 1, {"worker": _RAM_AGAIN}),
        amend(phone, nobody["id"], 1, {"worker": _SITA}),
    ]
    await _applied(client, phone, edits)
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, sita["id"]) == await _member(
        pool, Q.person_of_report, ram["id"]
    )
    assert await _member(pool, Q.person_of_report, nobody["id"]) is None  # undone
    async with pool.acquire() as conn:
        retry = await conn.fetchrow(
            "SELECT state, last_error, payload FROM jobs WHERE kind = $1 AND org_id = $2"
            " AND state <> 'done'",
            REPORT_CHANGED,
            staff.org_id,
        )
    assert retry is not None and retry["state"] == "pending"
    assert "rematch broke" in retry["last_error"]
    assert msgspec.json.decode(retry["payload"]) == {"report_ids": [nobody["id"]]}

    monkeypatch.setattr(matching_jobs, "rematch_report", real)
    async with pool.acquire() as conn:  # the retry's backoff, skipped
        await conn.execute(
            "UPDATE jobs SET run_after = now() WHERE kind = $1 AND org_id = $2", REPORT_CHANGED,
            staff.org_id,
        )  # fmt: skip
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, nobody["id"]) is not None


async def test_the_matcher_undoes_its_own_link_when_the_report_no_longer_agrees(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A report the matcher joined to a worker's person is corrected to name someone else: the
    matcher undoes its own link (not a label of the case team), and links it again when the
    correction is reverted. An edit that keeps the identity keeps the link."""
    staff, phone, _, again, person, link = await _linked_pair(client, pool)

    await _applied(client, phone, [amend(phone, again["id"], 1, {"severity": 1})])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, again["id"]) == person

    await _applied(client, phone, [amend(phone, again["id"], 2, {"worker": _SITA})])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, again["id"]) != person
    [undone] = await decisions(client, staff, job="person", status="undone")
    assert (undone["id"], undone["decided_by"]) == (link["id"], "matcher")
    async with pool.acquire() as conn:
        assert await conn.fetch(Q.match_labels, staff.org_id, "person") == []

    await _applied(client, phone, [amend(phone, again["id"], 3, {"worker": _RAM_AGAIN})])
    await drain(client, pool)
    assert await _member(pool, Q.person_of_report, again["id"]) == person
    [relinked] = await decisions(client, staff, job="person", status="auto_linked")
    assert relinked["id"] == link["id"]


async def test_a_suggestion_settled_by_another_link_leaves_the_queue_until_split(
    client: Client, pool: asyncpg.Pool
) -> None:
    """An amended report is suggested with two reports of one person. Accepting one suggestion
    puts it in that person, which answers the other: the queue no longer shows it. Undoing the
    link makes the question real again, and it is back."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    ram, again = report(worker=_RAM), report(worker=_RAM_AGAIN)
    vague = report(worker={"name": "Ram B. Thapa", "home_district": "Jhapa"})
    await _applied(client, phone, [create(phone, b) for b in (ram, again, vague)])
    await drain(client, pool)
    precise = {
        "name": "Ram B. Thapa",
        "passport_number": "PA1234567",
        "date_of_birth": "1994-03-12",
    }
    await _applied(client, phone, [amend(phone, vague["id"], 1, {"worker": precise})])
    await drain(client, pool)
    queue = await decisions(client, staff, job="person")
    assert sorted((d["subject_id"], d["candidate_id"]) for d in queue) == sorted(
        [(vague["id"], ram["id"]), (vague["id"], again["id"])]
    )

    [taken] = [d for d in queue if d["candidate_id"] == again["id"]]
    r = await client.post(f"/v1/matching/decisions/{taken['id']}/accept", headers=staff.headers)
    assert r.status_code == 200, r.text
    assert await _member(pool, Q.person_of_report, vague["id"]) == await _member(
        pool, Q.person_of_report, ram["id"]
    )
    assert await decisions(client, staff, job="person") == []

    r = await client.post(f"/v1/matching/decisions/{taken['id']}/undo", headers=staff.headers)
    assert r.status_code == 200, r.text
    [back] = await decisions(client, staff, job="person")
    assert (back["subject_id"], back["candidate_id"]) == (vague["id"], ram["id"])


async def _entity_links(pool: asyncpg.Pool, report_id: str) -> dict[str, uuid.UUID]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT role, entity_id FROM entity_links WHERE report_id = $1", uuid.UUID(report_id)
        )
    return {r["role"]: r["entity_id"] for r in rows}


async def test_a_corrected_employer_moves_the_reports_entity_link(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Surge scans count reports by their entity links: an employer the monitor corrects must
    stop counting against the one first matched, and count against the right one."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    ids = {}
    for name, number in (("Gulf Star Contracting W.L.L.", "+974 4455 6677"),
                         ("Al Noor Trading W.L.L.", "+974 4412 3456")):  # fmt: skip
        entity = {"kind": "employer", "legal_name": name, "country": "QA", "phones": [number]}
        r = await client.post("/v1/registry/entities", json=entity, headers=staff.headers)
        assert r.status_code == 201, r.text
        ids[name.split()[0]] = uuid.UUID(r.json()["id"])
    phone = await new_phone(client, staff)
    gulf = {"name": "Gulf Star Contracting WLL", "phone": "+97444556677"}
    body = report(worker=None, employer=gulf, destination_country="QA")
    await _applied(client, phone, [create(phone, body)])
    await drain(client, pool)
    assert await _entity_links(pool, body["id"]) == {"employer": ids["Gulf"]}
    [first] = await decisions(client, staff, job="entity", status="auto_linked")

    await _applied(client, phone, [amend(phone, body["id"], 1, {"severity": 1})])
    await drain(client, pool)
    assert await _entity_links(pool, body["id"]) == {"employer": ids["Gulf"]}  # unchanged

    noor = {"name": "Al Noor Trading WLL", "phone": "+97444123456"}
    await _applied(client, phone, [amend(phone, body["id"], 2, {"employer": noor})])
    await drain(client, pool)
    assert await _entity_links(pool, body["id"]) == {"employer": ids["Al"]}
    [undone] = await decisions(client, staff, job="entity", status="undone")
    assert (undone["id"], undone["decided_by"]) == (first["id"], "matcher")
    async with pool.acquire() as conn:
        assert await conn.fetch(Q.match_labels, staff.org_id, "entity") == []

    picked = {"entity_id": str(ids["Gulf"])}  # picked from the synced registry on the phone
    await _applied(client, phone, [amend(phone, body["id"], 3, {"employer": picked})])
    await drain(client, pool)
    assert await _entity_links(pool, body["id"]) == {"employer": ids["Gulf"]}

    await _applied(client, phone, [amend(phone, body["id"], 4, {"employer": None})])
    await drain(client, pool)
    assert await _entity_links(pool, body["id"]) == {}


async def test_a_staff_undo_racing_the_matchers_own_undo_stays_the_staffs(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A case manager undoes the matcher's person link while the worker, rematching the amended
    report, is about to undo it too: the worker waits for the staff's transaction, sees the
    link gone, and leaves the staff's decision (a label) as it is."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    ram, again = report(worker=_RAM), report(worker=_RAM_AGAIN)
    await _applied(client, phone, [create(phone, ram), create(phone, again)])
    await drain(client, pool)
    [link] = await decisions(client, staff, job="person", status="auto_linked")
    await _applied(client, phone, [amend(phone, again["id"], 1, {"worker": _SITA})])
    keyring = client.app.state.resources.keyring
    async with pool.acquire() as first, pool.acquire() as second, pool.acquire() as watcher:
        held = first.transaction()
        await held.start()
        await undo_decision(first, staff.org_id, uuid.UUID(link["id"]), user_id=staff.user_id)

        async def rematch() -> None:
            async with second.transaction():
                await rematch_report(
                    second, keyring, MatchingCache(), staff.org_id, uuid.UUID(again["id"])
                )

        racing = asyncio.create_task(rematch())
        await until_waiting(watcher, second.get_server_pid(), racing)
        await held.commit()
        await racing
        row = await watcher.fetchrow(
            "SELECT status, decided_by FROM match_decisions WHERE id = $1", uuid.UUID(link["id"])
        )
    assert row is not None
    assert (row["status"], row["decided_by"]) == ("undone", f"staff:{staff.user_id}")
    assert await _member(pool, Q.person_of_report, again["id"]) != await _member(
        pool, Q.person_of_report, ram["id"]
    )


async def test_a_report_amended_away_from_its_incident_is_noted_on_the_case(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two accounts of one raid share an incident and a case; one is corrected to another place
    and month. Moving it out would move it between cases, so it stays, and the case's timeline
    says it stands apart, with the link for the case team to undo (once per version)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone, other_phone = await new_phone(client, staff), await new_phone(client, staff)
    first, second = raid(), raid(location=_RAID_PLACE, occurred_at=_RAID_TIME)
    await _applied(client, phone, [create(phone, first)])
    await _applied(client, other_phone, [create(other_phone, second)])
    await drain(client, pool)
    incident = await _member(pool, Q.incident_of_report, first["id"])
    assert await _member(pool, Q.incident_of_report, second["id"]) == incident
    [link] = await decisions(client, staff, job="incident", status="auto_linked")
    async with pool.acquire() as conn:
        case_id = await conn.fetchval(Q.case_by_incident, staff.org_id, incident)

    async def noted() -> list[dict[str, Any]]:
        r = await client.get(f"/v1/cases/{case_id}/timeline", headers=staff.headers)
        assert r.status_code == 200, r.text
        return [e for e in r.json() if e["kind"] == "report_apart"]

    await _applied(client, other_phone, [amend(other_phone, second["id"], 1, {"severity": 1})])
    await drain(client, pool)
    assert await noted() == []  # still agrees

    fix = {"location": _FAR, "occurred_at": _FAR_DAY}
    await _applied(client, other_phone, [amend(other_phone, second["id"], 2, fix)])
    await drain(client, pool)
    await _rematch_anew(client, pool, staff, second["id"])  # again: noted once

    [event] = await noted()
    assert event["detail"]["report"] == second["id"]
    assert event["detail"]["report_version"] == 3
    assert event["detail"]["decision"] == link["id"]
    assert event["detail"]["mean_probability"] < 0.5
    assert await _member(pool, Q.incident_of_report, second["id"]) == incident
    r = await client.post(f"/v1/matching/decisions/{link['id']}/undo", headers=staff.headers)
    assert r.status_code == 200, r.text
    assert await _member(pool, Q.incident_of_report, second["id"]) != incident


async def test_a_link_the_current_model_doubts_goes_to_review_when_the_report_changes(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The matcher re-judges its own link of a changed report with the thresholds in force:
    after the org raised them, an edit of another field undoes the link, and the pair is put
    to the case team as a suggestion instead of being left apart silently."""
    slug = f"amend-{uuid.uuid4().hex[:8]}"
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    staff = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=slug)
    phone = await new_phone(client, staff)
    ram, again = report(worker=_RAM), report(worker=_RAM_AGAIN)
    await _applied(client, phone, [create(phone, ram), create(phone, again)])
    await drain(client, pool)
    [link] = await decisions(client, staff, job="person", status="auto_linked")
    assert link["probability"] < 0.9999
    strict = {"link": 0.9999, "review": 0.3, "merge": 0.9999}
    r = await client.put("/v1/matching/person/thresholds", json=strict, headers=admin.headers)
    assert r.status_code == 200, r.text

    await _applied(client, phone, [amend(phone, again["id"], 1, {"severity": 1})])
    await drain(client, pool)

    assert await _member(pool, Q.person_of_report, again["id"]) != await _member(
        pool, Q.person_of_report, ram["id"]
    )
    [suggestion] = await decisions(client, staff, job="person")
    assert (suggestion["id"], suggestion["status"]) == (link["id"], "pending_review")
    assert (suggestion["subject_id"], suggestion["candidate_id"]) == (again["id"], ram["id"])
