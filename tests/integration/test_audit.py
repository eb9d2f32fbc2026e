"""The audit chain: appends in the caller's transaction, stays gap-free under concurrency, and
verification pinpoints altered, missing, reordered and truncated history."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from storage import audit
from storage.accounts import OrgRepository
from storage.audit import ActorKind, AuditEntry, ChainProblem
from storage.db import Conn
from storage.errors import NotFound
from tests.conftest import truncate_all

pytestmark = pytest.mark.db


async def _org(conn: Conn) -> uuid.UUID:
    org = await OrgRepository(conn).add(f"org-{uuid.uuid4().hex[:12]}", "Test org")
    return org.id


def _entry(org: uuid.UUID, n: int, **detail: object) -> AuditEntry:
    return AuditEntry(
        org_id=org,
        actor_kind=ActorKind.STAFF,
        actor_id=str(uuid.UUID(int=7)),
        action="report.read_sensitive",
        object_kind="report",
        object_id=f"r{n}",
        detail={"n": n, **detail},
    )


async def _chain(conn: Conn, org: uuid.UUID, n: int) -> None:
    for i in range(1, n + 1):
        await audit.record(conn, _entry(org, i))


async def _tamper(conn: Conn, *statements: tuple[str, list[object]]) -> None:
    """Run statements with the user triggers off, as someone with the table's owner would."""
    await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
    for sql, args in statements:
        await conn.execute(sql, *args)
    await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


async def _verify_one(conn: Conn, org: uuid.UUID) -> audit.OrgVerification:
    report = await audit.verify_chain(conn, org)
    [result] = report.orgs
    assert report.ok == result.ok
    return result


async def test_append_links_entries_and_verifies(db: asyncpg.Connection) -> None:
    org = await _org(db)
    first = await audit.record(db, _entry(org, 1))
    second = await audit.record(
        db, _entry(org, 2, note="café ✓", ratio=1.10, big=1e20, nested={"b": [1, None], "a": True})
    )
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == audit.GENESIS_HASH
    assert second.prev_hash == first.hash
    assert second.at >= first.at
    assert second.detail["note"] == "café ✓"

    result = await _verify_one(db, org)
    assert result.ok and result.entries_checked == 2 and result.head_seq == 2
    # Other tests' organisations may have chains too; this org's head is what matters here.
    heads = [h for h in await audit.chain_heads(db) if h.org_id == org]
    assert heads == [audit.ChainHead(org, 2, second.hash)]

    listed = await audit.list_entries(db, org, after_seq=0, limit=10)
    assert listed == [first, second]
    assert await audit.list_entries(db, org, after_seq=1, limit=10) == [second]
    assert await audit.list_entries(db, await _org(db), after_seq=0, limit=10) == []


async def test_hash_covers_every_field(db: asyncpg.Connection) -> None:
    org = await _org(db)
    entry = await audit.record(db, _entry(org, 1))
    fields = {
        "org_id": org,
        "seq": 1,
        "at": entry.at,
        "actor_kind": "staff",
        "actor_id": entry.actor_id,
        "action": entry.action,
        "object_kind": "report",
        "object_id": "r1",
        "detail_json": await db.fetchval("SELECT detail::text FROM audit_log WHERE org_id=$1", org),
        "prev_hash": audit.GENESIS_HASH,
    }
    assert audit.chain_hash(**fields) == entry.hash
    changed = {"org_id": uuid.uuid4(), "seq": 2, "actor_id": "x", "object_kind": None}
    for name, value in changed.items():
        assert audit.chain_hash(**{**fields, name: value}) != entry.hash


