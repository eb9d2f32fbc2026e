"""An organisation pins its own matching thresholds per job: read, set, clear, audited, and in
force in the worker at its next match, whatever a refit chooses."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.matching.jobs import entity_job, person_job
from cases.matching.model import MatchModel, Thresholds, starting_model
from storage.db import Conn
from storage.match_settings import (
    PinnedThresholds,
    ThresholdSetting,
    pin_thresholds,
    pinned_thresholds,
)
from storage.queries import Q
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, create, new_phone, push, report
from tests.api.test_matching import _person_of, decisions, drain
from tests.api.test_matching_entity_model import refit, seed
from tests.integration.test_push_locking import until_waiting

pytestmark = pytest.mark.db

URL = "/v1/matching/{}/thresholds"
PERSON_DEFAULTS = msgspec.to_builtins(person_job().thresholds)


async def colleague(client: Client, pool: asyncpg.Pool, staff: Actor, role: Role) -> Actor:
    """Another staff member of `staff`'s organisation."""
    async with pool.acquire() as conn:
        slug = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", staff.org_id)
    return await make_actor(client, pool, role, org_slug=slug)


async def thresholds(client: Client, staff: Actor, job: str = "person") -> dict[str, Any]:
    r = await client.get(URL.format(job), headers=staff.headers)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def audit_rows(pool: asyncpg.Pool, org_id: uuid.UUID) -> list[tuple[str, str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT action, object_id, detail::text AS detail FROM audit_log "
            "WHERE org_id = $1 AND action LIKE 'matching.%' ORDER BY seq",
            org_id,
        )
    return [(r["action"], r["object_id"], msgspec.json.decode(r["detail"])) for r in rows]


async def test_pin_read_and_clear(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    manager = await colleague(client, pool, admin, Role.CASE_MANAGER)
    before = await thresholds(client, manager)
    assert before["source"] == "default" and before["pinned"] is None
    assert before["thresholds"] == before["model_thresholds"] == PERSON_DEFAULTS

    r = await client.put(
        URL.format("person"), json={"link": 0.97, "review": 0.6}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    pinned = r.json()
    assert pinned == await thresholds(client, manager)  # the case team reads what is in force
    assert pinned["source"] == "pinned" and pinned["model_source"] == "default"
    assert pinned["thresholds"] == {**PERSON_DEFAULTS, "link": 0.97, "review": 0.6}
    assert pinned["model_thresholds"] == PERSON_DEFAULTS
    assert pinned["pinned"]["updated_by"] == str(admin.user_id)
    assert (pinned["pinned"]["link"], pinned["pinned"]["review"], pinned["pinned"]["merge"]) == (
        0.97, 0.6, None)  # fmt: skip

    # A stored model is what the pin sits over, and what clearing the pin goes back to.
    fresh = starting_model("person", [(f.name, f.levels, f.tf_levels) for f in person_job().fields])
    fitted = msgspec.structs.replace(fresh, thresholds=Thresholds(link=0.8, review=0.4, merge=0.5))
    async with pool.acquire() as conn:
        await conn.execute(
            Q.put_match_model, admin.org_id, "person", msgspec.json.encode(fitted).decode()
        )
    again = await client.put(
        URL.format("person"),
        json={"link": 0.99, "review": 0.7, "merge": 0.9},
        headers=admin.headers,
    )
    assert again.status_code == 200, again.text
    over_fitted = again.json()
    assert over_fitted["source"] == "pinned" and over_fitted["model_source"] == "fitted"
    assert over_fitted["thresholds"]["link"] == 0.99 and over_fitted["thresholds"]["merge"] == 0.9
    assert over_fitted["model_thresholds"]["link"] == 0.8

    cleared = await client.delete(URL.format("person"), headers=admin.headers)
    assert cleared.status_code == 204
    after = await thresholds(client, manager)
    assert after["source"] == "fitted" and after["pinned"] is None
    assert (after["thresholds"]["link"], after["thresholds"]["review"]) == (0.8, 0.4)
    # Clearing again changes nothing and is not audited a second time.
    assert (await client.delete(URL.format("person"), headers=admin.headers)).status_code == 204

    assert await audit_rows(pool, admin.org_id) == [
        ("matching.thresholds_pin", "person",
         {"old": None, "new": {"link": 0.97, "review": 0.6, "merge": None}}),
        ("matching.thresholds_pin", "person",
         {"old": {"link": 0.97, "review": 0.6, "merge": None},
          "new": {"link": 0.99, "review": 0.7, "merge": 0.9}}),
        ("matching.thresholds_clear", "person",
         {"old": {"link": 0.99, "review": 0.7, "merge": 0.9}, "new": None}),
    ]  # fmt: skip


async def test_only_an_org_admin_changes_and_only_its_own_org(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    manager = await colleague(client, pool, admin, Role.CASE_MANAGER)
    analyst = await colleague(client, pool, admin, Role.ANALYST)
    body = {"link": 0.97, "review": 0.6}
    assert (
        await client.put(URL.format("person"), json=body, headers=manager.headers)
    ).status_code == 403
    assert (await client.delete(URL.format("person"), headers=manager.headers)).status_code == 403
    assert (await client.get(URL.format("person"), headers=analyst.headers)).status_code == 403
    assert (
        await client.put(URL.format("person"), json=body, headers=admin.headers)
    ).status_code == 200

    other = await make_actor(client, pool, Role.ORG_ADMIN)
    assert (await thresholds(client, other))["source"] == "default"
    theirs = await client.put(
        URL.format("person"), json={"link": 0.9, "review": 0.5}, headers=other.headers
    )
    assert theirs.status_code == 200
    assert (await client.delete(URL.format("person"), headers=other.headers)).status_code == 204
    mine = await thresholds(client, admin)
    assert mine["source"] == "pinned" and mine["thresholds"]["link"] == 0.97
    assert (await thresholds(client, other))["source"] == "default"
    assert [a for a, _, _ in await audit_rows(pool, admin.org_id)] == ["matching.thresholds_pin"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"link": 0.6, "review": 0.7}, 422),  # review above link
        ({"link": 1.0, "review": 0.5}, 422),
        ({"link": 0.9, "review": 0.0}, 422),
        ({"link": 0.9, "review": 0.5, "merge": 1.5}, 422),
        ({"link": 0.9}, 422),
        ({"link": "high", "review": 0.5}, 422),
        ({"link": 0.9, "review": 0.5, "ambiguity_margin": 2.0}, 422),  # unknown field
        (b'{"link": 0.9,', 400),  # not JSON
    ],
)
async def test_bad_thresholds_are_refused_and_nothing_is_written(
    client: Client, pool: asyncpg.Pool, body: dict[str, Any] | bytes, status: int
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    headers = {**admin.headers, "Content-Type": "application/json"}
    r = await client.put(URL.format("person"), content=raw, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"].startswith("urn:fairwatch:problem:")
    assert (await thresholds(client, admin))["source"] == "default"
    assert await audit_rows(pool, admin.org_id) == []


async def test_a_merge_pinned_on_the_entity_job_is_refused(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Entity resolution links mentions to registry entries and never merges groups: a merge
    pinned on it would be accepted and do nothing, so it is refused, naming the field."""
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    body = {"link": 0.97, "review": 0.4, "merge": 0.6}
    r = await client.put(URL.format("entity"), json=body, headers=admin.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == "urn:fairwatch:problem:validation"
    assert [(e["field"], e["source"]) for e in problem["errors"]] == [("merge", "body")]
    assert "never merges groups" in problem["errors"][0]["message"]
    assert (await thresholds(client, admin, "entity"))["source"] == "default"
    assert await audit_rows(pool, admin.org_id) == []

    # Without merge the same pin is taken; merge stays a dedup job's setting.
    del body["merge"]
    assert (
        await client.put(URL.format("entity"), json=body, headers=admin.headers)
    ).status_code == 200
    merged = {"link": 0.97, "review": 0.4, "merge": 0.6}
    person = await client.put(URL.format("person"), json=merged, headers=admin.headers)
    assert person.status_code == 200 and person.json()["thresholds"]["merge"] == 0.6


async def test_the_entity_job_never_reports_a_merge(client: Client, pool: asyncpg.Pool) -> None:
    """A merge stored on an entity pin before it was refused, or carried by its stored model,
    is neither shown nor handed to matching."""
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    entity = entity_job()
    fresh = starting_model("entity", [(f.name, f.levels, f.tf_levels) for f in entity.fields])
    fitted = msgspec.structs.replace(fresh, thresholds=Thresholds(link=0.9, review=0.3, merge=0.5))
    async with pool.acquire() as conn:
        await conn.execute(
            Q.put_match_model, admin.org_id, "entity", msgspec.json.encode(fitted).decode()
        )
        await conn.execute(
            Q.put_match_setting, admin.org_id, "entity", 0.97, 0.4, 0.6, admin.user_id
        )
        in_matching = await pinned_thresholds(conn, admin.org_id, "entity")
    assert in_matching == PinnedThresholds(0.97, 0.4, None)
    found = await thresholds(client, admin, "entity")
    assert found["source"] == "pinned" and found["model_source"] == "fitted"
    assert (found["thresholds"]["link"], found["thresholds"]["review"]) == (0.97, 0.4)
    assert found["thresholds"]["merge"] is None
    assert found["model_thresholds"]["merge"] is None
    assert found["pinned"]["merge"] is None


async def test_an_unknown_job_is_not_found(client: Client, pool: asyncpg.Pool) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    body = {"link": 0.9, "review": 0.5}
    for r in (
        await client.get(URL.format("nonsense"), headers=admin.headers),
        await client.put(URL.format("nonsense"), json=body, headers=admin.headers),
        await client.delete(URL.format("nonsense"), headers=admin.headers),
    ):
        assert r.status_code == 404, r.text
        assert r.json()["type"] == "urn:fairwatch:problem:not-found"


def same_worker(name: str, passport: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two reports of one worker that the default person model links (name order, passport
    spacing), at a probability below 0.999."""
    first = report(
        worker={"name": name, "date_of_birth": "1994-03-12", "passport_number": passport}
    )
    spaced = f"{passport[:2]} {passport[2:]}"
    words = name.split()
    turned = " ".join([words[-1], *words[:-1]])
    second = report(
        worker={"name": turned, "date_of_birth": "1994-03-12", "passport_number": spaced}
    )
    return first, second


async def test_a_pin_is_in_force_in_the_worker_at_its_next_match(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    manager = await colleague(client, pool, admin, Role.CASE_MANAGER)
    phone = await new_phone(client, manager)
    pairs = [
        same_worker("Ram Bahadur Thapa", "PA1234567"),
        same_worker("Hari Prasad Gurung", "PC2345678"),
        same_worker("Bishnu Maya Tamang", "PD3456789"),
    ]

    async def match(pair: tuple[dict[str, Any], dict[str, Any]]) -> bool:
        await push(client, phone, [create(phone, body) for body in pair])
        await drain(client, pool)
        return await _person_of(pool, pair[0]["id"]) == await _person_of(pool, pair[1]["id"])

    assert await match(pairs[0])  # the default model links them
    strict = {"link": 0.999, "review": 0.5}
    assert (
        await client.put(URL.format("person"), json=strict, headers=admin.headers)
    ).status_code == 200
    assert not await match(pairs[1])  # the worker's cached corpus now uses the pin
    pending = await decisions(client, manager, job="person", status="pending_review")
    # (Each report of the pair was matched against the other, both in the corpus already.)
    assert {frozenset((d["subject_id"], d["candidate_id"])) for d in pending} == {
        frozenset(b["id"] for b in pairs[1])
    }
    assert all(PERSON_DEFAULTS["link"] <= d["probability"] < 0.999 for d in pending)

    assert (await client.delete(URL.format("person"), headers=admin.headers)).status_code == 204
    assert await match(pairs[2])  # and the model's thresholds again once it is cleared


async def test_a_refit_keeps_the_pin_and_fits_without_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The entity refit chooses only the auto-link threshold and keeps the review one it starts
    from: it starts from the model, not from the pin, so clearing the pin restores what was
    fitted."""
    manager, _, _ = await seed(client, pool)
    admin = await colleague(client, pool, manager, Role.ORG_ADMIN)
    pin = {"link": 0.995, "review": 0.42}
    assert (
        await client.put(URL.format("entity"), json=pin, headers=admin.headers)
    ).status_code == 200

    model: MatchModel = await refit(client, pool, manager)
    assert model.method == "em"
    assert model.thresholds.review == entity_job().thresholds.review != pin["review"]
    assert 0.5 <= model.thresholds.link <= 0.99
    found = await thresholds(client, manager, "entity")
    assert found["source"] == "pinned" and found["model_source"] == "fitted"
    assert (found["thresholds"]["link"], found["thresholds"]["review"]) == (0.995, 0.42)
    assert found["model_thresholds"]["link"] == model.thresholds.link


async def test_two_first_pins_at_once_each_audit_what_they_replaced(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two admins pin a job that has no pin yet at the same moment: the second waits for the
    first, and its audit entry names the first's pin as the one it replaced (there is no row
    to lock before the first insert commits)."""
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    first_pin, second_pin = PinnedThresholds(0.9, 0.5), PinnedThresholds(0.97, 0.6)
    async with pool.acquire() as one, pool.acquire() as two, pool.acquire() as watcher:
        async with one.transaction():
            replaced_first, _ = await pin_thresholds(
                one, admin.org_id, "person", first_pin, admin.user_id
            )
            racing = asyncio.create_task(
                _pin_in_transaction(two, admin.org_id, second_pin, admin.user_id)
            )
            await until_waiting(watcher, two.get_server_pid(), racing)
        replaced_second = await racing
    assert replaced_first is None
    assert replaced_second is not None and replaced_second.pin == first_pin
    assert (await thresholds(client, admin))["pinned"]["link"] == 0.97


async def _pin_in_transaction(
    conn: Conn, org_id: uuid.UUID, pin: PinnedThresholds, user_id: uuid.UUID
) -> ThresholdSetting | None:
    async with conn.transaction():
        replaced, _ = await pin_thresholds(conn, org_id, "person", pin, user_id)
    return replaced
