"""A refitted person model matches again the reports the starting model left apart."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.matching.jobs import person_job
from cases.matching.model import starting_model
from server import matching_jobs
from storage import matching as storage_matching
from storage.db import Conn
from storage.keyring import Keyring
from storage.matching import MatchingCache
from storage.queries import Q
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, create, new_phone, push, report
from tests.api.test_matching import decisions, drain

pytestmark = pytest.mark.db


def _person_model(link: float) -> str:
    fresh = starting_model("person", [(f.name, f.levels, f.tf_levels) for f in person_job().fields])
    thresholds = msgspec.structs.replace(fresh.thresholds, link=link, review=0.5, merge=0.5)
    return msgspec.json.encode(msgspec.structs.replace(fresh, thresholds=thresholds)).decode()


async def _persons(pool: asyncpg.Pool, org_id: uuid.UUID) -> dict[str, uuid.UUID]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT report_id::text AS report_id, person_id FROM person_members WHERE org_id = $1",
            org_id,
        )
    return {r["report_id"]: r["person_id"] for r in rows}


async def _refit_to(
    client: Client, pool: asyncpg.Pool, staff: Actor, monkeypatch: pytest.MonkeyPatch, link: float
) -> None:
    """POST the refit route; the fit itself stands in for EM (too few reports here to fit):
    it stores a model that auto-links at `link`, as a real refit stores the one it fitted."""

    async def refit(
        conn: Conn, keyring: Keyring, cache: MatchingCache, org_id: uuid.UUID, job: str
    ) -> str:
        await conn.execute(Q.put_match_model, org_id, job, _person_model(link))
        cache.forget(org_id)
        return "em"

    monkeypatch.setattr(matching_jobs, "refit_model", refit)
    r = await client.post("/v1/matching/person/refit", headers=staff.headers)
    assert r.status_code == 202
    await drain(client, pool)


async def test_a_refit_joins_the_reports_the_starting_model_left_apart(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    async with pool.acquire() as conn:  # nothing links at first: every pair goes to review
        await conn.execute(Q.put_match_model, staff.org_id, "person", _person_model(1.0))
    ram = {"name": "Ram Bahadur Thapa", "date_of_birth": "1994-03-12", "home_district": "Kaski"}
    sita = {"name": "Sita Kumari Rai", "date_of_birth": "1990-07-01"}
    hari = {"name": "Hari Prasad Gurung", "date_of_birth": "1988-05-05"}
    workers: dict[str, Any] = {
        "ram1": {**ram, "passport_number": "PA1234567"},
        "ram2": {**ram, "name": "Thapa Ram Bahadur", "passport_number": "PA 1234567"},
        "sita1": {**sita, "passport_number": "PB7654321"},
        "sita2": {**sita, "passport_number": "PB7654321", "phone": "+9779841234567"},
        "gita": {"name": "Gita Devi Sharma", "date_of_birth": "1985-01-09"},
        "hari1": {**hari, "passport_number": "PC1111111"},
        "hari2": {**hari, "passport_number": "PC1111111"},
    }
    bodies = {key: report(worker=worker) for key, worker in workers.items()}
    ids = {key: body["id"] for key, body in bodies.items()}
    phone = await new_phone(client, staff)
    for body in bodies.values():  # one push each: each report is matched after the ones before
        await push(client, phone, [create(phone, body)])
    await drain(client, pool)
    before = await _persons(pool, staff.org_id)
    assert len(set(before.values())) == len(bodies)  # all apart
    pending = {
        (item["subject_id"], item["candidate_id"]): item
        for item in await decisions(client, staff, job="person", status="pending_review")
    }
    # Each report was matched against the reports matched before it.
    assert set(pending) == {
        (ids["ram2"], ids["ram1"]),
        (ids["sita2"], ids["sita1"]),
        (ids["hari2"], ids["hari1"]),
    }
    # A case manager says the two Hari reports are two people.
    rejected = pending[(ids["hari2"], ids["hari1"])]["id"]
    r = await client.post(f"/v1/matching/decisions/{rejected}/reject", headers=staff.headers)
    assert r.status_code == 200, r.text

    # Batches of two, so the rejoin runs as a chain of jobs, each after the last one's cursor.
    monkeypatch.setattr(storage_matching, "REJOIN_BATCH", 2)
    await _refit_to(client, pool, staff, monkeypatch, link=0.9)

    after = await _persons(pool, staff.org_id)
    assert after[ids["ram1"]] == after[ids["ram2"]]
    assert after[ids["sita1"]] == after[ids["sita2"]]
    assert after[ids["hari1"]] != after[ids["hari2"]]  # the human's answer stands
    assert len({after[ids[k]] for k in ("ram1", "sita1", "gita", "hari1", "hari2")}) == 5
    # The suggestions awaiting review became the matcher's links, scored by the new model.
    assert await decisions(client, staff, job="person", status="pending_review") == []
    linked = {
        (item["subject_id"], item["candidate_id"]): item
        for item in await decisions(client, staff, job="person", status="auto_linked")
    }
    assert set(linked) == {(ids["ram2"], ids["ram1"]), (ids["sita2"], ids["sita1"])}
    link = linked[(ids["ram2"], ids["ram1"])]
    assert link["id"] == pending[(ids["ram2"], ids["ram1"])]["id"]
    assert link["decided_by"] == "matcher" and link["probability"] >= 0.9

    # Running it again changes nothing.
    async with pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM match_decisions WHERE org_id = $1", staff.org_id
        )
    await _refit_to(client, pool, staff, monkeypatch, link=0.9)
    assert await _persons(pool, staff.org_id) == after
    async with pool.acquire() as conn:
        assert count == await conn.fetchval(
            "SELECT count(*) FROM match_decisions WHERE org_id = $1", staff.org_id
        )

    # The link is undone like any other: the report goes back to the person it had alone.
    r = await client.post(f"/v1/matching/decisions/{link['id']}/undo", headers=staff.headers)
    assert r.status_code == 200, r.text
    undone = await _persons(pool, staff.org_id)
    assert undone[ids["ram2"]] == before[ids["ram2"]] != undone[ids["ram1"]]
    # ... and the next refit does not link it again: a human said no.
    await _refit_to(client, pool, staff, monkeypatch, link=0.9)
    assert await _persons(pool, staff.org_id) == undone


async def test_a_report_joins_no_one_a_human_said_it_is_not(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A human refused the pair; the refit leaves both reports where they are."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    async with pool.acquire() as conn:
        await conn.execute(Q.put_match_model, staff.org_id, "person", _person_model(1.0))
    worker = {"name": "Bishnu Maya Tamang", "date_of_birth": "1992-02-02", "passport_number": "PD1"}
    first, second = report(worker=worker), report(worker=worker)
    phone = await new_phone(client, staff)
    await push(client, phone, [create(phone, first)])
    await push(client, phone, [create(phone, second)])
    await drain(client, pool)
    (suggestion,) = await decisions(client, staff, job="person", status="pending_review")
    assert suggestion["subject_id"] == second["id"]
    r = await client.post(
        f"/v1/matching/decisions/{suggestion['id']}/reject", headers=staff.headers
    )
    assert r.status_code == 200, r.text
    await _refit_to(client, pool, staff, monkeypatch, link=0.9)
    persons = await _persons(pool, staff.org_id)
    assert persons[first["id"]] != persons[second["id"]]


async def test_a_national_phone_number_matches_after_the_worker_restarts(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index a worker loads from the database reads each report's phone with the report's
    origin country, as when the report was matched: "0917 123 4567" from the Philippines is
    +639171234567 whichever process reads it."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    worker = {"name": "Maricel Dela Cruz", "phone": "0917 123 4567"}
    first = report(worker=worker, origin_country="PH")
    second = report(worker={**worker, "phone": "+63 917 123 4567"}, origin_country="PH")
    await push(client, phone, [create(phone, first)])
    await drain(client, pool)
    monkeypatch.setattr(matching_jobs, "_CACHE", MatchingCache())  # a new worker process
    await push(client, phone, [create(phone, second)])
    await drain(client, pool)
    (decision,) = [
        d for d in await decisions(client, staff, job="person") if d["subject_id"] == second["id"]
    ]
    levels = {f["field"]: f["level"] for f in decision["explanation"]["fields"]}
    assert levels["phone"] == "exact"
