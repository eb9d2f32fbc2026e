"""Entity resolution learns each organisation's own model: EM on its mentions, or its labels.

Until an org refits it, entity resolution runs the engine's hand-set starting model, which
sends a bare, lower-case agency name (no legal form, no licence, no phone) to review. The
org's own mentions teach it that such a name is enough when nothing else in the registry
carries it.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.matching.model import MatchModel
from storage.queries import Q
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, create, new_phone, push, report
from tests.api.test_matching import drain

pytestmark = pytest.mark.db

# Ten licensed agencies; two of them share their distinctive word ("Everest").
AGENCIES = [
    ("Everest Overseas Pvt. Ltd.", "LIC-1001", "01-4410001"),
    ("Everest Manpower Services Pvt. Ltd.", "LIC-1002", "01-4410002"),
    ("Himalayan Placement Pvt. Ltd.", "LIC-1003", "01-4410003"),
    ("Sagarmatha Job Link Pvt. Ltd.", "LIC-1004", "01-4410004"),
    ("Lumbini Human Resources Pvt. Ltd.", "LIC-1005", "01-4410005"),
    ("Annapurna Recruiting Agency Pvt. Ltd.", "LIC-1006", "01-4410006"),
    ("Gorkha Career Consultants Pvt. Ltd.", "LIC-1007", "01-4410007"),
    ("Janakpur Global Staffing Pvt. Ltd.", "LIC-1008", "01-4410008"),
    ("Pokhara International Manpower Pvt. Ltd.", "LIC-1009", "01-4410009"),
    ("Karnali Employment Bridge Pvt. Ltd.", "LIC-1010", "01-4410010"),
]
MENTIONS = 60
# The mentions written as a bare lower-case name without licence or phone (see `mention`).
BARE = {i for i in range(MENTIONS) if i % 4 == 3 and i % 3 != 0 and i % 5 != 1}


def mention(i: int) -> dict[str, Any]:
    """How monitors write the agencies: spelling and suffix variants, sometimes an identifier."""
    name, licence, phone = AGENCIES[i % len(AGENCIES)]
    core = name.removesuffix(" Pvt. Ltd.")
    written = [f"{core} Private Limited", name.upper(), f"{core} P. Ltd", core.lower()][i % 4]
    found: dict[str, Any] = {"name": written}
    if i % 3 == 0:
        found["licence_number"] = licence.lower().replace("-", " ")
    if i % 5 == 1:
        found["phone"] = phone
    return found


async def registry(client: Client, staff: Actor) -> list[str]:
    ids = []
    for name, licence, phone in AGENCIES:
        body = {
            "kind": "recruitment_agency",
            "legal_name": name,
            "country": "NP",
            "phones": [phone],
            "licences": [{"number": licence, "issuing_authority": "DoFE Nepal"}],
        }
        r = await client.post("/v1/registry/entities", json=body, headers=staff.headers)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids


def recruiter_report(party: dict[str, Any]) -> dict[str, Any]:
    return report(origin_country="NP", recruiter=party, employer=None, worker=None)


async def entity_decisions(pool: asyncpg.Pool, org_id: uuid.UUID) -> dict[str, tuple[str, str]]:
    """Report id -> (candidate entity, status) of each entity decision of the org."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT subject_id, candidate_id, status FROM match_decisions "
            "WHERE org_id = $1 AND job = 'entity'",
            org_id,
        )
    return {r["subject_id"].split(":")[0]: (r["candidate_id"], r["status"]) for r in rows}


async def stored_model(pool: asyncpg.Pool, org_id: uuid.UUID) -> MatchModel | None:
    async with pool.acquire() as conn:
        raw = await conn.fetchval(Q.get_match_model, org_id, "entity")
    return msgspec.json.decode(raw, type=MatchModel) if raw else None


async def refit(client: Client, pool: asyncpg.Pool, staff: Actor) -> MatchModel:
    r = await client.post("/v1/matching/entity/refit", headers=staff.headers)
    assert r.status_code == 202 and r.json() == {"job": "entity", "queued": True}
    await drain(client, pool)
    model = await stored_model(pool, staff.org_id)
    assert model is not None
    return model