async def test_database_refuses_to_change_history(db: asyncpg.Connection) -> None:
    org = await _org(db)
    await _chain(db, org, 3)
    for sql in (
        "UPDATE audit_log SET detail = '{}' WHERE org_id = $1",
        "DELETE FROM audit_log WHERE org_id = $1 AND seq = 3",
        "UPDATE audit_heads SET seq = 1 WHERE org_id = $1",
        "DELETE FROM audit_heads WHERE org_id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError):
            async with db.transaction():
                await db.execute(sql, org)
    # An entry that does not extend the head is refused too.
    with pytest.raises(asyncpg.RaiseError, match="does not extend"):
        async with db.transaction():
            await db.execute(
                "INSERT INTO audit_log (org_id, seq, at, actor_kind, actor_id, action, prev_hash,"
                " hash) VALUES ($1, 9, now(), 'system', 'x', 'a.b', $2, $2)",
                org,
                bytes(32),
            )
    assert (await _verify_one(db, org)).ok


async def test_rolled_back_change_leaves_no_entry(db: asyncpg.Connection) -> None:
    org = await _org(db)
    savepoint = db.transaction()
    await savepoint.start()
    await db.execute("UPDATE orgs SET name = 'renamed' WHERE id = $1", org)
    await audit.record(db, _entry(org, 1))
    await savepoint.rollback()
    assert await db.fetchval("SELECT count(*) FROM audit_log WHERE org_id = $1", org) == 0
    assert await db.fetchval("SELECT count(*) FROM audit_heads WHERE org_id = $1", org) == 0
    again = await audit.record(db, _entry(org, 1))
    assert again.seq == 1


async def test_unknown_org_and_bad_action_are_refused(db: asyncpg.Connection) -> None:
    with pytest.raises(NotFound):
        async with db.transaction():  # a failed statement aborts the enclosing transaction
            await audit.record(db, _entry(uuid.uuid4(), 1))
    org = await _org(db)
    bad = AuditEntry(org_id=org, actor_kind=ActorKind.SYSTEM, actor_id="x", action="Export!")
    with pytest.raises(ValueError, match="audit action"):
        await audit.record(db, bad)
    with pytest.raises(ValueError, match="limit"):
        await audit.list_entries(db, org, 0, 0)


async def test_concurrent_appends_form_a_gap_free_chain(pool: asyncpg.Pool) -> None:
    workers, transactions, per_transaction = 4, 8, 3
    try:
        async with pool.acquire() as setup:
            org = await _org(setup)

        async def worker(w: int) -> None:
            async with pool.acquire() as conn:
                for t in range(transactions):
                    async with conn.transaction():
                        for i in range(per_transaction):
                            await audit.record(conn, _entry(org, i, worker=w, tx=t))
                            await asyncio.sleep(0)  # let the other workers interleave

        await asyncio.gather(*(worker(w) for w in range(workers)))
        total = workers * transactions * per_transaction
        async with pool.acquire() as conn:
            result = await _verify_one(conn, org)  # outside a transaction: its own snapshot
            assert result.ok and result.entries_checked == total
            entries = await audit.list_entries(conn, org, 0, 1000)
        assert [e.seq for e in entries] == list(range(1, total + 1))
        # The head lock is held to commit, so each transaction's entries are contiguous.
        for start in range(0, total, per_transaction):
            group = entries[start : start + per_transaction]
            assert len({(e.detail["worker"], e.detail["tx"]) for e in group}) == 1
            assert [e.detail["n"] for e in group] == list(range(per_transaction))
    finally:
        await truncate_all(pool)


async def test_altered_detail_is_detected(db: asyncpg.Connection) -> None:
    org = await _org(db)
    await _chain(db, org, 5)
    await _tamper(
        db,
        (
            "UPDATE audit_log SET detail = jsonb_set(detail, '{n}', '99') "
            "WHERE org_id = $1 AND seq = 3",
            [org],
        ),
    )
    result = await _verify_one(db, org)
    assert (result.problem, result.first_bad_seq, result.entries_checked) == (
        ChainProblem.ALTERED,
        3,
        2,
    )


async def test_rewritten_entry_with_recomputed_hash_breaks_the_link(
    db: asyncpg.Connection,
) -> None:
    org = await _org(db)
    await _chain(db, org, 4)
    row = await db.fetchrow(
        "SELECT at, actor_id, detail::text AS detail, prev_hash FROM audit_log "
        "WHERE org_id = $1 AND seq = 2",
        org,
    )
    assert row is not None
    forged = audit.chain_hash(
        org_id=org,
        seq=2,
        at=row["at"],
        actor_kind="system",
        actor_id=row["actor_id"],
        action="report.read_sensitive",
        object_kind="report",
        object_id="r2",
        detail_json=row["detail"],
        prev_hash=row["prev_hash"],
    )
    await _tamper(
        db,
        (
            "UPDATE audit_log SET actor_kind = 'system', hash = $2 WHERE org_id = $1 AND seq = 2",
            [org, forged],
        ),
    )
    result = await _verify_one(db, org)
    assert (result.problem, result.first_bad_seq) == (ChainProblem.ALTERED, 3)
    assert result.explanation is not None and "does not link" in result.explanation


async def test_deleted_middle_entry_is_detected(db: asyncpg.Connection) -> None:
    org = await _org(db)
    await _chain(db, org, 5)
    await _tamper(db, ("DELETE FROM audit_log WHERE org_id = $1 AND seq = 3", [org]))
    result = await _verify_one(db, org)
    assert (result.problem, result.first_bad_seq) == (ChainProblem.MISSING, 3)


async def test_swapped_entries_are_detected(db: asyncpg.Connection) -> None:
    org = await _org(db)
    await _chain(db, org, 5)
    swap = "UPDATE audit_log SET seq = $3 WHERE org_id = $1 AND seq = $2"
    await _tamper(db, (swap, [org, 2, 1000]), (swap, [org, 3, 2]), (swap, [org, 1000, 3]))
    result = await _verify_one(db, org)
    assert (result.problem, result.first_bad_seq) == (ChainProblem.REORDERED, 2)
    assert result.explanation is not None and "written as entry 3" in result.explanation


async def test_truncated_tail_is_detected_by_the_head(db: asyncpg.Connection) -> None:
    org = await _org(db)
    await _chain(db, org, 5)
    await _tamper(db, ("DELETE FROM audit_log WHERE org_id = $1 AND seq > 3", [org]))
    result = await _verify_one(db, org)
    assert (result.problem, result.first_bad_seq, result.entries_checked) == (
        ChainProblem.HEAD_MISMATCH,
        4,
        3,
    )
    assert result.explanation is not None and "truncated" in result.explanation


async def test_verify_all_orgs_reports_each(db: asyncpg.Connection) -> None:
    good, damaged = await _org(db), await _org(db)
    await _chain(db, good, 2)
    await _chain(db, damaged, 2)
    await _tamper(db, ("DELETE FROM audit_log WHERE org_id = $1 AND seq = 1", [damaged]))
    report = await audit.verify_chain(db)
    by_org = {r.org_id: r for r in report.orgs}
    assert not report.ok
    assert by_org[good].ok and by_org[good].entries_checked == 2
    assert (by_org[damaged].problem, by_org[damaged].first_bad_seq) == (ChainProblem.MISSING, 1)
