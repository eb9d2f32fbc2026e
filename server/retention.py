"""Data minimisation: the retention job, and the org-admin API for retention and privacy settings.

The job ``retention.apply`` redacts, for every organisation with a retention period and no legal
hold, the sealed parts of reports whose case closed long enough ago (storage/retention.py), then,
once that transaction has committed, deletes the blobs of the attachments it erased
(storage/attachments.py ``erase_pending_attachments``, one short transaction per blob). It is a
`PoolHandler`: the blob store is not held inside a database transaction, and a run that died
between the two steps is finished by the next one. It is idempotent and bounded per run, so the
scheduler can enqueue it daily (dedupe key ``daily``) and a backlog drains over a few runs.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import get, put
from litestar.params import JSONBody

from cases.accounts import Role
from server.auth import ANY_STAFF, Caller, audit_staff, requires
from server.resources import Db
from server.worker import Handler, PoolHandler, WorkerContext
from storage.attachments import erase_pending_attachments
from storage.blobs import BlobStore
from storage.db import Conn
from storage.jobs import ClaimedJob, JobQueue
from storage.retention import (
    PrivacySettings,
    RetentionSettings,
    get_privacy,
    get_retention,
    put_privacy,
    put_retention,
    redact_due_reports,
    retention_orgs,
)

__all__ = [
    "HANDLERS",
    "JOB_KIND",
    "ROUTES",
    "apply_retention",
    "enqueue_retention",
    "erase_attachments",
    "get_privacy_settings",
    "get_retention_settings",
    "put_privacy_settings",
    "put_retention_settings",
    "run_retention",
]

JOB_KIND = "retention.apply"
# Per organisation and run: keeps each job's transaction (and its audit-head lock) short.
BATCH = 200
# Blob erasures per pass; each has its own transaction, so this only bounds one job's run.
ERASE_BATCH = 1000
_log = logging.getLogger("fairwatch.retention")


class RetentionUpdate(msgspec.Struct, frozen=True):
    redact_after_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] | None = None
    legal_hold: bool = False


class PrivacyUpdate(msgspec.Struct, frozen=True):
    # 4 (~1 770 km²) to 9 (~0.1 km²); the default 7 is about 5 km².
    analyst_cell_resolution: Annotated[int, msgspec.Meta(ge=4, le=9)]


async def run_retention(conn: Conn, *, batch: int = BATCH) -> dict[str, int]:
    """One pass over every organisation; {org id: reports redacted}. Caller owns the transaction."""
    done: dict[str, int] = {}
    for org_id, _days in await retention_orgs(conn):
        count = await redact_due_reports(conn, org_id, limit=batch)
        if count:
            done[str(org_id)] = count
    return done


async def erase_attachments(conn: Conn, blobs: BlobStore, *, passes: int | None = None) -> int:
    """Delete the blobs redaction queued, pass after pass until none is left (or ``passes``);
    returns how many erasures were settled. ``conn`` must not be in a transaction."""
    total = 0
    while passes is None or passes > 0:
        settled = await erase_pending_attachments(conn, blobs, limit=ERASE_BATCH)
        total += settled
        if settled == 0:
            break
        if passes is not None:
            passes -= 1
    return total


async def apply_retention(pool: asyncpg.Pool, job: ClaimedJob, context: WorkerContext) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            done = await run_retention(conn)
        # After the commit: also finishes erasures a previous run committed but did not carry out.
        erased = await erase_attachments(conn, context.resources.blobs, passes=1)
    _log.info("retention applied", extra={"fields": {"redacted": done, "blobs_settled": erased}})


async def enqueue_retention(conn: Conn) -> None:
    """Queue a run (at most one outstanding); for the scheduler's daily trigger."""
    await JobQueue(conn).enqueue(JOB_KIND, {}, dedupe_key="daily")


HANDLERS: dict[str, Handler] = {JOB_KIND: PoolHandler(apply_retention)}


@get(
    "/v1/org/retention",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["organisation"],
    summary="How long sensitive fields are kept after a case closes, and the legal hold",
)
async def get_retention_settings(principal: Caller, db: Db) -> RetentionSettings:
    return await get_retention(db, principal.org_id)


@put(
    "/v1/org/retention",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["organisation"],
    summary="Set the retention period (null: keep) and the legal hold (stops all redaction)",
)
async def put_retention_settings(
    principal: Caller, db: Db, data: JSONBody[RetentionUpdate]
) -> RetentionSettings:
    async with db.transaction():
        saved = await put_retention(
            db, principal.org_id, data.redact_after_days, data.legal_hold, principal.user_id
        )
        await audit_staff(
            db,
            principal,
            "org.retention_update",
            "org",
            principal.org_id,
            redact_after_days=data.redact_after_days,
            legal_hold=data.legal_hold,
        )
    return saved


@get(
    "/v1/org/privacy",
    guards=[requires(*ANY_STAFF)],
    tags=["organisation"],
    summary="How coarse the places analysts see are (H3 resolution)",
)
async def get_privacy_settings(principal: Caller, db: Db) -> PrivacySettings:
    return await get_privacy(db, principal.org_id)


@put(
    "/v1/org/privacy",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["organisation"],
    summary="Set the H3 resolution (4 to 9) of the cells analysts see instead of coordinates",
)
async def put_privacy_settings(
    principal: Caller, db: Db, data: JSONBody[PrivacyUpdate]
) -> PrivacySettings:
    async with db.transaction():
        saved = await put_privacy(
            db, principal.org_id, data.analyst_cell_resolution, principal.user_id
        )
        await audit_staff(
            db,
            principal,
            "org.privacy_update",
            "org",
            principal.org_id,
            analyst_cell_resolution=data.analyst_cell_resolution,
        )
    return saved


ROUTES: list[Any] = [
    get_retention_settings,
    put_retention_settings,
    get_privacy_settings,
    put_privacy_settings,
]
