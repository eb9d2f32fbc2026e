"""The job table: concurrent workers never run one job twice; failures back off, then bury."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import asyncpg
import pytest

from server.worker import PoolHandler, WorkerContext, run_worker_once
from storage.db import Conn
from storage.jobs import ClaimedJob, JobQueue
from tests.conftest import truncate_all

pytestmark = pytest.mark.db


async def test_outstanding_job_is_queued_once(db: asyncpg.Connection) -> None:
    queue = JobQueue(db)
    first = await queue.enqueue("match.report", {"report": "r1"}, dedupe_key="r1")
    again = await queue.enqueue("match.report", {"report": "r1"}, dedupe_key="r1")
    assert first is not None
    assert again is None
    assert await queue.counts() == {"pending": 1}


async def test_failures_retry_with_backoff_then_bury(db: asyncpg.Connection) -> None:
    queue = JobQueue(db)
    await queue.enqueue("flaky", max_attempts=2)
    [job] = await queue.claim(10, timedelta(minutes=1))
    await queue.fail(job, "boom")
    assert await queue.claim(10, timedelta(minutes=1)) == []  # backing off, not due yet
    await db.execute("UPDATE jobs SET run_after = now() - interval '1 second'")
    [job] = await queue.claim(10, timedelta(minutes=1))
    assert job.attempts == 2
    await queue.fail(job, "boom again")
    row = await db.fetchrow("SELECT state, last_error FROM jobs")
    assert row is not None
    assert (row["state"], row["last_error"]) == ("dead", "boom again")


async def test_expired_lease_is_claimed_again(db: asyncpg.Connection) -> None:
    queue = JobQueue(db)
    await queue.enqueue("slow")
    [job] = await queue.claim(1, timedelta(minutes=1))
    assert await queue.claim(1, timedelta(minutes=1)) == []
    await db.execute("UPDATE jobs SET leased_until = now() - interval '1 second'")
    [again] = await queue.claim(1, timedelta(minutes=1))
    assert again.id == job.id
    assert again.attempts == 2


async def test_concurrent_workers_run_each_job_exactly_once(pool: asyncpg.Pool) -> None:
    runs: Counter[int] = Counter()

    async def handler(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
        runs[job.payload["n"]] += 1
        await asyncio.sleep(0)  # yield so the workers interleave

    try:
        async with pool.acquire() as conn:
            queue = JobQueue(conn)
            for n in range(200):
                await queue.enqueue("count", {"n": n})

        async def worker() -> None:
            while await run_worker_once(pool, {"count": handler}, batch=7):
                pass

        await asyncio.gather(*(worker() for _ in range(4)))
        assert sorted(runs) == list(range(200))
        assert set(runs.values()) == {1}
        async with pool.acquire() as conn:
            assert await JobQueue(conn).counts() == {"done": 200}
    finally:
        await truncate_all(pool)


async def test_pool_handlers_run_outside_the_job_transaction(pool: asyncpg.Pool) -> None:
    """A PoolHandler gets the pool, not a transaction: its commits stand even when it fails
    later, and the worker marks the job done (or retries it) on its own afterwards."""
    seen: list[tuple[str, bool]] = []

    async def handler(pool: asyncpg.Pool, job: ClaimedJob, context: WorkerContext) -> None:
        async with pool.acquire() as conn:
            seen.append((job.kind, conn.is_in_transaction()))
            slug = job.kind.replace(".", "-")
            await conn.execute("INSERT INTO orgs (slug, name) VALUES ($1, 'x')", slug)
        if job.kind == "pool.fails":
            raise RuntimeError("after its commit")

    try:
        async with pool.acquire() as conn:
            for kind in ("pool.ok", "pool.fails"):
                await JobQueue(conn).enqueue(kind)
        handlers = {k: PoolHandler(handler) for k in ("pool.ok", "pool.fails")}
        assert await run_worker_once(pool, handlers) == 2
        assert sorted(seen) == [("pool.fails", False), ("pool.ok", False)]
        async with pool.acquire() as conn:
            jobs = await conn.fetch("SELECT kind, state, last_error FROM jobs ORDER BY kind")
            written = await conn.fetch("SELECT slug FROM orgs ORDER BY slug")
        assert [tuple(j) for j in jobs] == [
            ("pool.fails", "pending", "RuntimeError: after its commit"),
            ("pool.ok", "done", None),
        ]
        assert [r["slug"] for r in written] == ["pool-fails", "pool-ok"]
    finally:
        await truncate_all(pool)
