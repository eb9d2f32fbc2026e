"""Matching through the job queue: incidents, entity links and persons; review, accept, undo."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.matching.jobs import incident_job, person_job
from cases.matching.linkage import DEDUP_LINK_GRID, DEDUP_MERGE_GRID
from cases.matching.model import MatchModel, starting_model
from server import matching_jobs
from server.worker import WorkerContext, run_worker_once
from storage import matching as storage_matching
from storage.queries import Q
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, create, new_phone, push, report

pytestmark = pytest.mark.db


async def drain(client: Client, pool: asyncpg.Pool) -> int:
    context = WorkerContext(resources=client.app.state.resources)
    done = 0
    while n := await run_worker_once(pool, batch=50, context=context):
        done += n
    return done


def raid(**overrides: Any) -> dict[str, Any]:
    """A report of the same raid on a dormitory, as a second monitor might write it."""
    fields: dict[str, Any] = {
        "occurred_at": "2026-11-20T21:30:00+00:00",
        "location": {"lat": 25.2210, "lon": 51.4480, "accuracy_m": 15.0},
        "categories": ["FL.DOC_RETENTION", "FL.RESTRICTED_MOVEMENT"],
        "employer": {"name": "Gulf Star Contracting W.L.L.", "phone": "+974 4455 6677"},
        "worker": None,
    }
    return report(**{**fields, **overrides})


def spread_raids(count: int) -> list[dict[str, Any]]:
    """Reports over six sites and ten days: some share a site and a day, most do not."""
    return [
        raid(
            occurred_at=f"2026-11-{1 + i % 10:02d}T{8 + i % 12:02d}:00:00+00:00",
            location={"lat": 25.0 + (i % 6) * 0.2, "lon": 51.2 + (i % 6) * 0.2},
            employer={"name": f"Employer {i % 11}"},
        )
        for i in range(count)
    ]


async def decisions(client: Client, staff: Actor, **params: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/matching/decisions", params=params, headers=staff.headers)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_two_reports_of_one_raid_become_one_incident_and_can_be_split(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    first, second = await new_phone(client, staff), await new_phone(client, staff)
    a = raid()
    b = raid(
        occurred_at="2026-11-20T22:10:00+00:00",
        location={"lat": 25.2214, "lon": 51.4476, "accuracy_m": 40.0},
        employer={"name": "GULF STAR CONTRACTING WLL"},
        narrative="Guards took the passports of all workers in block C during the night raid.",
    )
    elsewhere = report(categories=["FL.WAGE_WITHHOLDING"], worker=None)
    await push(client, first, [create(first, a), create(first, elsewhere)])
    await push(client, second, [create(second, b)])
    await drain(client, pool)
    linked = await decisions(client, staff, job="incident", status="auto_linked")
    assert len(linked) == 1
    decision = linked[0]
    assert {decision["subject_id"], decision["candidate_id"]} == {a["id"], b["id"]}
    fields = {f["field"] for f in decision["explanation"]["fields"]}
    assert {"time", "place"} <= fields
    total = sum(f["contribution"] for f in decision["explanation"]["fields"])
    assert total == pytest.approx(decision["total_weight"])
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT report_id::text, incident_id FROM incident_members")
    incident_of = {r["report_id"]: r["incident_id"] for r in rows}
    assert incident_of[a["id"]] == incident_of[b["id"]]
    assert incident_of[elsewhere["id"]] != incident_of[a["id"]]
    async with pool.acquire() as conn:
        # A case follows each incident; the raid's case holds both reports.
        raid_case = await conn.fetchval(
            "SELECT id FROM cases WHERE incident_id = $1", incident_of[a["id"]]
        )
        assert raid_case is not None
        in_case = await conn.fetch(
            "SELECT report_id::text FROM case_reports WHERE case_id = $1", raid_case
        )
        assert sorted(r["report_id"] for r in in_case) == sorted([a["id"], b["id"]])
    view = await client.get(f"/v1/incidents/{incident_of[a['id']]}", headers=staff.headers)
    assert sorted(m["report_id"] for m in view.json()["members"]) == sorted([a["id"], b["id"]])

    # Matching again changes nothing (the jobs are idempotent).
    async with pool.acquire() as conn:
        for rid in (a["id"], b["id"]):
            await conn.execute(
                "INSERT INTO jobs (org_id, kind, payload) VALUES ($1, 'reports.match', $2::jsonb)",
                staff.org_id, f'{{"report_id": "{rid}"}}',
            )  # fmt: skip
    await drain(client, pool)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM match_decisions") == 1
        again = {r["report_id"]: r["incident_id"] for r in await conn.fetch(
            "SELECT report_id::text, incident_id FROM incident_members")}  # fmt: skip
    assert again == incident_of

    # Unmerge puts the later report back in the incident it had before, exactly.
    undone = await client.post(
        f"/v1/matching/decisions/{decision['id']}/undo", headers=staff.headers
    )
    assert undone.status_code == 200
    assert undone.json()["status"] == "undone"
    async with pool.acquire() as conn:
        after = {r["report_id"]: r["incident_id"] for r in await conn.fetch(
            "SELECT report_id::text, incident_id FROM incident_members")}  # fmt: skip
        previous = await conn.fetchval(
            "SELECT previous->>'incident_id' FROM match_decisions WHERE id = $1",
            uuid.UUID(decision["id"]),
        )
    subject = decision["subject_id"]
    assert str(after[subject]) == previous
    assert after[subject] != after[decision["candidate_id"]]
    async with pool.acquire() as conn:
        own_case = await conn.fetchval(
            "SELECT id FROM cases WHERE incident_id = $1", after[subject]
        )
        holder = await conn.fetchval(
            "SELECT case_id FROM case_reports WHERE report_id = $1", uuid.UUID(subject)
        )
    assert own_case is not None
    assert holder == own_case  # the unmerged report follows its own incident's case again
    twice = await client.post(
        f"/v1/matching/decisions/{decision['id']}/undo", headers=staff.headers
    )
    assert twice.status_code == 409


async def test_free_text_employer_resolves_to_the_registry(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    agency = {
        "kind": "recruitment_agency",
        "legal_name": "ABC Man Power Pvt. Ltd.",
        "country": "NP",
        "phones": ["01-4412345"],
        "licences": [{"number": "LIC-0042", "issuing_authority": "DoFE Nepal"}],
    }
    created = await client.post("/v1/registry/entities", json=agency, headers=staff.headers)
    other = {**agency, "legal_name": "Everest Overseas Recruitment", "phones": [],
             "licences": [{"number": "LIC-0077", "issuing_authority": "DoFE Nepal"}]}  # fmt: skip
    await client.post("/v1/registry/entities", json=other, headers=staff.headers)
    phone = await new_phone(client, staff)
    body = report(
        origin_country="NP",
        recruiter={"name": "A.B.C. Manpower Private Limited", "licence_number": "lic 0042"},
        worker=None,
    )
    await push(client, phone, [create(phone, body)])
    await drain(client, pool)
    entity_id = created.json()["id"]
    linked = await client.get(f"/v1/registry/entities/{entity_id}/reports", headers=staff.headers)
    assert [(m["report_id"], m["role"]) for m in linked.json()["members"]] == [
        (body["id"], "recruiter")
    ]
    async with pool.acquire() as conn:
        case_id = await conn.fetchval(
            "SELECT case_id FROM case_reports WHERE report_id = $1", uuid.UUID(body["id"])
        )
    assert linked.json()["cases"] == [str(case_id)]


async def test_the_same_worker_across_reports_is_one_person(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    worker = {
        "name": "Ram Bahadur Thapa",
        "date_of_birth": "1994-03-12",
        "passport_number": "PA1234567",
    }
    again = {
        "name": "Thapa Ram Bahadur",
        "date_of_birth": "1994-03-12",
        "passport_number": "PA 1234567",
    }
    stranger = {
        "name": "Sita Kumari Rai",
        "date_of_birth": "1990-07-01",
        "passport_number": "PB7654321",
    }
    bodies = [report(worker=w) for w in (worker, again, stranger)]
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)
    async with pool.acquire() as conn:
        person_of = {r["report_id"]: r["person_id"] for r in await conn.fetch(
            "SELECT report_id::text, person_id FROM person_members")}  # fmt: skip
    assert person_of[bodies[0]["id"]] == person_of[bodies[1]["id"]]
    assert person_of[bodies[2]["id"]] != person_of[bodies[0]["id"]]
    view = await client.get(f"/v1/persons/{person_of[bodies[0]['id']]}", headers=staff.headers)
    assert sorted(m["report_id"] for m in view.json()["members"]) == sorted(
        [bodies[0]["id"], bodies[1]["id"]]
    )
    analyst = await make_actor(client, pool, Role.ANALYST)
    denied = await client.get(f"/v1/persons/{person_of[bodies[0]['id']]}", headers=analyst.headers)
    assert denied.status_code == 403
    other = await make_actor(client, pool, Role.CASE_MANAGER)
    hidden = await client.get(f"/v1/persons/{person_of[bodies[0]['id']]}", headers=other.headers)
    assert hidden.status_code == 404
    clusters = await client.get(
        "/v1/matching/clusters", params={"job": "person"}, headers=staff.headers
    )
    assert [sorted(c["members"]) for c in clusters.json()] == [
        sorted([bodies[0]["id"], bodies[1]["id"]])
    ]


async def _person_of(pool: asyncpg.Pool, report_id: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        person: uuid.UUID = await conn.fetchval(Q.person_of_report, uuid.UUID(report_id))
    return person


@pytest.mark.parametrize("merge", [0.5, 0.9])
async def test_a_report_joins_a_person_only_if_the_whole_person_agrees(
    client: Client, pool: asyncpg.Pool, merge: float
) -> None:
    """The first two reports agree on everything they both give (all but the phone). A third
    matches the second strongly (name, date of birth, the same phone) but the first less (no
    passport or phone to compare, another district): it joins their person when the two
    together agree on average (merge 0.5; with the starting model about 0.99 and 0.63), and
    goes to review when they must agree at 0.9 on average."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    fresh = starting_model("person", [(f.name, f.levels, f.tf_levels) for f in person_job().fields])
    model = msgspec.structs.replace(
        fresh, thresholds=msgspec.structs.replace(fresh.thresholds, link=0.9, merge=merge)
    )
    async with pool.acquire() as conn:
        await conn.execute(
            Q.put_match_model, staff.org_id, "person", msgspec.json.encode(model).decode()
        )
    phone = await new_phone(client, staff)
    ram = {"name": "Ram Bahadur Thapa", "date_of_birth": "1994-03-12"}
    first = report(worker={**ram, "passport_number": "PA1234567", "home_district": "Kaski"})
    second = report(
        worker={**ram, "passport_number": "PA1234567", "home_district": "Kaski",
                "phone": "+9779841234567"}
    )  # fmt: skip
    third = report(worker={**ram, "phone": "+9779841234567", "home_district": "Jhapa"})
    await push(client, phone, [create(phone, first), create(phone, second)])
    await drain(client, pool)
    assert await _person_of(pool, first["id"]) == await _person_of(pool, second["id"])
    await push(client, phone, [create(phone, third)])
    await drain(client, pool)

    joined = await _person_of(pool, third["id"]) == await _person_of(pool, first["id"])
    pending = await decisions(client, staff, job="person", status="pending_review")
    assert joined == (merge == 0.5)
    if joined:
        assert pending == []
    else:
        # The strong pair is put to a human, with its score, not linked and not lost.
        by_candidate = {item["candidate_id"]: item for item in pending}
        assert {item["subject_id"] for item in pending} == {third["id"]}
        assert set(by_candidate) == {first["id"], second["id"]}
        assert by_candidate[second["id"]]["probability"] >= 0.9


