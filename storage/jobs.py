"""The background job queue: a PostgreSQL table consumed with ``FOR UPDATE SKIP LOCKED``.

Any number of worker processes can share it. A claimed job carries a lease; a worker that dies
leaves its lease to expire and another worker picks the job up again, so handlers must be
idempotent (they are: re-running matching changes nothing the second time; a webhook delivery
interrupted after its POST posts again, and receivers deduplicate on its delivery id).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import msgspec

from storage.db import Conn
from storage.queries import Q

__all__ = ["ClaimedJob", "JobQueue"]


class ClaimedJob(msgspec.Struct, frozen=True):
    id: int
    org_id: uuid.UUID | None
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


class JobQueue:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any] | None = None,
        *,
        org_id: uuid.UUID | None = None,
        dedupe_key: str | None = None,
        run_after: datetime | None = None,
        max_attempts: int = 8,
    ) -> int | None:
        """Queue a job; returns its id, or None when an identical outstanding job exists."""
        body = msgspec.json.encode(payload or {}).decode()
        job_id: int | None = await self._conn.fetchval(
            Q.enqueue_job, org_id, kind, body, dedupe_key, run_after, max_attempts
        )
        return job_id

    async def claim(self, limit: int, lease: timedelta) -> list[ClaimedJob]:
        rows = await self._conn.fetch(Q.claim_jobs, limit, lease)
        return [
            ClaimedJob(
                id=r["id"],
                org_id=r["org_id"],
                kind=r["kind"],
                payload=msgspec.json.decode(r["payload"]),
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
            )
            for r in rows
        ]

    async def complete(self, job_id: int) -> None:
        await self._conn.execute(Q.complete_job, job_id)

    async def fail(self, job: ClaimedJob, error: str) -> None:
        """Retry with exponential backoff (capped at an hour), or bury after the last attempt."""
        error = error[:2000]
        if job.attempts >= job.max_attempts:
            await self._conn.execute(Q.bury_job, job.id, error)
            return
        delay = timedelta(seconds=min(3600, 2 ** (job.attempts + 1)))
        await self._conn.execute(Q.retry_job, job.id, error, delay)

    async def counts(self) -> dict[str, int]:
        rows = await self._conn.fetch(Q.count_jobs_by_state)
        return {r["state"]: r["n"] for r in rows}
