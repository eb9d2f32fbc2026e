"""Data minimisation: per-organisation retention and privacy settings, and redaction.

Redaction erases a report's sealed parts (worker identity, free-text place) in its current row,
in every stored version and in its conflicts' sealed values, drops the encrypted copy of what its
case's referrals sent to partners (the list of fields sent stays), marks its declared attachments
erased and queues their blobs for deletion, and marks ``redacted_at``. It is applied to reports
followed in a case closed more than ``redact_after_days`` ago, never while the organisation is on
legal hold, and each redaction is written to the audit chain in the same transaction. The blob
store is I/O outside PostgreSQL, so the bytes go after the commit:
``storage.attachments.erase_pending_attachments``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from cases.classification import ANALYST_CELL_RESOLUTION
from cases.reports import DeclaredAttachment
from storage.audit import record_system
from storage.db import Conn
from storage.feed import publish_report_state
from storage.queries import Q
from storage.reports import queue_report_changed

__all__ = [
    "PrivacySettings",
    "RetentionSettings",
    "analyst_cell_resolution",
    "get_privacy",
    "get_retention",
    "put_privacy",
    "put_retention",
    "redact_due_reports",
    "retention_orgs",
]


class RetentionSettings(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    redact_after_days: int | None
    legal_hold: bool
    version: int
    updated_at: datetime | None


class PrivacySettings(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    analyst_cell_resolution: int
    version: int
    updated_at: datetime | None


async def get_retention(conn: Conn, org_id: uuid.UUID) -> RetentionSettings:
    row = await conn.fetchrow(Q.get_retention_settings, org_id)
    if row is None:  # the default: keep everything, no hold
        return RetentionSettings(org_id, None, False, 0, None)
    return msgspec.convert(dict(row), RetentionSettings)


async def put_retention(
    conn: Conn, org_id: uuid.UUID, days: int | None, legal_hold: bool, user_id: uuid.UUID
) -> RetentionSettings:
    row = await conn.fetchrow(Q.put_retention_settings, org_id, days, legal_hold, user_id)
    assert row is not None
    return msgspec.convert(dict(row), RetentionSettings)


async def get_privacy(conn: Conn, org_id: uuid.UUID) -> PrivacySettings:
    row = await conn.fetchrow(Q.get_privacy_settings, org_id)
    if row is None:
        return PrivacySettings(org_id, ANALYST_CELL_RESOLUTION, 0, None)
    return msgspec.convert(dict(row), PrivacySettings)


async def put_privacy(
    conn: Conn, org_id: uuid.UUID, resolution: int, user_id: uuid.UUID
) -> PrivacySettings:
    row = await conn.fetchrow(Q.put_privacy_settings, org_id, resolution, user_id)
    assert row is not None
    return msgspec.convert(dict(row), PrivacySettings)


async def analyst_cell_resolution(conn: Conn, org_id: uuid.UUID) -> int:
    """The H3 resolution analysts of ``org_id`` see places at (pass to ``view_for``)."""
    return (await get_privacy(conn, org_id)).analyst_cell_resolution


async def retention_orgs(conn: Conn) -> list[tuple[uuid.UUID, int]]:
    """Organisations with a retention period and no legal hold."""
    rows = await conn.fetch(Q.retention_orgs)
    return [(r["org_id"], r["redact_after_days"]) for r in rows]


async def redact_due_reports(conn: Conn, org_id: uuid.UUID, *, limit: int = 200) -> int:
    """Redact up to ``limit`` due reports of one organisation, in the caller's transaction.

    Re-reads the settings under a share lock, so a legal hold committed before this point always
    wins; returns how many reports were redacted.
    """
    settings = await conn.fetchrow(Q.lock_retention_settings, org_id)
    if settings is None or settings["legal_hold"] or settings["redact_after_days"] is None:
        return 0
    due = await conn.fetch(
        Q.reports_due_for_redaction, org_id, settings["redact_after_days"], limit
    )
    redacted_ids: list[uuid.UUID] = []
    for row in due:
        redacted = await conn.fetchrow(Q.redact_report, org_id, row["id"])
        if redacted is None:
            continue
        redacted_ids.append(row["id"])
        await conn.execute(Q.redact_report_versions, row["id"])
        await conn.execute(Q.redact_report_conflicts, row["id"])
        await conn.execute(Q.redact_case_referrals, org_id, row["case_id"])
        erased: int = await conn.fetchval(Q.erase_report_attachments, org_id, row["id"])
        if erased and not redacted["deleted"]:  # a withdrawn report keeps its tombstone
            # The monitor's devices stop waiting for (and offering) the erased media.
            live = [
                DeclaredAttachment(**dict(a))
                for a in await conn.fetch(Q.live_report_attachments, row["id"])
            ]
            await publish_report_state(conn, org_id, redacted["monitor_id"], row["id"], live)
        await record_system(
            conn,
            org_id,
            "retention",
            "report.redact",
            "report",
            row["id"],
            case_id=str(row["case_id"]),
            redact_after_days=settings["redact_after_days"],
            attachments_erased=erased,
        )
    # The worker's matching indexes drop the erased identities they hold in memory.
    await queue_report_changed(conn, org_id, redacted_ids)
    return len(redacted_ids)
