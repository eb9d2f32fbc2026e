"""The worker loop: claims jobs from the job table and runs their handlers.

A plain handler (`JobHandler`) runs in its own transaction together with the job's completion
mark, so a job's effects and "done" commit together; a crash mid-job rolls both back and the
lease lets another worker retry. A handler that does slow I/O outside PostgreSQL (an HTTP call,
the blob store) is registered as a `PoolHandler` instead: it gets the pool and opens its own
short transactions, so no transaction or connection is held across the I/O, and the worker marks
the job done afterwards in a transaction of its own. Such a handler may therefore run again after
committing part of its work (a crash before the mark), and must be idempotent step by step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from storage.accounts import SessionRepository
from storage.db import Conn
from storage.jobs import ClaimedJob, JobQueue

__all__ = [
    "JOB_HANDLERS",
    "Chore",
    "Handler",
    "JobHandler",
    "PoolHandler",
    "WorkerContext",
    "all_chores",
    "all_handlers",
    "do_chores_due",
    "run_worker",
    "run_worker_once",
]

_log = logging.getLogger("fairwatch.worker")


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """What job handlers may use besides their connection (keyring, taxonomy, settings...)."""

    resources: Any = None


JobHandler = Callable[[Conn, ClaimedJob, WorkerContext], Awaitable[None]]
"""Runs inside the job's transaction, which also marks the job done."""


@dataclass(frozen=True, slots=True)
class PoolHandler:
    """A handler that manages its own transactions from the pool (see the module docstring)."""

    run: Callable[[asyncpg.Pool, ClaimedJob, WorkerContext], Awaitable[None]]


Handler = JobHandler | PoolHandler
LEASE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Chore:
    """Work every worker process does for itself, every ``every`` seconds: not a job, which
    only one process would run (a process's own in-memory state, such as its indexes)."""

    every: float
    run: Callable[[asyncpg.Pool, WorkerContext], Awaitable[None]]


async def _purge_sessions(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    removed = await SessionRepository(conn).delete_expired()
    _log.info("purged expired sessions", extra={"fields": {"removed": removed}})


JOB_HANDLERS: dict[str, Handler] = {
    "sessions.purge": _purge_sessions,
}


def all_handlers() -> dict[str, Handler]:
    """The handlers of every area, gathered in one place (each area keeps its own module)."""
    from server.case_jobs import HANDLERS as CASE_HANDLERS
    from server.matching_jobs import HANDLERS as MATCHING_HANDLERS
    from server.retention import HANDLERS as RETENTION_HANDLERS
    from server.risk_jobs import HANDLERS as RISK_HANDLERS

    return {
        **JOB_HANDLERS,
        **MATCHING_HANDLERS,
        **CASE_HANDLERS,
        **RISK_HANDLERS,
        **RETENTION_HANDLERS,
    }


def all_chores() -> list[Chore]:
    from server.matching_jobs import CHORES as MATCHING_CHORES

    return [*MATCHING_CHORES]


async def do_chores_due(
    pool: asyncpg.Pool,
    chores: Sequence[Chore],
    last_done: list[float],
    now: float,
    context: WorkerContext,
) -> int:
    """Run the chores whose interval has passed since ``last_done`` (updated); returns how many
    ran. A failing chore is logged and tried again at its next turn: it never stops the loop."""
    ran = 0
    for i, chore in enumerate(chores):
        if now - last_done[i] < chore.every:
            continue
        last_done[i] = now
        ran += 1
        try:
            await chore.run(pool, context)
        except Exception:
            _log.exception("worker chore %s failed", getattr(chore.run, "__name__", chore.run))
    return ran


async def _run_pool_handler(
    pool: asyncpg.Pool, handler: PoolHandler, job: ClaimedJob, context: WorkerContext
) -> None:
    try:
        await handler.run(pool, job, context)
    except Exception as exc:
        _log.exception("job %s (%s) failed", job.id, job.kind)
        async with pool.acquire() as conn:
            await JobQueue(conn).fail(job, f"{type(exc).__name__}: {exc}")
        return
    async with pool.acquire() as conn:
        await JobQueue(conn).complete(job.id)


async def run_worker_once(
    pool: asyncpg.Pool,
    handlers: Mapping[str, Handler] | None = None,
    batch: int = 10,
    context: WorkerContext | None = None,
) -> int:
    """Claim and run one batch; returns how many jobs were claimed."""
    handlers = all_handlers() if handlers is None else handlers
    context = context or WorkerContext()
    async with pool.acquire() as conn:
        claimed = await JobQueue(conn).claim(batch, LEASE)
    for job in claimed:
        handler = handlers.get(job.kind)
        if isinstance(handler, PoolHandler):
            await _run_pool_handler(pool, handler, job, context)
            continue
        async with pool.acquire() as conn:
            queue = JobQueue(conn)
            if handler is None:
                await queue.fail(job, f"no handler for job kind {job.kind!r}")
                continue
            try:
                async with conn.transaction():
                    await handler(conn, job, context)
                    await queue.complete(job.id)
            except Exception as exc:
                _log.exception("job %s (%s) failed", job.id, job.kind)
                await queue.fail(job, f"{type(exc).__name__}: {exc}")
    return len(claimed)


async def run_worker(
    pool: asyncpg.Pool,
    stop: asyncio.Event,
    poll_seconds: float,
    context: WorkerContext | None = None,
) -> None:
    _log.info("worker started")
    handlers = all_handlers()
    context = context or WorkerContext()
    chores = all_chores()
    last_done = [time.monotonic()] * len(chores)
    while not stop.is_set():
        try:
            busy = await run_worker_once(pool, handlers, context=context)
        except (OSError, asyncpg.PostgresError) as exc:
            _log.warning("worker cannot reach the database: %s", exc)
            busy = 0
        await do_chores_due(pool, chores, last_done, time.monotonic(), context)
        if busy == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_seconds)
    _log.info("worker stopped")
