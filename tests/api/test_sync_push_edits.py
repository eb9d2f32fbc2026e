"""Amendments and withdrawals applied as a batch give exactly what applying them one by one gives.

The same push runs twice on the same stored data (each run in a transaction rolled back after it
is inspected): once through the batched path (``storage.push_edits.edit_reports``), once with
``storage.push.BATCH_EDITS`` off. Results, stored results, report rows, archived versions,
attachments, conflicts and feed bodies must be identical.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.accounts import Role
from cases.taxonomy import load_taxonomy
from server.resources import resources_of
from storage import push as push_module
from storage import push_edits
from storage.db import Conn
from storage.devices import DeviceAuth
from storage.keyring import Keyring
from storage.push import execute_push
from storage.reports import REPORT_CHANGED, ReportStore, conflict_context
from sync.codec import WireFormat, decode_push
from sync.messages import MutationResult
from tests.api.conftest import make_actor
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
    withdraw,
)

pytestmark = pytest.mark.db

RECEIVED_AT = NOW + dt.timedelta(minutes=5)
FUTURE = (NOW + dt.timedelta(days=365)).isoformat()
CATEGORIES = [c.code for c in load_taxonomy().active_categories()]
SHA_A = "a" * 64
SHA_B = "b" * 64


def attachment(sha: str) -> dict[str, Any]:
    return {"sha256": sha, "size_bytes": 1000, "media_type": "image/jpeg"}


async def device_of(pool: asyncpg.Pool, phone: Phone) -> DeviceAuth:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT d.id, d.org_id, d.monitor_id, d.enrolled_at, d.revoked_at, d.revoked_reason,"
            " m.region_cells, m.region_countries, m.is_active AS monitor_active"
            " FROM devices d JOIN monitors m ON m.id = d.monitor_id WHERE d.id = $1",
            phone.device_id,
        )
    assert row is not None
    return DeviceAuth(**dict(row))


async def snapshot(conn: Conn, keyring: Keyring, org_id: uuid.UUID) -> dict[str, Any]:
    """Everything a push may have written, with ciphertexts opened (their nonces are random) and
    the times the database or the clock set at write time left out."""
    store = ReportStore(conn, keyring)
    reports = []
    for r in await conn.fetch(
        "SELECT id, version, status_version, status, content::text AS content, occurred_at,"
        " latitude, longitude, categories, time_flags, deleted_at IS NOT NULL AS deleted,"
        " redacted_at IS NOT NULL AS redacted FROM reports WHERE org_id = $1 ORDER BY id",
        org_id,
    ):
        full = await store.get(org_id, r["id"])
        reports.append((dict(r), msgspec.json.encode(full["report"])))
    versions = []
    for r in await conn.fetch(
        "SELECT v.report_id, v.version, v.content::text AS content, v.sealed, v.mutation_id"
        " FROM report_versions v JOIN reports r ON r.id = v.report_id WHERE r.org_id = $1"
        " ORDER BY v.report_id, v.version",
        org_id,
    ):
        opened = await store.version(org_id, r["report_id"], r["version"])
        versions.append(
            (
                r["report_id"],
                r["version"],
                r["content"],
                r["mutation_id"],
                msgspec.json.encode(opened),
            )
        )
    conflicts = []
    for r in await conn.fetch(
        "SELECT report_id, field, base_value::text AS b, server_value::text AS s,"
        " incoming_value::text AS i, mutation_id, device_id, resolved_at"
        " FROM report_conflicts WHERE org_id = $1",
        org_id,
    ):
        values = []
        for which, text in (("base", r["b"]), ("server", r["s"]), ("incoming", r["i"])):
            value = json.loads(text)
            if isinstance(value, dict) and set(value) == {"sealed"}:
                context = conflict_context(r["report_id"], r["field"], which)
                value = {
                    "opened": msgspec.msgpack.decode(
                        await keyring.decrypt(
                            conn, org_id, base64.b64decode(value["sealed"]), context
                        )
                    )
                }
            values.append(value)
        conflicts.append(
            (str(r["report_id"]), r["field"], json.dumps(values, sort_keys=True),
             str(r["mutation_id"]), str(r["device_id"]), r["resolved_at"])
        )  # fmt: skip
    attachments = [
        dict(r)
        for r in await conn.fetch(
            "SELECT * FROM report_attachments WHERE org_id = $1 ORDER BY report_id, sha256", org_id
        )
    ]
    feed = []
    for r in await conn.fetch(
        "SELECT audience, record_kind, record_id, version, body::text AS body"
        " FROM sync_changes WHERE org_id = $1 ORDER BY audience, record_kind, record_id",
        org_id,
    ):
        body = json.loads(r["body"])
        body.pop("changed_at")
        feed.append((r["audience"], r["record_kind"], r["record_id"], r["version"], body))
    stored = [
        tuple(r)
        for r in await conn.fetch(
            "SELECT mutation_id, device_id, seq, body_hash, result::text, received_at"
            " FROM sync_mutations WHERE org_id = $1 ORDER BY device_id, seq",
            org_id,
        )
    ]
    devices = [
        tuple(r)
        for r in await conn.fetch(
            "SELECT id, next_seq, clock_samples::text, clock_offset_seconds, outbox_depth"
            " FROM devices WHERE org_id = $1 ORDER BY id",
            org_id,
        )
    ]
    jobs = []
    rematched: set[str] = set()
    for r in await conn.fetch("SELECT kind, payload::text FROM jobs WHERE org_id = $1", org_id):
        if r["kind"] == REPORT_CHANGED:
            # A batch queues one rematch for all its edited reports, one by one queues one per
            # edit: which reports are rematched is what must be the same.
            rematched.update(msgspec.json.decode(r["payload"])["report_ids"])
        else:
            jobs.append((r["kind"], r["payload"]))
    jobs.sort()
    return {
        "reports": reports,
        "versions": versions,
        "conflicts": sorted(conflicts),
        "attachments": attachments,
        "feed": feed,
        "stored": stored,
        "devices": devices,
        "jobs": jobs,
        "rematched": sorted(rematched),
    }


Prepare = Callable[[Conn], Awaitable[None]]


async def run_both_ways(
    client: Client,
    pool: asyncpg.Pool,
    phone: Phone,
    org_id: uuid.UUID,
    mutations: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    prepare: Prepare | None = None,
) -> tuple[list[tuple[bytes, dict[str, Any]]], list[dict[uuid.UUID, MutationResult] | None]]:
    """(response bytes, snapshot) for the batched run then the one-by-one run, and what the
    batched path returned each time it was called."""
    res = resources_of(client.app.state)
    device = await device_of(pool, phone)
    body = msgspec.json.encode(batch(phone, mutations, outbox_depth=3))
    known = {c.code for c in res.taxonomy.active_categories()}
    calls: list[dict[uuid.UUID, MutationResult] | None] = []
    real = push_edits.edit_reports

    async def spy(*args: Any, **kwargs: Any) -> dict[uuid.UUID, MutationResult] | None:
        answer = await real(*args, **kwargs)
        calls.append(answer)
        return answer

    monkeypatch.setattr(push_module, "edit_reports", spy)
    runs = []
    for batched in (True, False):
        monkeypatch.setattr(push_module, "BATCH_EDITS", batched)
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                if prepare is not None:
                    await prepare(conn)
                answer = await execute_push(
                    conn,
                    device,
                    decode_push(body, WireFormat.JSON),
                    WireFormat.JSON,
                    keyring=res.keyring,
                    known_categories=known,
                    received_at=RECEIVED_AT,
                )
                runs.append(
                    (msgspec.json.encode(answer), await snapshot(conn, res.keyring, org_id))
                )
            finally:
                await tx.rollback()
    return runs, calls


async def stored_data(
    client: Client, pool: asyncpg.Pool
) -> tuple[uuid.UUID, Phone, dict[str, Any]]:
    """A monitor's reports in every state a batch of edits can meet, committed."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    phone = await new_phone(client, staff)
    other = await new_phone(client, staff, await new_monitor(client, staff))
    bodies = {
        name: report(categories=CATEGORIES[:2])
        for name in ("plain", "stale", "twice", "gone", "redacted", "many", "attached", "keep")
    }
    bodies["attached"]["attachments"] = [attachment(SHA_A)]
    answer = await push(client, phone, [create(phone, b) for b in bodies.values()])
    assert {r["status"] for r in answer["results"]} == {"applied"}
    ids: dict[str, Any] = {name: b["id"] for name, b in bodies.items()}
    foreign = report()
    await push(client, other, [create(other, foreign)])
    ids["foreign"] = foreign["id"]
    # Server-side history: "stale" and "many" are at version 2, "gone" is withdrawn.
    answer = await push(
        client,
        phone,
        [
            amend(phone, ids["stale"], 1, {"severity": 2, "worker": {"name": "Hari Prasad"}}),
            amend(phone, ids["many"], 1, {"categories": CATEGORIES[:12]}),
            withdraw(phone, ids["gone"], 1),
        ],
    )
    assert [r["status"] for r in answer["results"]] == ["applied"] * 3
    async with pool.acquire() as conn:
        await conn.execute("UPDATE reports SET redacted_at = now() WHERE id = $1", ids["redacted"])
        await conn.execute(
            "INSERT INTO blobs (org_id, sha256, size_bytes) VALUES ($1, $2, 1000)",
            staff.org_id,
            SHA_B,
        )
    return staff.org_id, phone, ids