async def test_refit_learns_the_orgs_own_model(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bodies = spread_raids(60)
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)
    r = await client.post("/v1/matching/incident/refit", headers=staff.headers)
    assert r.status_code == 202
    assert r.json() == {"job": "incident", "queued": True}
    assert (
        await client.post("/v1/matching/nonsense/refit", headers=staff.headers)
    ).status_code == 404
    await drain(client, pool)
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT model::text FROM match_models WHERE org_id = $1 AND job = 'incident'",
            staff.org_id,
        )
    model = msgspec.json.decode(stored, type=MatchModel)
    assert model.method == "em"
    # Its thresholds are the ones it expects to cluster the org's reports best by (the job's
    # defaults have no merge threshold), with a review band below the auto-link one.
    thresholds = model.thresholds
    assert thresholds.link in DEDUP_LINK_GRID and thresholds.merge in DEDUP_MERGE_GRID
    assert thresholds.review == min(incident_job().thresholds.review, thresholds.link / 2)


async def test_a_model_from_before_a_comparator_change_is_refitted_by_itself(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    fresh = starting_model(
        "incident", [(f.name, f.levels, f.tf_levels) for f in incident_job().fields]
    )
    first = fresh.fields[0]
    # As stored by an older engine: the first field had one comparison level fewer.
    older = msgspec.structs.replace(first, levels=first.levels[:-1], m=first.m[:-1], u=first.u[:-1])
    stale = msgspec.structs.replace(fresh, fields=(older, *fresh.fields[1:]), method="labels")
    async with pool.acquire() as conn:
        await conn.execute(
            Q.put_match_model, staff.org_id, "incident", msgspec.json.encode(stale).decode()
        )
    phone = await new_phone(client, staff)
    bodies = spread_raids(60)
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)  # matching sets the stale model aside and queues a refit
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT model::text FROM match_models WHERE org_id = $1 AND job = 'incident'",
            staff.org_id,
        )
    model = msgspec.json.decode(stored, type=MatchModel)
    assert model.method == "em"
    assert [f.levels for f in model.fields] == [f.levels for f in fresh.fields]


