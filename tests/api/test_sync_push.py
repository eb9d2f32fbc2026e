"""Push through the real app: exactly-once under resends, reorders, holds and bad mutations."""

from __future__ import annotations

import datetime as dt
import gzip
import random
import uuid
from typing import Any

import asyncpg
import msgspec
import pytest
import zstandard

from cases.accounts import Role
from storage import push_bulk
from tests.api.conftest import Actor, make_actor
from tests.api.sync_support import (
    NOW,
    Client,
    Phone,
    amend,
    batch,
    create,
    new_monitor,
    new_phone,
    push,
    report,
)

pytestmark = pytest.mark.db


async def test_create_then_resend_any_way_gives_same_results(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    mutations = [create(phone, report()) for _ in range(6)]
    first = await push(client, phone, mutations)
    assert [r["status"] for r in first["results"]] == ["applied"] * 6
    assert first["next_expected_seq"] == 7
    rng = random.Random(7)
    for _ in range(5):
        again = list(mutations)
        rng.shuffle(again)
        subset = again[: rng.randint(1, 6)]
        answer = await push(client, phone, subset + subset[:1])  # and a duplicate inside
        by_id = {r["mutation_id"]: r for r in first["results"]}
        for sent, got in zip(subset + subset[:1], answer["results"], strict=True):
            assert got == by_id[sent["mutation_id"]]
    async with pool.acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM reports")
        stored = await conn.fetchval("SELECT count(*) FROM sync_mutations")
    assert count == 6
    assert stored == 6


async def test_out_of_order_mutations_are_held_then_released(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    one, two, three = (create(phone, report()) for _ in range(3))
    later = await push(client, phone, [three, two])
    assert [r["status"] for r in later["results"]] == ["held", "held"]
    assert {r["reason"] for r in later["results"]} == {"waiting_for_predecessor"}
    assert later["next_expected_seq"] == 1
    now = await push(client, phone, [one])
    assert [r["status"] for r in now["results"]] == ["applied"]
    assert now["next_expected_seq"] == 4
    resend = await push(client, phone, [two, three])
    assert [r["status"] for r in resend["results"]] == ["applied", "applied"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 3
        assert await conn.fetchval("SELECT count(*) FROM sync_held") == 0


async def test_one_bad_mutation_never_blocks_the_rest(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bad_location = create(phone, report(location={"lat": 123.0, "lon": 10.0}))
    unknown_category = create(phone, report(categories=["XX.NOT_A_CATEGORY"]))
    unknown_kind = {
        "kind": "teleport_report",
        "seq": phone.seq(),
        "mutation_id": str(uuid.uuid4()),
        "recorded_at": "2025-01-01T00:00:00Z",
    }
    good = create(phone, report())
    answer = await push(client, phone, [bad_location, unknown_category, unknown_kind, good])
    statuses = [(r["status"], r.get("reason")) for r in answer["results"]]
    assert statuses == [
        ("rejected", "invalid"),
        ("rejected", "unknown_category"),
        ("rejected", "unknown_kind"),
        ("applied", None),
    ]
    assert "lat" in answer["results"][0]["detail"]
    assert answer["next_expected_seq"] == 5


async def test_same_id_with_different_body_is_refused_with_stored_version(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    original = create(phone, report())
    await push(client, phone, [original])
    tampered = {**original, "report": {**original["report"], "severity": 1}}
    answer = await push(client, phone, [tampered])
    [result] = answer["results"]
    assert result["status"] == "rejected"
    assert result["reason"] == "id_reused_with_different_body"
    assert result["version"] == 1
    # A new mutation re-creating the same report id with other content is refused too.
    copy = create(phone, {**original["report"], "severity": 2})
    [again] = (await push(client, phone, [copy]))["results"]
    assert (again["status"], again["reason"]) == ("rejected", "id_reused_with_different_body")
    async with pool.acquire() as conn:
        severity = await conn.fetchval("SELECT (content->>'severity')::int FROM reports")
    assert severity == 4  # never silently overwritten


async def test_another_org_cannot_touch_a_report(client: Client, pool: asyncpg.Pool) -> None:
    staff_a = await make_actor(client, pool, Role.CASE_MANAGER)
    staff_b = await make_actor(client, pool, Role.CASE_MANAGER)
    phone_a, phone_b = await new_phone(client, staff_a), await new_phone(client, staff_b)
    body = report()
    await push(client, phone_a, [create(phone_a, body)])
    [hijack] = (await push(client, phone_b, [amend(phone_b, body["id"], 1, {"severity": 1})]))[
        "results"
    ]
    assert (hijack["status"], hijack["reason"]) == ("rejected", "not_owner")
    [copy] = (await push(client, phone_b, [create(phone_b, body)]))["results"]
    assert copy["status"] == "rejected"
    async with pool.acquire() as conn:
        orgs = await conn.fetchval("SELECT count(DISTINCT org_id) FROM reports")
    assert orgs == 1


async def _one_report_two_phones(
    client: Client, staff: Actor
) -> tuple[Phone, Phone, dict[str, Any]]:
    """Two phones of one monitor, and a report the first has pushed (both may amend it)."""
    monitor = await new_monitor(client, staff)
    first = await new_phone(client, staff, monitor)
    second = await new_phone(client, staff, monitor)
    body = report()
    await push(client, first, [create(first, body)])
    return first, second, body


async def test_concurrent_edits_merge_and_true_conflicts_are_queued(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    first, second, body = await _one_report_two_phones(client, staff)
    a = await push(
        client, first, [amend(first, body["id"], 1, {"severity": 5, "sector": "construction"})]
    )
    assert a["results"][0]["status"] == "applied"
    # The second phone edited version 1 offline: workers_affected merges, severity conflicts.
    b = await push(
        client, second, [amend(second, body["id"], 1, {"severity": 2, "workers_affected": 30})]
    )
    [result] = b["results"]
    assert result["status"] == "conflict"
    assert result["conflict_fields"] == ["severity"]
    assert result["version"] == 3
    queue = await client.get("/v1/conflicts", headers=staff.headers)
    [conflict] = queue.json()["items"]
    assert (conflict["field"], conflict["server_value"], conflict["incoming_value"]) == (
        "severity",
        5,
        2,
    )
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT content FROM reports")
    assert row is not None
    content = msgspec.json.decode(row["content"])
    assert (content["severity"], content["workers_affected"], content["sector"]) == (
        5,
        30,
        "construction",
    )
    resolved = await client.post(
        f"/v1/conflicts/{conflict['id']}/resolve",
        json={"resolution": "take_incoming"},
        headers=staff.headers,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["report_version"] == 4
    again = await client.post(
        f"/v1/conflicts/{conflict['id']}/resolve",
        json={"resolution": "keep_server"},
        headers=staff.headers,
    )
    assert again.status_code == 409
    report_view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert report_view.json()["report"]["severity"] == 2
    assert (await client.get("/v1/conflicts", headers=staff.headers)).json()["items"] == []


async def test_msgpack_and_compressed_bodies(client: Client, pool: asyncpg.Pool) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    payload = batch(phone, [create(phone, report()) for _ in range(3)])
    packed = zstandard.ZstdCompressor().compress(msgspec.msgpack.encode(payload))
    r = await client.post(
        "/v1/sync/push",
        content=packed,
        headers={
            **phone.headers,
            "content-type": "application/msgpack",
            "content-encoding": "zstd",
            "accept-encoding": "identity",
        },
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/msgpack")
    answer = msgspec.msgpack.decode(r.content)
    assert [x["status"] for x in answer["results"]] == ["applied"] * 3
    gz = gzip.compress(msgspec.json.encode(batch(phone, [create(phone, report())])))
    r = await client.post(
        "/v1/sync/push",
        content=gz,
        headers={**phone.headers, "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["status"] == "applied"


async def test_hostile_bodies_get_problems_and_change_nothing(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    headers = {**phone.headers, "content-type": "application/json"}
    bomb = gzip.compress(b"[" + b"0," * (20 * 1024 * 1024) + b"0]")
    r = await client.post(
        "/v1/sync/push", content=bomb, headers={**headers, "content-encoding": "gzip"}
    )
    assert r.status_code == 413
    assert r.json()["type"] == "urn:fairwatch:problem:body-too-large"
    zbomb = zstandard.ZstdCompressor().compress(b"\0" * (40 * 1024 * 1024))
    r = await client.post(
        "/v1/sync/push", content=zbomb, headers={**headers, "content-encoding": "zstd"}
    )
    assert r.status_code == 413
    r = await client.post("/v1/sync/push", content=b"\x1f\x8b garbage", headers={
        **headers, "content-encoding": "gzip"})  # fmt: skip
    assert r.status_code == 400
    too_many = batch(phone, [create(phone, report(), seq=i + 1) for i in range(501)])
    r = await client.post("/v1/sync/push", json=too_many, headers=phone.headers)
    assert r.status_code in (413, 422)
    no_envelope = batch(phone, [{"kind": "create_report", "report": report()}])
    r = await client.post("/v1/sync/push", json=no_envelope, headers=phone.headers)
    assert r.status_code == 422
    r = await client.post(
        "/v1/sync/push", content=b"{}", headers={**phone.headers, "content-type": "text/plain"}
    )
    assert r.status_code == 415
    other = batch(phone, [create(phone, report())])
    other["device_id"] = str(uuid.uuid4())
    r = await client.post("/v1/sync/push", json=other, headers=phone.headers)
    assert r.status_code == 422
    for bad in ("NaN", "Infinity", "1e400"):
        raw = msgspec.json.encode(batch(phone, [create(phone, report())])).replace(
            b'"lat":27.7172', b'"lat":' + bad.encode()
        )
        r = await client.post("/v1/sync/push", content=raw, headers=headers)
        assert r.status_code in (200, 400, 422), bad
        if r.status_code == 200:
            assert r.json()["results"][0]["status"] == "rejected", bad
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reports") == 0


async def test_staff_tokens_cannot_push_and_devices_cannot_use_staff_routes(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.ORG_ADMIN)
    phone = await new_phone(client, staff)
    r = await client.post("/v1/sync/push", json=batch(phone, [create(phone, report())]),
                          headers=staff.headers)  # fmt: skip
    assert r.status_code == 403
    assert (await client.get("/v1/users", headers=phone.headers)).status_code in (401, 403)
    assert (await client.get("/v1/reports", headers=phone.headers)).status_code in (401, 403)


async def test_amending_keeps_declared_attachments(client: Client, pool: asyncpg.Pool) -> None:
    """Regression (found by the fleet): attachment rows must survive an amendment."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    photo = {"sha256": "ab" * 32, "size_bytes": 1000, "media_type": "image/jpeg"}
    audio = {"sha256": "cd" * 32, "size_bytes": 2000, "media_type": "audio/ogg"}
    body = report(attachments=[photo])
    await push(client, phone, [create(phone, body)])
    await push(client, phone, [amend(phone, body["id"], 1, {"severity": 2})])
    await push(client, phone, [amend(phone, body["id"], 2, {"attachments": [photo, audio]})])
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert sorted(a["sha256"] for a in view.json()["attachments"]) == [
        photo["sha256"],
        audio["sha256"],
    ]
    await push(client, phone, [amend(phone, body["id"], 3, {"attachments": [audio]})])
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert [a["sha256"] for a in view.json()["attachments"]] == [audio["sha256"]]


async def test_retired_category_is_refused_with_its_own_reason(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    old = create(phone, report(categories=["FL.PASSPORT_RETENTION"]))  # retired in favour of DOC
    [result] = (await push(client, phone, [old]))["results"]
    assert (result["status"], result["reason"]) == ("rejected", "retired_category")
    assert "FL.PASSPORT_RETENTION" in result["detail"]


async def test_conflicts_over_identity_are_sealed_and_shown_by_role(
    client: Client, pool: asyncpg.Pool
) -> None:
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    async with pool.acquire() as conn:
        slug = await conn.fetchval("SELECT slug FROM orgs WHERE id = $1", staff.org_id)
    admin = await make_actor(client, pool, Role.ORG_ADMIN, org_slug=slug)
    first, second, body = await _one_report_two_phones(client, staff)
    await push(client, first, [amend(first, body["id"], 1, {"worker": {"name": "Ram B. Thapa"}})])
    [result] = (
        await push(
            client, second, [amend(second, body["id"], 1, {"worker": {"name": "Rama Thapa"}})]
        )
    )["results"]
    assert result["status"] == "conflict"
    async with pool.acquire() as conn:
        raw = [repr(dict(r)) for r in await conn.fetch("SELECT * FROM report_conflicts")]
    assert raw
    assert all("Rama Thapa" not in row and "Ram B. Thapa" not in row for row in raw)
    seen = (await client.get("/v1/conflicts", headers=staff.headers)).json()["items"]
    assert all(c["withheld"] is False for c in seen)
    assert any("Rama Thapa" in repr(c["incoming_value"]) for c in seen)
    hidden = (await client.get("/v1/conflicts", headers=admin.headers)).json()["items"]
    assert [c["id"] for c in hidden] == [c["id"] for c in seen]
    assert all(c["withheld"] is True and c["incoming_value"] is None for c in hidden)
    name_conflict = next(c for c in seen if "Rama Thapa" in repr(c["incoming_value"]))
    taken = await client.post(
        f"/v1/conflicts/{name_conflict['id']}/resolve",
        json={"resolution": "take_incoming"},
        headers=staff.headers,
    )
    assert taken.status_code == 200, taken.text
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert view.json()["report"]["worker"]["name"] == "Rama Thapa"


async def test_new_reports_reach_matching_in_chunks(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(push_bulk, "MATCH_CHUNK", 3)  # small, so the test body stays small
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bodies = [report() for _ in range(8)]
    answer = await push(client, phone, [create(phone, b) for b in bodies])
    assert {r["status"] for r in answer["results"]} == {"applied"}
    async with pool.acquire() as conn:
        payloads = await conn.fetch(
            "SELECT payload::text AS payload FROM jobs WHERE org_id = $1 AND kind = $2 ORDER BY id",
            staff.org_id,
            "reports.match_many",
        )
    chunks = [msgspec.json.decode(r["payload"])["report_ids"] for r in payloads]
    assert [len(c) for c in chunks] == [3, 3, 2]
    assert [i for c in chunks for i in c] == [b["id"] for b in bodies]


async def test_a_batch_the_database_refuses_is_applied_one_by_one(
    client: Client, pool: asyncpg.Pool
) -> None:
    """A feed row already present for a new report makes the batch's COPY fail; the one-by-one
    path then applies every mutation (its feed write is an upsert)."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    bodies = [report() for _ in range(4)]
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO sync_changes (org_id, audience, record_kind, record_id, version, body)"
            " VALUES ($1, $2, 'report', $3, 1, '{}')",
            staff.org_id,
            f"monitor:{phone.monitor_id}",
            bodies[2]["id"],
        )
    answer = await push(client, phone, [create(phone, b) for b in bodies])
    assert [r["status"] for r in answer["results"]] == ["applied"] * 4
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM reports WHERE id = ANY($1::uuid[])", [b["id"] for b in bodies]
        )
        jobs = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE kind = 'reports.match' AND dedupe_key = ANY($1)",
            [b["id"] for b in bodies],
        )
    assert stored == 4
    assert jobs == 4  # the one-by-one path queues one matching job per report


async def test_a_version_is_stored_apart_once_an_amendment_replaces_it(
    client: Client, pool: asyncpg.Pool
) -> None:
    """The current version lives in the report row; an amendment archives the one it replaces,
    so a later amendment based on that version still merges three-way."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    body = report()
    await push(client, phone, [create(phone, body)])
    query = "SELECT version, content FROM report_versions WHERE report_id = $1 ORDER BY version"
    async with pool.acquire() as conn:
        assert await conn.fetch(query, uuid.UUID(body["id"])) == []
        first = await conn.fetchval("SELECT content FROM reports WHERE id = $1", body["id"])
    changed = await push(client, phone, [amend(phone, body["id"], 1, {"severity": 1})])
    assert changed["results"][0]["version"] == 2
    async with pool.acquire() as conn:
        kept = await conn.fetch(query, uuid.UUID(body["id"]))
    assert [(r["version"], r["content"]) for r in kept] == [(1, first)]
    late = await push(client, phone, [amend(phone, body["id"], 1, {"workers_affected": 40})])
    assert (late["results"][0]["status"], late["results"][0]["version"]) == ("applied", 3)
    view = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
    assert (view.json()["report"]["severity"], view.json()["report"]["workers_affected"]) == (1, 40)


async def test_an_amended_incident_time_is_flagged_again(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Impossible times are flagged, not taken as truth, on amendments too: a time moved into
    next year is flagged (a later edit of another field keeps the flag), a time corrected back
    loses it, and a case manager resolving a conflict to a future time gets it flagged."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    first, second, body = await _one_report_two_phones(client, staff)

    async def flags() -> list[str]:
        r = await client.get(f"/v1/reports/{body['id']}", headers=staff.headers)
        assert r.status_code == 200, r.text
        return [f for f in r.json()["time_flags"] if f.startswith("occurred")]

    future = (NOW + dt.timedelta(days=400)).isoformat()
    await push(client, first, [amend(first, body["id"], 1, {"occurred_at": future})])
    assert await flags() == ["occurred_after_recorded", "occurred_in_future"]
    await push(client, first, [amend(first, body["id"], 2, {"severity": 1})])
    assert await flags() == ["occurred_after_recorded", "occurred_in_future"]
    await push(client, first, [amend(first, body["id"], 3, {"occurred_at": body["occurred_at"]})])
    assert await flags() == []

    # The second phone edited version 3 offline: the incident time conflicts.
    plausible = (NOW - dt.timedelta(days=1)).isoformat()
    await push(client, first, [amend(first, body["id"], 4, {"occurred_at": plausible})])
    [result] = (
        await push(client, second, [amend(second, body["id"], 4, {"occurred_at": future})])
    )["results"]
    assert result["status"] == "conflict", result
    assert await flags() == []
    [conflict] = (await client.get("/v1/conflicts", headers=staff.headers)).json()["items"]
    r = await client.post(
        f"/v1/conflicts/{conflict['id']}/resolve",
        json={"resolution": "take_incoming"},
        headers=staff.headers,
    )
    assert r.status_code == 200, r.text
    assert await flags() == ["occurred_after_recorded", "occurred_in_future"]