def mixed_batch(phone: Phone, ids: dict[str, Any]) -> list[dict[str, Any]]:
    fresh, early = report(categories=CATEGORIES[:2]), report(categories=CATEGORIES[:2])
    return [
        amend(phone, ids["plain"], 1, {"severity": 5}),
        # Stale base: severity changed on both sides (a conflict), narrative only here; the
        # worker's name too (a sealed conflict).
        amend(
            phone,
            ids["stale"],
            1,
            {"severity": 3, "narrative": "Moved to dorm 6.", "worker": {"name": "Sita Rai"}},
        ),
        # Twice in one batch: the second, based on version 1, merges against the first. The
        # first moves the incident time into next year (flagged), which the later ones keep.
        amend(
            phone,
            ids["twice"],
            1,
            {"workers_affected": 30, "sector": "construction", "occurred_at": FUTURE},
        ),
        amend(phone, ids["twice"], 1, {"workers_affected": 31, "narrative": "Second look."}),
        amend(phone, ids["twice"], 2, {"severity": 1}),
        amend(phone, str(uuid.uuid4()), 1, {"severity": 2}),  # not found
        amend(phone, ids["foreign"], 1, {"severity": 2}),  # not owner
        amend(phone, ids["gone"], 2, {"severity": 2}),  # withdrawn
        amend(phone, ids["redacted"], 1, {"severity": 2}),  # redacted
        amend(phone, ids["plain"], 9, {"severity": 2}),  # unknown base version
        # Both sides adding categories: 21 after the merge, more than a report may have.
        amend(phone, ids["many"], 1, {"categories": CATEGORIES[:2] + CATEGORIES[12:]}),
        amend(phone, ids["attached"], 1, {"attachments": [attachment(SHA_A), attachment(SHA_B)]}),
        amend(phone, ids["attached"], 2, {"attachments": [attachment(SHA_B)]}),
        amend(phone, ids["keep"], 1, {}),  # changes nothing
        amend(phone, ids["keep"], 1, {"severity": 4}),  # the value it already has
        amend(phone, early["id"], 1, {"severity": 1}),  # before its create: not found yet
        create(phone, early),
        create(phone, fresh),
        amend(phone, fresh["id"], 1, {"severity": 1}),  # after its create, in the same batch
        withdraw(phone, ids["plain"], 2),
        amend(phone, ids["plain"], 2, {"severity": 3}),  # after its withdrawal
        withdraw(phone, ids["plain"], 3),  # twice
        withdraw(phone, ids["stale"], 1),  # stale base
        withdraw(phone, ids["foreign"], 1),
        withdraw(phone, str(uuid.uuid4()), 1),
        withdraw(phone, ids["twice"], 4),
    ]