async def test_a_report_whose_matching_fails_is_retried_alone(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One push queues one job for its new reports; a report that fails there gets its own job
    and does not keep the others of its push from being matched."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    # Three unrelated incidents (far apart), so none becomes the others' match candidate.
    places = [(27.7172, 85.324), (25.2854, 51.531), (3.139, 101.6869)]
    bodies = [
        report(worker=None, location={"lat": lat, "lon": lon, "accuracy_m": 10.0})
        for lat, lon in places
    ]
    bad = uuid.UUID(bodies[1]["id"])
    real = storage_matching.match_report

    async def flaky(conn: Any, keyring: Any, cache: Any, org_id: uuid.UUID, rid: uuid.UUID) -> None:
        await real(conn, keyring, cache, org_id, rid)
        if rid == bad:  # after writing, so the savepoint must undo what it wrote
            raise RuntimeError("matching broke")

    monkeypatch.setattr(matching_jobs, "match_report", flaky)
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)
    async with pool.acquire() as conn:
        matched = {r["report_id"] for r in await conn.fetch(
            "SELECT report_id FROM incident_members WHERE org_id = $1", staff.org_id)}  # fmt: skip
        retry = await conn.fetchrow(
            "SELECT state, last_error FROM jobs WHERE kind = 'reports.match' AND dedupe_key = $1",
            str(bad),
        )
    assert matched == {uuid.UUID(bodies[0]["id"]), uuid.UUID(bodies[2]["id"])}
    assert retry is not None and retry["state"] == "pending"
    assert "matching broke" in retry["last_error"]

    monkeypatch.setattr(matching_jobs, "match_report", real)
    async with pool.acquire() as conn:  # the retry's backoff, skipped
        await conn.execute("UPDATE jobs SET run_after = now() WHERE dedupe_key = $1", str(bad))
    await drain(client, pool)
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM incident_members WHERE report_id = $1", bad)
            == 1
        )
