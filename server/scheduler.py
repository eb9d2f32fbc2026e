"""The scheduler role: APScheduler 3.x, active in exactly one process per deployment.

Leadership is a PostgreSQL session-level advisory lock held on a dedicated connection: the process
holding it runs the schedule, every other scheduler waits and retries. If the leader dies its
connection closes, PostgreSQL releases the lock, and a waiting process takes over. Scheduled jobs
only enqueue work into the job table; workers do the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from storage.db import connect
from storage.jobs import JobQueue

__all__ = ["SCHEDULER_LOCK_KEY", "hold_leadership", "run_scheduler"]

_log = logging.getLogger("fairwatch.scheduler")
SCHEDULER_LOCK_KEY = 0x4641_4952_0002


def _build_scheduler(pool: asyncpg.Pool) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def enqueue(kind: str) -> None:
        async with pool.acquire() as conn:
            await JobQueue(conn).enqueue(kind, dedupe_key=kind)

    scheduler.add_job(
        enqueue, CronTrigger(hour=3, minute=17), args=["sessions.purge"], id="sessions.purge"
    )
    return scheduler


async def hold_leadership(
    dsn: str,
    stop: asyncio.Event,
    on_lead: Callable[[], Awaitable[Callable[[], None]]],
    retry_seconds: float = 5.0,
    on_attempt: Callable[[bool], None] | None = None,
) -> None:
    """Try to become leader until ``stop``; while leading, keep the lock's connection alive.

    ``on_lead`` starts the leader's work and returns a function that stops it.
    """
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(dsn)
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCHEDULER_LOCK_KEY)
            if on_attempt is not None:
                on_attempt(bool(got))
            if got:
                _log.info("this process is the active scheduler")
                stop_work = await on_lead()
                try:
                    while not stop.is_set():
                        await conn.fetchval("SELECT 1")  # a dead connection means a lost lock
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=retry_seconds)
                finally:
                    stop_work()
                    _log.info("scheduler leadership released")
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("scheduler lost its database connection: %s", exc)
        finally:
            if conn is not None and not conn.is_closed():
                await conn.close()  # closing the session releases the advisory lock
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=retry_seconds)


async def run_scheduler(dsn: str, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    async def lead() -> Callable[[], None]:
        scheduler = _build_scheduler(pool)
        scheduler.start()
        return lambda: scheduler.shutdown(wait=False)

    await hold_leadership(dsn, stop, lead)
