"""Background matching of new reports: incident dedup, entity resolution, person dedup.

Reports are matched by the worker role, never in the push request: a push stays fast, and a
matching failure is retried by the job queue without touching what the device sent. A push of
new reports queues one ``reports.match_many`` job per chunk of reports (a job row per report
cost the push as much as the report's own feed row); a report whose matching fails there gets a
``reports.match`` job of its own, so it is retried (and, in the end, buried where an operator sees
it) without holding back the others. A report amended, withdrawn or redacted queues
``reports.changed`` (`storage.reports.queue_report_changed`): its matching is brought up to date
(`storage.matching.rematch_report`), and the case holding it follows (`follow_report_change`).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import TYPE_CHECKING

import asyncpg

from server.worker import Chore
from storage.case_links import follow_report_change
from storage.db import Conn
from storage.jobs import ClaimedJob, JobQueue
from storage.matching import (
    MatchingCache,
    match_report,
    refit_model,
    rejoin_persons,
    rematch_report,
)
from storage.queries import Q
from storage.reports import REPORT_CHANGED, queue_report_changed

if TYPE_CHECKING:
    from server.worker import JobHandler, WorkerContext

__all__ = [
    "CHORES",
    "HANDLERS",
    "MATCH_REPORT",
    "MATCH_REPORTS",
    "REFIT",
    "REFIT_DUE",
    "REJOIN",
    "REPORT_CHANGED",
    "enqueue_refits_due",
]

MATCH_REPORT = "reports.match"
MATCH_REPORTS = "reports.match_many"
REFIT = "matching.refit"
# Nightly (the scheduler): queue a refit of every org's models whose data or decisions changed,
# so the review queue's decisions recalibrate the model without anyone asking.
REFIT_DUE = "matching.refit_due"
# After a person model is refitted: the reports still alone in their person are matched again
# with it (`storage.matching.rejoin_persons`), a batch per job, each job queueing the next.
REJOIN = "matching.rejoin"
_log = logging.getLogger("fairwatch.matching")
# One per worker process: the indexes are refreshed from the database before every match, so
# several workers stay consistent; a process only pays the first full load once.
_CACHE = MatchingCache()


async def _match(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    assert job.org_id is not None
    resources = context.resources
    await match_report(
        conn, resources.keyring, _CACHE, job.org_id, uuid.UUID(job.payload["report_id"])
    )


async def _match_many(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    assert job.org_id is not None
    keyring = context.resources.keyring
    for report_id in job.payload["report_ids"]:
        try:
            async with conn.transaction():  # a savepoint: a failure undoes this report only
                await match_report(conn, keyring, _CACHE, job.org_id, uuid.UUID(report_id))
        except Exception:
            _log.exception("matching report %s failed; queued on its own", report_id)
            await JobQueue(conn).enqueue(
                MATCH_REPORT, {"report_id": report_id}, org_id=job.org_id, dedupe_key=report_id
            )


async def _report_changed(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    # As `_match_many`: a report that fails gets a job of its own (which the queue retries and,
    # in the end, buries) and does not hold back the others of its batch.
    assert job.org_id is not None
    report_ids = [uuid.UUID(r) for r in job.payload["report_ids"]]
    if len(report_ids) == 1:
        await _follow_change(conn, context, job.org_id, report_ids[0])
        return
    for report_id in report_ids:
        try:
            async with conn.transaction():  # a savepoint: a failure undoes this report only
                await _follow_change(conn, context, job.org_id, report_id)
        except Exception:
            _log.exception("following report %s's change failed; queued on its own", report_id)
            await queue_report_changed(conn, job.org_id, [report_id])


async def _follow_change(
    conn: Conn, context: WorkerContext, org_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    keyring = context.resources.keyring
    await rematch_report(conn, keyring, _CACHE, org_id, report_id)
    await follow_report_change(conn, org_id, report_id, context.resources.taxonomy)


async def _refit(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    assert job.org_id is not None
    method = await refit_model(
        conn, context.resources.keyring, _CACHE, job.org_id, job.payload["job"]
    )
    _log.info("matching model refit", extra={"fields": {"job": job.payload["job"], "how": method}})
    if job.payload["job"] == "person" and not method.startswith("unchanged"):
        await JobQueue(conn).enqueue(
            REJOIN, {"before": None}, org_id=job.org_id, dedupe_key=f"{job.org_id}:person"
        )


async def _rejoin(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    assert job.org_id is not None
    before = job.payload.get("before")
    cursor = (dt.datetime.fromisoformat(before[0]), uuid.UUID(before[1])) if before else None
    keyring = context.resources.keyring
    joined, following = await rejoin_persons(conn, keyring, _CACHE, job.org_id, cursor)
    _log.info("persons matched again", extra={"fields": {"joined": joined}})
    if following is not None:
        moment, last = following
        await JobQueue(conn).enqueue(
            REJOIN,
            {"before": [moment.isoformat(), str(last)]},
            org_id=job.org_id,
            dedupe_key=f"{job.org_id}:person:{last}",
        )


async def enqueue_refits_due(conn: Conn) -> int:
    """One refit job per (org, job) whose model is missing or older than its data or labels."""
    queue = JobQueue(conn)
    queued = 0
    for row in await conn.fetch(Q.refits_due):
        org_id, kind = row["org_id"], row["job"]
        found = await queue.enqueue(
            REFIT, {"job": kind}, org_id=org_id, dedupe_key=f"{org_id}:{kind}"
        )
        queued += found is not None
    return queued


async def _refits_due(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    queued = await enqueue_refits_due(conn)
    _log.info("matching refits queued", extra={"fields": {"queued": queued}})


async def refresh_held_indexes(pool: asyncpg.Pool, context: WorkerContext) -> None:
    """This process's person indexes take what changed since their last use (redactions,
    withdrawals, amendments) now, not at the next person match in that organisation."""
    if context.resources is None:
        return
    async with pool.acquire() as conn:
        await _CACHE.refresh_persons(conn, context.resources.keyring)


# Every minute: a redacted identity stays decrypted in a worker's memory for at most that long.
CHORES = [Chore(every=60.0, run=refresh_held_indexes)]

HANDLERS: dict[str, JobHandler] = {
    MATCH_REPORT: _match,
    MATCH_REPORTS: _match_many,
    REFIT: _refit,
    REFIT_DUE: _refits_due,
    REJOIN: _rejoin,
    REPORT_CHANGED: _report_changed,
}