EXPECTED = [
    ("applied", None, 2),
    ("conflict", None, 3),
    ("applied", None, 2),
    ("conflict", None, 3),
    ("applied", None, 4),
    ("rejected", "not_found", None),
    ("rejected", "not_owner", None),
    ("rejected", "deleted", 2),
    ("rejected", "redacted", 1),
    ("rejected", "unknown_base_version", 2),
    ("rejected", "invalid", 2),
    ("applied", None, 2),
    ("applied", None, 3),
    ("applied", None, 1),
    ("applied", None, 1),
    ("rejected", "not_found", None),
    ("applied", None, 1),
    ("applied", None, 1),
    ("applied", None, 2),
    ("applied", None, 3),
    ("rejected", "deleted", 3),
    ("rejected", "deleted", None),
    ("rejected", "stale_base_version", None),
    ("rejected", "not_owner", None),
    ("rejected", "not_found", None),
    ("applied", None, 5),
]


async def test_batched_edits_match_one_by_one(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    org_id, phone, ids = await stored_data(client, pool)
    mutations = mixed_batch(phone, ids)
    runs, calls = await run_both_ways(client, pool, phone, org_id, mutations, monkeypatch)
    (fast, fast_rows), (slow, slow_rows) = runs
    results = msgspec.json.decode(fast)["results"]
    got = [(r["status"], r.get("reason"), r.get("version")) for r in results]
    assert got == EXPECTED, list(zip(got, EXPECTED, strict=True))
    # The batched path decided every edit itself (no fallback), in runs between the creates.
    assert calls and all(answer is not None for answer in calls)
    assert (
        sum(len(answer or {}) for answer in calls) == len(mutations) - 2
    )  # all but the two creates
    assert fast == slow
    for table in fast_rows:
        assert fast_rows[table] == slow_rows[table], table
    conflicts = {(c[0], c[1]) for c in fast_rows["conflicts"]}
    assert (ids["stale"], "worker.name") in conflicts
    assert (ids["twice"], "workers_affected") in conflicts
    flags = {r[0]["id"]: r[0]["time_flags"] for r in fast_rows["reports"]}
    assert "occurred_in_future" in flags[uuid.UUID(ids["twice"])]
    assert "occurred_in_future" not in flags[uuid.UUID(ids["plain"])]


async def test_a_run_the_database_refuses_is_applied_one_by_one(
    client: Client, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint the rules cannot know refuses one amendment: the batch falls back to one by
    one, so that amendment alone is rejected, with the same results as without batching."""
    org_id, phone, ids = await stored_data(client, pool)
    mutations = mixed_batch(phone, ids)
    assert mutations[13]["report_id"] == ids["keep"]
    mutations[13]["changes"] = {"location": {"lat": 10.5, "lon": 85.3}}

    async def forbid_latitude(conn: Conn) -> None:
        await conn.execute(
            "ALTER TABLE reports ADD CONSTRAINT test_no_lat CHECK (latitude <> 10.5) NOT VALID"
        )

    runs, calls = await run_both_ways(
        client, pool, phone, org_id, mutations, monkeypatch, prepare=forbid_latitude
    )
    (fast, fast_rows), (slow, slow_rows) = runs
    results = msgspec.json.decode(fast)["results"]
    assert (results[13]["status"], results[13]["reason"]) == ("rejected", "invalid")
    assert "test_no_lat" in results[13]["detail"]
    others = [(r["status"], r.get("reason"), r.get("version")) for r in results]
    assert others[:13] + others[14:] == EXPECTED[:13] + EXPECTED[14:]
    assert None in calls  # the batch was refused and went one by one
    # PostgreSQL's DETAIL quotes the failing row (sealed parts, the transaction's time): it is
    # neither stored nor sent, so the two runs agree byte for byte.
    assert b"Failing row" not in fast
    assert fast == slow
    for table in fast_rows:
        assert fast_rows[table] == slow_rows[table], table


async def test_two_phones_amending_the_same_reports_at_once_lose_nothing(
    client: Client, pool: asyncpg.Pool
) -> None:
    """Two phones of one monitor amend the same reports, in opposite orders, at the same time (two
    connections, interleaved at every round trip). Each push locks its reports up front, in one
    order, so neither push deadlocks, and every edit merges."""
    staff = await make_actor(client, pool, Role.CASE_MANAGER)
    first = await new_phone(client, staff)
    second = await new_phone(client, staff, first.monitor_id)
    bodies = [report() for _ in range(30)]
    await push(client, first, [create(first, b) for b in bodies])
    ids = [b["id"] for b in bodies]
    narratives = [amend(first, i, 1, {"narrative": "Seen again."}) for i in ids]
    severities = [amend(second, i, 1, {"severity": 1}) for i in reversed(ids)]
    res = resources_of(client.app.state)
    known = {c.code for c in res.taxonomy.active_categories()}

    async def send(phone: Phone, mutations: list[dict[str, Any]]) -> list[str]:
        device = await device_of(pool, phone)
        body = msgspec.json.encode(batch(phone, mutations))
        async with pool.acquire() as conn:
            answer = await execute_push(
                conn,
                device,
                decode_push(body, WireFormat.JSON),
                WireFormat.JSON,
                keyring=res.keyring,
                known_categories=known,
                received_at=RECEIVED_AT,
            )
        return [r.status.value for r in answer.results]

    answers = await asyncio.gather(send(first, narratives), send(second, severities))
    assert list(answers) == [["applied"] * 30, ["applied"] * 30]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT version, content->>'narrative' AS narrative, content->>'severity' AS severity"
            " FROM reports WHERE id = ANY($1::uuid[])",
            ids,
        )
    assert [(r["version"], r["narrative"], r["severity"]) for r in rows] == [
        (3, "Seen again.", "1")
    ] * 30
