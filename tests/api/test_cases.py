"""Cases through the API: creation, workflow moves, version checks, org scoping, the list."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from typing import Any

import asyncpg
import h3
import pytest

from cases.accounts import Role
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import Client, amend, create, new_phone, push, report, withdraw
from tests.api.test_matching import drain

pytestmark = pytest.mark.db


async def pushed_reports(client: Client, staff: Actor, *bodies: dict[str, Any]) -> list[str]:
    phone = await new_phone(client, staff)
    result = await push(client, phone, [create(phone, body) for body in bodies])
    assert [r["status"] for r in result["results"]] == ["applied"] * len(bodies), result
    return [str(body["id"]) for body in bodies]


async def open_case(client: Client, staff: Actor, report_ids: list[str], **extra: Any) -> Any:
    r = await client.post(
        "/v1/cases", json={"report_ids": report_ids, **extra}, headers=staff.headers
    )
    assert r.status_code == 201, r.text
    return r.json()


async def move(client: Client, staff: Actor, case: dict[str, Any], **body: Any) -> Any:
    return await client.post(
        f"/v1/cases/{case['id']}/transitions",
        json={"version": case["version"], **body},
        headers=staff.headers,
    )


async def test_case_opened_from_reports_derives_priority_and_due_date(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    ids = await pushed_reports(client, staff, report())
    case = await open_case(client, staff, ids, title="Passports held at Al Noor")
    # Document retention with recruitment fees, severity 4 and 12 workers: high (72 h SLA).
    assert case["status"] == "new"
    assert case["priority"] == "high"
    assert any(r["rule"] == "report_severity" for r in case["priority_reasons"])
    assert case["report_count"] == 1
    assert sorted(case["categories"]) == ["FL.DOC_RETENTION", "FR.RECRUITMENT_FEE"]
    assert case["allowed_transitions"] == ["closed", "triage"]
    timeline = await client.get(f"/v1/cases/{case['id']}/timeline", headers=staff.headers)
    assert [e["kind"] for e in timeline.json()] == ["created"]
    assert timeline.json()[0]["actor_id"] == str(staff.user_id)

    again = await client.post("/v1/cases", json={"report_ids": ids}, headers=staff.headers)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:fairwatch:problem:report-in-other-case"


async def test_workflow_moves_and_illegal_transition_lists_allowed(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    case = await open_case(client, staff, await pushed_reports(client, staff, report()))

    illegal = await move(client, staff, case, to="resolved")
    assert illegal.status_code == 409
    problem = illegal.json()
    assert problem["type"] == "urn:fairwatch:problem:illegal-transition"
    assert problem["allowed"] == ["closed", "triage"]

    triaged = await move(client, staff, case, to="triage")
    assert triaged.status_code == 200, triaged.text
    unassigned = await move(client, staff, triaged.json(), to="open")
    assert unassigned.status_code == 422
    assert unassigned.json()["code"] == "assignee_required"
    opened = await move(client, staff, triaged.json(), to="open", assign_to=str(staff.user_id))
    assert opened.status_code == 200, opened.text
    assert opened.json()["assignee_id"] == str(staff.user_id)
    no_reason = await move(client, staff, opened.json(), to="closed", outcome="unreachable")
    assert no_reason.json()["code"] == "reason_required"
    closed = await move(
        client, staff, opened.json(), to="closed", outcome="unreachable", reason="phone off 3 wks"
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["outcome"] == "unreachable"
    assert closed.json()["version"] == case["version"] + 3

    timeline = await client.get(f"/v1/cases/{case['id']}/timeline", headers=staff.headers)
    events = timeline.json()
    assert [(e["from_state"], e["to_state"]) for e in events[1:]] == [
        ("new", "triage"),
        ("triage", "open"),
        ("open", "closed"),
    ]
    assert events[-1]["detail"]["reason"] == "phone off 3 wks"


async def test_stale_write_gets_409_with_current_version(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    case = await open_case(client, staff, await pushed_reports(client, staff, report()))
    ok = await move(client, staff, case, to="triage")
    assert ok.status_code == 200
    stale = await client.post(
        f"/v1/cases/{case['id']}/notes",
        json={"version": case["version"], "body": "called the worker"},
        headers=staff.headers,
    )
    assert stale.status_code == 409
    assert stale.json()["type"] == "urn:fairwatch:problem:stale-version"
    assert stale.json()["current_version"] == ok.json()["version"]


async def test_two_concurrent_writes_one_wins_the_other_409(
    client: Client, pool: asyncpg.Pool
) -> None:
    admin = await make_actor(client, pool, Role.ORG_ADMIN)
    other = await make_actor(client, pool, Role.CASE_MANAGER, org_slug=await _slug(pool, admin))
    case = await open_case(client, admin, await pushed_reports(client, admin, report()))
    note = client.post(
        f"/v1/cases/{case['id']}/notes",
        json={"version": case["version"], "body": "worker asked for legal advice"},
        headers=other.headers,
    )
    assign = client.put(
        f"/v1/cases/{case['id']}/assignee",
        json={"version": case["version"], "assignee_id": str(other.user_id)},
        headers=admin.headers,
    )
    results = await asyncio.gather(note, assign)
    assert sorted(r.status_code for r in results) == [200, 409] or sorted(
        r.status_code for r in results
    ) == [201, 409]
    loser = next(r for r in results if r.status_code == 409)
    assert loser.json()["current_version"] == case["version"] + 1
    current = await client.get(f"/v1/cases/{case['id']}", headers=admin.headers)
    assert current.json()["version"] == case["version"] + 1  # exactly one write landed


async def _slug(pool: asyncpg.Pool, actor: Actor) -> str:
    async with pool.acquire() as conn:
        slug: str = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", actor.org_id)
    return slug


async def test_cases_are_org_scoped_and_analysts_only_read_views(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    case = await open_case(
        client, staff, await pushed_reports(client, staff, report()), title="Ram's case"
    )
    stranger = await make_actor(client, pool, Role.ORG_ADMIN)
    assert (
        await client.get(f"/v1/cases/{case['id']}", headers=stranger.headers)
    ).status_code == 404
    crossed = await move(client, stranger, case, to="triage")
    assert crossed.status_code == 404
    listed = await client.get("/v1/cases", headers=stranger.headers)
    assert listed.json()["items"] == []

    analyst = await make_actor(client, pool, Role.ANALYST, org_slug=await _slug(pool, staff))
    seen = (await client.get(f"/v1/cases/{case['id']}", headers=analyst.headers)).json()
    assert "title" not in seen and "links" not in seen
    assert set(seen["location"]) == {"h3_cell"}
    assert h3.get_resolution(seen["location"]["h3_cell"]) == 7
    # The organisation decides how coarse: its admin sets the analysts' cell resolution.
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=await _slug(pool, staff))
    r = await client.put(
        "/v1/org/privacy", json={"analyst_cell_resolution": 5}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    coarser = (await client.get(f"/v1/cases/{case['id']}", headers=analyst.headers)).json()
    assert h3.get_resolution(coarser["location"]["h3_cell"]) == 5
    listed_cells = (await client.get("/v1/cases", headers=analyst.headers)).json()["items"]
    assert {h3.get_resolution(c["location"]["h3_cell"]) for c in listed_cells} == {5}
    assert (await move(client, analyst, case, to="triage")).status_code == 403
    own = (await client.get(f"/v1/cases/{case['id']}", headers=staff.headers)).json()
    assert own["title"] == "Ram's case" and {"lat", "lon"} <= set(own["location"])
    assert [link["kind"] for link in own["links"]] == ["report"]


async def test_list_filters_search_counts_and_pages(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    low = report(
        categories=["FL.EXCESSIVE_OVERTIME"],
        severity=2,
        workers_affected=1,
        narrative="Shifts of fourteen hours at the garment factory",
        location={"lat": 3.139, "lon": 101.6869},
    )
    ids = await pushed_reports(client, staff, report(), low, report(narrative="Wages unpaid"))
    cases = [await open_case(client, staff, [rid]) for rid in ids]
    await move(client, staff, cases[0], to="triage")

    async def page(**params: Any) -> Any:
        r = await client.get("/v1/cases", params=params, headers=staff.headers)
        assert r.status_code == 200, r.text
        return r.json()

    everything = await page()
    assert [i["id"] for i in everything["items"]] == [c["id"] for c in reversed(cases)]
    assert everything["counts"]["new"] == 2 and everything["counts"]["triage"] == 1
    assert [i["id"] for i in (await page(status="triage"))["items"]] == [cases[0]["id"]]
    searched = await page(q="garment factory")
    assert [i["id"] for i in searched["items"]] == [cases[1]["id"]]
    assert searched["counts"]["new"] == 1
    by_category = await page(category="FL.EXCESSIVE_OVERTIME")
    assert [i["id"] for i in by_category["items"]] == [cases[1]["id"]]
    kl = str(h3.latlng_to_cell(3.139, 101.6869, 5))
    assert [i["id"] for i in (await page(cell=kl))["items"]] == [cases[1]["id"]]
    bad_cell = await client.get("/v1/cases", params={"cell": "nope"}, headers=staff.headers)
    assert bad_cell.status_code == 422
    urgent = await page(sort="priority")
    assert urgent["items"][-1]["id"] == cases[1]["id"]  # normal after the two high cases
    assert (await page(overdue="true"))["items"] == []

    first = await page(limit=2)
    assert len(first["items"]) == 2 and first["next_page_token"]
    rest = await page(limit=2, page_token=first["next_page_token"])
    assert [i["id"] for i in first["items"] + rest["items"]] == [
        i["id"] for i in everything["items"]
    ]
    assert rest["next_page_token"] is None
    wrong_sort = await client.get(
        "/v1/cases",
        params={"sort": "due", "page_token": first["next_page_token"]},
        headers=staff.headers,
    )
    assert wrong_sort.status_code == 400


async def test_list_and_export_select_the_same_cases_for_the_same_filters(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    ids = await pushed_reports(client, staff, report(), report(), report())
    cases = [await open_case(client, staff, [rid]) for rid in ids]
    triaged = await move(client, staff, cases[0], to="triage")
    assert triaged.status_code == 200, triaged.text
    opened = await move(client, staff, triaged.json(), to="open", assign_to=str(staff.user_id))
    assert opened.status_code == 200, opened.text

    async def both(params: dict[str, str]) -> tuple[list[str], list[str]]:
        listed = await client.get("/v1/cases", params=params, headers=staff.headers)
        exported = await client.get("/v1/cases/export.csv", params=params, headers=staff.headers)
        assert listed.status_code == 200 and exported.status_code == 200, exported.text
        rows = csv.DictReader(io.StringIO(exported.text))
        return sorted(i["id"] for i in listed.json()["items"]), sorted(r["id"] for r in rows)

    mine = await both({"assignee_id": str(staff.user_id)})
    assert mine == ([cases[0]["id"]], [cases[0]["id"]])
    nobody = await both({"unassigned": "true"})
    assert nobody[0] == nobody[1] == sorted(c["id"] for c in cases[1:])
    assert await both({"status": "open"}) == mine
    bad = await client.get("/v1/cases/export.csv", params={"cell": "x" * 21}, headers=staff.headers)
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"] == [
        {"field": "cell", "message": "Expected `str` of length <= 20", "source": "query"}
    ]


async def test_manual_priority_and_links(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.ORG_ADMIN)
    first, second = await pushed_reports(
        client, staff, report(), report(categories=["FL.PHYSICAL_VIOLENCE"], severity=5)
    )
    case = await open_case(client, staff, [first])
    linked = await client.post(
        f"/v1/cases/{case['id']}/reports",
        json={"version": case["version"], "report_ids": [second]},
        headers=staff.headers,
    )
    assert linked.status_code == 200, linked.text
    # Violence with severity 5: derived priority rises to critical, due date moves with it.
    assert linked.json()["priority"] == "critical"
    assert linked.json()["due_at"] < case["due_at"]
    lowered = await client.put(
        f"/v1/cases/{case['id']}/priority",
        json={"version": linked.json()["version"], "priority": "normal", "reason": "checked"},
        headers=staff.headers,
    )
    assert lowered.status_code == 200, lowered.text
    assert lowered.json()["priority_manual"] is True
    kinds = [
        e["kind"]
        for e in (
            await client.get(f"/v1/cases/{case['id']}/timeline", headers=staff.headers)
        ).json()
    ]
    assert kinds == ["created", "reports_linked", "priority_changed", "priority_changed"]
    unknown = await client.post(
        f"/v1/cases/{case['id']}/entities",
        json={
            "version": lowered.json()["version"],
            "entity_id": str(uuid.uuid4()),
            "role": "employer",
        },
        headers=staff.headers,
    )
    assert unknown.status_code == 404


async def test_a_case_follows_its_reports_amendments_and_withdrawals(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A monitor raises a report's severity to 5 from the phone: the case's derived priority
    rises with it once the worker has followed the change; a withdrawn report no longer holds a
    case's priority up; a priority a person chose stays."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    mild = report(severity=1, workers_affected=1, categories=["FR.RECRUITMENT_FEE"])
    other = report(severity=1, workers_affected=1, categories=["FR.RECRUITMENT_FEE"])
    result = await push(client, phone, [create(phone, mild), create(phone, other)])
    assert [r["status"] for r in result["results"]] == ["applied", "applied"], result
    await drain(client, pool)  # one incident (same place and time), one case following it
    async with pool.acquire() as conn:
        [case_id] = {
            r["case_id"]
            for r in await conn.fetch(
                "SELECT case_id FROM case_reports WHERE report_id = ANY($1::uuid[])",
                [uuid.UUID(mild["id"]), uuid.UUID(other["id"])],
            )
        }
    case = (await client.get(f"/v1/cases/{case_id}", headers=staff.headers)).json()
    before = case["priority"]
    assert before != "critical"

    async def current() -> Any:
        r = await client.get(f"/v1/cases/{case['id']}", headers=staff.headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def in_cell(lat: float, lon: float) -> list[str]:
        cell = str(h3.cell_to_parent(h3.latlng_to_cell(lat, lon, 7), 5))  # as cases file them
        r = await client.get("/v1/cases", params={"cell": cell}, headers=staff.headers)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["items"]]

    pokhara = {"lat": 28.2096, "lon": 83.9856, "accuracy_m": 20.0}
    assert await in_cell(pokhara["lat"], pokhara["lon"]) == []
    changes = {"severity": 5, "location": pokhara}
    await push(client, phone, [amend(phone, mild["id"], 1, changes)])
    await drain(client, pool)
    raised = await current()
    assert raised["priority"] == "critical"
    assert any(r["rule"] == "report_severity" for r in raised["priority_reasons"])
    # The report moved to Pokhara: the case is found there (and still where the other is).
    assert await in_cell(pokhara["lat"], pokhara["lon"]) == [case["id"]]
    kathmandu = other["location"]
    assert await in_cell(kathmandu["lat"], kathmandu["lon"]) == [case["id"]]

    await push(client, phone, [withdraw(phone, mild["id"], 2)])
    await drain(client, pool)
    assert (await current())["priority"] == before
    assert await in_cell(pokhara["lat"], pokhara["lon"]) == []  # withdrawn: no longer there

    r = await client.put(
        f"/v1/cases/{case['id']}/priority",
        json={"version": (await current())["version"], "priority": "low", "reason": "seen"},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    await push(client, phone, [amend(phone, other["id"], 1, {"severity": 5})])
    await drain(client, pool)
    assert (await current())["priority"] == "low"
