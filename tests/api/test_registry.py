"""The registry: CRUD with optimistic versions, idempotent CSV import, and delivery to devices."""

from __future__ import annotations

import asyncpg
import h3
import pytest

from cases.accounts import Role
from cases.registry import REGION_RESOLUTION, EntityDraft, EntityKind
from storage.registry import RegistryRepository
from tests.api.conftest import make_actor
from tests.api.sync_support import Client, enroll, enrollment_code, new_monitor, pull_all

pytestmark = pytest.mark.db

DOHA = (25.2854, 51.531)
KATHMANDU = (27.7172, 85.324)

CSV = """licence_number,issuing_authority,legal_name,status,country,phone,aliases
 LIC-0042 ,DoFE Nepal,ABC Man Power Pvt. Ltd.,active,NP,01-4412345,ए बि सि म्यानपावर
LIC-0077,DoFE Nepal,Everest Overseas Recruitment,suspended,NP,+977 1 5523456,
,DoFE Nepal,No Licence Number Ltd,active,NP,,
LIC-0099,DoFE Nepal,Bad Country Co,active,Nepal,,
"""


async def test_crud_with_versions_and_org_scope(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    body = {
        "kind": "employer",
        "legal_name": "Al Noor Trading W.L.L.",
        "aliases": ["النور للتجارة ذ.م.م", "Al-Noor Trading"],
        "phones": ["4412 3456"],
        "country": "QA",
        "latitude": DOHA[0],
        "longitude": DOHA[1],
        "licences": [{"number": "cr 12-345", "issuing_authority": "MoCI Qatar"}],
    }
    created = await client.post("/v1/registry/entities", json=body, headers=staff.headers)
    assert created.status_code == 201, created.text
    entity = created.json()
    assert entity["phones"] == ["+97444123456"]
    assert entity["licences"][0]["number"] == "CR12345"
    assert entity["region_cell"] == h3.latlng_to_cell(*DOHA, REGION_RESOLUTION)
    update = {**body, "legal_name": "Al Noor Trading WLL", "version": entity["version"]}
    url = f"/v1/registry/entities/{entity['id']}"
    ok = await client.put(url, json=update, headers=staff.headers)
    assert ok.status_code == 200
    assert ok.json()["version"] == 2
    stale = await client.put(url, json=update, headers=staff.headers)
    assert stale.status_code == 409
    assert stale.json()["current_version"] == 2
    other = await make_actor(client, pool, Role.CASE_MANAGER)
    assert (await client.get(url, headers=other.headers)).status_code == 404
    assert (await client.put(url, json=update, headers=other.headers)).status_code == 404
    listed = await client.get("/v1/registry/entities", headers=other.headers)
    assert listed.json()["items"] == []
    branch = {
        **body,
        "legal_name": "Al Noor Trading - Industrial Area branch",
        "licences": [],
        "parent_id": entity["id"],
        "parent_relation": "branch_of",
    }
    child = await client.post("/v1/registry/entities", json=branch, headers=staff.headers)
    assert child.status_code == 201
    cycle = {**body, "parent_id": child.json()["id"], "parent_relation": "branch_of"}
    cycle["version"] = 2
    refused = await client.put(url, json=cycle, headers=staff.headers)
    assert refused.status_code == 422
    assert refused.json()["type"] == "urn:fairwatch:problem:invalid-parent"
    analyst = await make_actor(client, pool, Role.ANALYST, org_slug=None)
    assert (
        await client.post("/v1/registry/entities", json=body, headers=analyst.headers)
    ).status_code == 403


async def test_licence_list_import_is_idempotent(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    headers = {**staff.headers, "content-type": "text/csv"}
    first = await client.post("/v1/registry/import", content=CSV.encode(), headers=headers)
    assert first.status_code == 200, first.text
    summary = first.json()
    assert (summary["created"], summary["updated"], summary["unchanged"]) == (2, 0, 0)
    assert sorted(p["line"] for p in summary["problems"]) == [4, 5]
    again = await client.post("/v1/registry/import", content=CSV.encode(), headers=headers)
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 2)
    changed = CSV.replace("suspended", "revoked")
    third = await client.post("/v1/registry/import", content=changed.encode(), headers=headers)
    assert (third.json()["created"], third.json()["updated"]) == (0, 1)
    listed = (await client.get("/v1/registry/entities", headers=staff.headers)).json()["items"]
    assert len(listed) == 2
    abc = next(e for e in listed if e["licences"][0]["number"] == "LIC0042")
    assert abc["phones"] == ["+97714412345"]
    assert "ए बि सि म्यानपावर" in abc["aliases"]
    bad = await client.post("/v1/registry/import", content=b"\xff\xfe", headers=headers)
    assert bad.status_code == 400
    wrong_type = await client.post(
        "/v1/registry/import", content=CSV.encode(), headers=staff.headers
    )
    assert wrong_type.status_code == 415


async def test_shared_registry_is_readable_by_every_org(client: Client, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        shared = await RegistryRepository(conn).add(
            None, EntityDraft(kind=EntityKind.RECRUITMENT_AGENCY, legal_name="Public Agency")
        )
    for _ in range(2):
        staff = await make_actor(client, pool, Role.ANALYST)
        got = await client.get(f"/v1/registry/entities/{shared.id}", headers=staff.headers)
        assert got.status_code == 200
        assert got.json()["org_id"] is None
        gone = await client.delete(f"/v1/registry/entities/{shared.id}", headers=staff.headers)
        assert gone.status_code == 403


async def test_devices_get_the_registry_of_their_region(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    doha_cell = h3.latlng_to_cell(*DOHA, 7)  # finer than the registry's cells: widened
    monitor = await new_monitor(client, staff, region_cells=[doha_cell])
    phone = await enroll(client, await enrollment_code(client, staff, monitor))
    near = {
        "kind": "employer",
        "legal_name": "Doha Builders",
        "latitude": DOHA[0],
        "longitude": DOHA[1],
    }
    far = {
        "kind": "employer",
        "legal_name": "Valley Bricks",
        "latitude": KATHMANDU[0],
        "longitude": KATHMANDU[1],
    }
    r_near = await client.post("/v1/registry/entities", json=near, headers=staff.headers)
    await client.post("/v1/registry/entities", json=far, headers=staff.headers)
    changes, cursor = await pull_all(client, phone)
    entities = [c for c in changes if c["kind"] == "entity"]
    assert [e["name"] for e in entities] == ["Doha Builders"]
    moved = {**near, "latitude": KATHMANDU[0], "longitude": KATHMANDU[1], "version": 1}
    url = f"/v1/registry/entities/{r_near.json()['id']}"
    assert (await client.put(url, json=moved, headers=staff.headers)).status_code == 200
    after, _ = await pull_all(client, phone, cursor)
    assert [(c["kind"], c.get("reason")) for c in after] == [("tombstone", "out_of_scope")]
