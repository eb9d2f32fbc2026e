"""The scheduler role: APScheduler 3.x, active in exactly one process per deployment.

Leadership is a PostgreSQL session-level advisory lock held on a dedicated connection: the process
holding it runs the schedule, every other scheduler waits and retries. If the leader dies its
connection closes, PostgreSQL releases the lock, and a waiting process takes over. Scheduled jobs
only enqueue work into the job table; workers do the work.

Risk scans follow each organisation's ``risk_schedules`` (an organisation without any gets
``DEFAULT_RISK_CRON``, nightly). The leader re-reads the schedules every
``SCHEDULE_REFRESH_SECONDS``, so edits made through the API apply without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from server.retention import enqueue_retention
from storage.db import connect
from storage.jobs import JobQueue
from storage.risk import RiskRepository, ScanParams
from storage.risk_runs import resolve_params

__all__ = [
    "DEFAULT_RISK_CRON",
    "SCHEDULER_LOCK_KEY",
    "SCHEDULE_REFRESH_SECONDS",
    "cron_trigger",
    "enqueue_scheduled_scan",
    "hold_leadership",
    "run_scheduler",
    "sync_risk_schedules",
]

_log = logging.getLogger("fairwatch.scheduler")
SCHEDULER_LOCK_KEY = 0x4641_4952_0002
DEFAULT_RISK_CRON = "30 2 * * *"  # 02:30 UTC, after the day's late uploads have mostly arrived
SCHEDULE_REFRESH_SECONDS = 60.0
SCAN_JOB = "risk.scan"


def cron_trigger(cron: str) -> CronTrigger:
    """A five-field crontab in UTC; raises ValueError when it is not one."""
    return CronTrigger.from_crontab(cron, timezone="UTC")


async def enqueue_scheduled_scan(
    pool: asyncpg.Pool, org_id: uuid.UUID, key: str, params: dict[str, Any]
) -> uuid.UUID | None:
    """Record a queued run for a schedule entry and the job that executes it."""
    try:
        scan = msgspec.convert(params, ScanParams)
    except msgspec.ValidationError as exc:
        _log.error("risk schedule %s has invalid parameters: %s", key, exc)
        return None
    scan = resolve_params(scan, today=datetime.now(UTC).date(), scheduled=True)
    async with pool.acquire() as conn, conn.transaction():
        run = await RiskRepository(conn).add_run(
            org_id, scan, trigger="schedule", raise_alerts=True, schedule_key=key
        )
        await JobQueue(conn).enqueue(
            SCAN_JOB,
            {"run_id": str(run.id)},
            org_id=org_id,
            dedupe_key=f"{key}:{scan.analysis_date}",
            max_attempts=3,
        )
    return run.id


async def sync_risk_schedules(scheduler: AsyncIOScheduler, pool: asyncpg.Pool) -> int:
    """Make the scheduler's risk jobs match the table; returns how many are scheduled."""
    async with pool.acquire() as conn:
        wanted = await RiskRepository(conn).scheduled_scans(DEFAULT_RISK_CRON)
    current = {job.id: job for job in scheduler.get_jobs() if job.id.startswith("risk:")}
    seen = set()
    for entry in wanted:
        job_id = f"risk:{entry.key}"
        seen.add(job_id)
        args = [pool, entry.org_id, entry.key, entry.params]
        try:
            trigger = cron_trigger(entry.cron)
        except ValueError as exc:
            _log.error("risk schedule %s has an invalid cron %r: %s", entry.key, entry.cron, exc)
            continue
        existing = current.get(job_id)
        if (
            existing is not None
            and str(existing.trigger) == str(trigger)
            and existing.args[3] == entry.params
        ):
            continue  # unchanged: keep its next fire time
        scheduler.add_job(
            enqueue_scheduled_scan, trigger, args=args, id=job_id, replace_existing=True,
            misfire_grace_time=3600, coalesce=True,
        )  # fmt: skip
    for job_id in current.keys() - seen:
        scheduler.remove_job(job_id)
    return len(seen)


def _build_scheduler(pool: asyncpg.Pool) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")

    async def enqueue(kind: str) -> None:
        async with pool.acquire() as conn:
            await JobQueue(conn).enqueue(kind, dedupe_key=kind)

    async def refresh() -> None:
        try:
            await sync_risk_schedules(scheduler, pool)
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("could not refresh risk schedules: %s", exc)

    scheduler.add_job(
        enqueue, CronTrigger(hour=3, minute=17), args=["sessions.purge"], id="sessions.purge"
    )

    async def retention() -> None:
        async with pool.acquire() as conn:
            await enqueue_retention(conn)

    # Every night, refit each organisation's matching models whose data or decisions changed.
    scheduler.add_job(
        enqueue, CronTrigger(hour=2, minute=37), args=["matching.refit_due"], id="matching.refit"
    )
    # Data minimisation: every night, redact what each organisation's retention rules say.
    scheduler.add_job(retention, CronTrigger(hour=3, minute=47), id="retention.apply")
    scheduler.add_job(
        refresh,
        IntervalTrigger(seconds=SCHEDULE_REFRESH_SECONDS),
        id="risk.refresh_schedules",
        next_run_time=datetime.now(UTC),
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

    ``on_lead`` starts the leader's work and returns a function that stops it. The lock's
    session is named ``fairwatch-scheduler pid=<pid>`` in pg_stat_activity, so operators (and
    tests) can see which process leads.
    """
    waiting_logged = False
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await connect(dsn)
            await conn.execute(
                "SELECT set_config('application_name', $1, false)",
                f"fairwatch-scheduler pid={os.getpid()}",
            )
            got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", SCHEDULER_LOCK_KEY)
            if on_attempt is not None:
                on_attempt(bool(got))
            if not got and not waiting_logged:
                _log.info("another process is the active scheduler; this one waits")
                waiting_logged = True
            if got:
                waiting_logged = False
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
