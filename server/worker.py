"""The worker loop: claims jobs from the job table and runs their handlers.

Each job runs in its own transaction together with its completion mark, so a job's effects and
"done" commit together; a crash mid-job rolls both back and the lease lets another worker retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from storage.accounts import SessionRepository
from storage.db import Conn
from storage.jobs import ClaimedJob, JobQueue

__all__ = ["JOB_HANDLERS", "JobHandler", "run_worker", "run_worker_once"]

_log = logging.getLogger("fairwatch.worker")

JobHandler = Callable[[Conn, ClaimedJob], Awaitable[None]]
LEASE = timedelta(minutes=5)


async def _purge_sessions(conn: Conn, job: ClaimedJob) -> None:
    removed = await SessionRepository(conn).delete_expired()
    _log.info("purged expired sessions", extra={"fields": {"removed": removed}})


JOB_HANDLERS: dict[str, JobHandler] = {
    "sessions.purge": _purge_sessions,
}


async def run_worker_once(
    pool: asyncpg.Pool, handlers: dict[str, JobHandler] | None = None, batch: int = 10
) -> int:
    """Claim and run one batch; returns how many jobs were claimed."""
    handlers = JOB_HANDLERS if handlers is None else handlers
    async with pool.acquire() as conn:
        claimed = await JobQueue(conn).claim(batch, LEASE)
    for job in claimed:
        handler = handlers.get(job.kind)
        async with pool.acquire() as conn:
            queue = JobQueue(conn)
            if handler is None:
                await queue.fail(job, f"no handler for job kind {job.kind!r}")
                continue
            try:
                async with conn.transaction():
                    await handler(conn, job)
                    await queue.complete(job.id)
            except Exception as exc:
                _log.exception("job %s (%s) failed", job.id, job.kind)
                await queue.fail(job, f"{type(exc).__name__}: {exc}")
    return len(claimed)


async def run_worker(pool: asyncpg.Pool, stop: asyncio.Event, poll_seconds: float) -> None:
    _log.info("worker started")
    while not stop.is_set():
        try:
            busy = await run_worker_once(pool)
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("worker cannot reach the database: %s", exc)
            busy = 0
        if busy == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
    _log.info("worker stopped")
