"""Background matching of new reports: incident dedup, entity resolution, person dedup.

Reports are matched by the worker role, never in the push request: a push stays fast, and a
matching failure is retried by the job queue without touching what the device sent.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from storage.db import Conn
from storage.jobs import ClaimedJob
from storage.matching import MatchingCache, match_report, refit_model

if TYPE_CHECKING:
    from server.worker import JobHandler, WorkerContext

__all__ = ["HANDLERS", "MATCH_REPORT", "REFIT"]

MATCH_REPORT = "reports.match"
REFIT = "matching.refit"
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


async def _refit(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    assert job.org_id is not None
    method = await refit_model(
        conn, context.resources.keyring, _CACHE, job.org_id, job.payload["job"]
    )
    _log.info("matching model refit", extra={"fields": {"job": job.payload["job"], "how": method}})


HANDLERS: dict[str, JobHandler] = {MATCH_REPORT: _match, REFIT: _refit}
