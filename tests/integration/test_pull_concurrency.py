"""No committed change is ever skipped, even when transactions commit out of change order.

Writers take change numbers in one order and commit in another while pullers page through the
feed with small pages. Every puller must end with every change exactly once, and the test checks
that the hard case really happened: some change was delivered after one with a higher number.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid

import asyncpg
import asyncpg.transaction
import msgspec
import pytest

from storage.db import Conn, connect
from storage.feed import monitor_audience, read_pull_page
from storage.queries import Q
from sync.changes import RecordKind, ReportStatusChange
from sync.messages import PullRequest
from tests.conftest import truncate_all

pytestmark = pytest.mark.db

KEY = b"k" * 32
WAVES, WRITERS, RECORDS_PER_WRITER, PULLERS, PAGE = 3, 6, 2, 4, 3


class Puller:
    def __init__(self, org_id: uuid.UUID, monitor_id: uuid.UUID) -> None:
        self.org_id, self.monitor_id = org_id, monitor_id
        self.cursor: str | None = None
        self.seen: list[str] = []

    async def step(self, pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn:
            stored = await read_pull_page(
                conn,
                org_id=self.org_id,
                monitor_id=self.monitor_id,
                regions=(),
                request=PullRequest(device_id=uuid.uuid4(), cursor=self.cursor, limit=PAGE),
                cursor_key=KEY,
            )
        page = stored.typed()
        assert not page.reset_required
        self.cursor = page.next_cursor
        self.seen += [str(c.report_id) for c in page.changes if isinstance(c, ReportStatusChange)]
        return page.has_more


@pytest.mark.parametrize("seed", [1, 2, 20261128])
async def test_out_of_order_commits_are_never_skipped(
    pool: asyncpg.Pool, database_dsn: str, seed: int
) -> None:
    rng = random.Random(seed)
    try:
        async with pool.acquire() as setup:
            org = await setup.fetchval(
                "INSERT INTO orgs (slug, name) VALUES ('feed', 'F') RETURNING id"
            )
            monitor = await setup.fetchval(
                "INSERT INTO monitors (org_id, display_name) VALUES ($1, 'm') RETURNING id", org
            )
        audience = monitor_audience(monitor)
        pullers = [Puller(org, monitor) for _ in range(PULLERS)]
        written: list[str] = []

        async def write(conn: Conn) -> None:
            rid = uuid.uuid4()
            change = ReportStatusChange(
                version=1, changed_at=dt.datetime.now(dt.UTC), report_id=rid, status="x"
            )
            await conn.execute(
                Q.upsert_feed_change, org, audience, RecordKind.REPORT.value, str(rid), 1,
                msgspec.json.encode(change).decode(),
            )  # fmt: skip
            written.append(str(rid))

        conns = [await connect(database_dsn) for _ in range(WRITERS * WAVES)]
        open_tx: list[tuple[Conn, asyncpg.transaction.Transaction]] = []
        try:
            for wave in range(WAVES):
                fresh = conns[wave * WRITERS : (wave + 1) * WRITERS]
                for conn in fresh:
                    tx = conn.transaction()
                    await tx.start()
                    open_tx.append((conn, tx))
                # Every open transaction writes again, in shuffled order: change numbers now
                # interleave across transactions, so commit order cannot match them.
                for _ in range(RECORDS_PER_WRITER):
                    for writer, _tx in rng.sample(open_tx, len(open_tx)):
                        await write(writer)
                # Commit oldest first, but hold one older transaction back: rows of the
                # transactions around it become visible while its lower-numbered rows do not.
                by_xid = sorted(
                    [(await c.fetchval("SELECT pg_current_xact_id()::text::bigint"), c, t)
                     for c, t in open_tx],
                    key=lambda item: item[0],
                )  # fmt: skip
                held_back = by_xid.pop(rng.randrange(1, len(by_xid) - 2))
                keep_open = by_xid[-2:] if wave < WAVES - 1 else []
                for _xid, _conn, tx in by_xid[: len(by_xid) - len(keep_open)]:
                    await tx.commit()
                    for puller in pullers:  # each drains what it may see now, page by page
                        while await puller.step(pool):
                            pass
                await held_back[2].commit()
                open_tx = [(c, t) for _x, c, t in keep_open]
            for _conn, tx in open_tx:
                await tx.commit()
        finally:
            for conn in conns:
                await conn.close()

        for puller in pullers:
            while await puller.step(pool):
                pass
            await puller.step(pool)  # and once more, with nothing in flight
            assert sorted(puller.seen) == sorted(written), "a change was skipped or repeated"
            assert len(set(puller.seen)) == len(puller.seen)

        async with pool.acquire() as check:
            numbers = {
                r["record_id"]: r["change_no"]
                for r in await check.fetch("SELECT record_id, change_no FROM sync_changes")
            }
        orders = [[numbers[rid] for rid in p.seen] for p in pullers]
        assert any(order != sorted(order) for order in orders), "no late commit was exercised"
    finally:
        await truncate_all(pool)