async def seed(client: Client, pool: asyncpg.Pool) -> tuple[Actor, list[str], list[str]]:
    """The registry and 60 reports naming its agencies, matched with the starting model."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    agencies = await registry(client, staff)
    phone = await new_phone(client, staff)
    bodies = [recruiter_report(mention(i)) for i in range(MENTIONS)]
    await push(client, phone, [create(phone, b) for b in bodies])
    await drain(client, pool)
    return staff, agencies, [b["id"] for b in bodies]


async def probe(
    client: Client, pool: asyncpg.Pool, staff: Actor, party: dict[str, Any]
) -> tuple[str, str] | None:
    phone = await new_phone(client, staff)
    body = recruiter_report(party)
    await push(client, phone, [create(phone, body)])
    await drain(client, pool)
    return (await entity_decisions(pool, staff.org_id)).get(body["id"])


async def test_em_on_the_orgs_mentions_links_what_the_starting_model_sent_to_review(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff, agencies, reports = await seed(client, pool)
    assert await stored_model(pool, staff.org_id) is None  # the starting model so far
    before = await entity_decisions(pool, staff.org_id)
    expected = {reports[i]: agencies[i % len(AGENCIES)] for i in range(MENTIONS)}
    assert {r: c for r, (c, _) in before.items()} == expected  # every best guess is right
    pending = {r for r, (_, status) in before.items() if status == "pending_review"}
    assert pending == {reports[i] for i in BARE}

    model = await refit(client, pool, staff)
    assert model.method == "em"
    assert model.choice is not None  # the choice among candidates is the fitted posterior
    assert 0.5 <= model.thresholds.link <= 0.99

    bare = await probe(client, pool, staff, {"name": "karnali employment bridge"})
    assert bare == (agencies[9], "auto_linked")
    # Still not a guess between the two Everests, nor a link for an agency not in the registry.
    for party in ({"name": "Everest Pvt Ltd"}, {"name": "Kathmandu Dream Overseas Pvt Ltd"}):
        found = await probe(client, pool, staff, party)
        assert found is None or found[1] == "pending_review", (party, found)


async def test_too_few_mentions_keep_the_starting_model(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    await registry(client, staff)
    phone = await new_phone(client, staff)
    await push(client, phone, [create(phone, recruiter_report(mention(i))) for i in range(5)])
    await drain(client, pool)
    r = await client.post("/v1/matching/entity/refit", headers=staff.headers)
    assert r.status_code == 202
    await drain(client, pool)
    assert await stored_model(pool, staff.org_id) is None


async def test_the_case_teams_decisions_refit_the_entity_model(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff, agencies, reports = await seed(client, pool)
    # 22 more reports name "Gorkha Career Consultants" with a licence number that is not the
    # registered agency's: the starting model queues them, and the team, having checked the
    # licence, says it is another agency using the name.
    other = {"name": "Gorkha Career Consultants Pvt Ltd", "licence_number": "LIC-2999"}
    phone = await new_phone(client, staff)
    await push(client, phone, [create(phone, recruiter_report(other)) for _ in range(22)])
    await drain(client, pool)
    queue = await client.get(
        "/v1/matching/decisions",
        params={"job": "entity", "status": "pending_review", "limit": "200"},
        headers=staff.headers,
    )
    assert queue.status_code == 200, queue.text
    items = queue.json()["items"]
    assert len(items) == len(BARE) + 22
    bare_ids = {reports[i] for i in BARE}
    for item in items:
        verdict = "accept" if item["subject_id"].split(":")[0] in bare_ids else "reject"
        r = await client.post(
            f"/v1/matching/decisions/{item['id']}/{verdict}", headers=staff.headers
        )
        assert r.status_code == 200, r.text
    model = await refit(client, pool, staff)
    assert model.method == "labels"
    assert model.choice is not None
    # Eight accepted bare names taught it what the starting model sent to review ...
    bare = await probe(client, pool, staff, {"name": "karnali employment bridge"})
    assert bare == (agencies[9], "auto_linked")
    # ... and 22 rejections that a different licence number is another agency.
    again = await probe(client, pool, staff, other)
    assert again is None or again[1] == "pending_review"
