"""Incident reports as stored: content in the clear, sensitive parts sealed with the org's key.

A report row holds the current version; ``report_versions`` keeps every earlier one (archived
when an amendment replaces it), so that an amendment based on an older one can be merged
three-way. The worker's identity and the free-text place are sealed (``storage.keyring``): a
database dump shows neither.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import msgspec

from cases.reports import Report, WorkerIdentity
from storage.db import Conn
from storage.errors import NotFound
from storage.jobs import JobQueue
from storage.keyring import Keyring
from storage.queries import Q
from sync.apply import StoredReport
from sync.clock import OCCURRED_FLAGS
from sync.merge import FieldConflict

__all__ = [
    "OCCURRED_FLAG_NAMES",
    "REPORT_CHANGED",
    "ReportStore",
    "SealedParts",
    "conflict_context",
    "conflict_values",
    "is_sensitive_path",
    "queue_report_changed",
    "sealed_context",
    "split_sensitive",
]

# A report changed after it was stored (amended, a conflict resolved, withdrawn, redacted): the
# worker brings what was derived from it up to date (`server.matching_jobs`: its matching, and
# the priority of the cases that hold it).
REPORT_CHANGED = "reports.changed"
OCCURRED_FLAG_NAMES = sorted(f.value for f in OCCURRED_FLAGS)


async def queue_report_changed(conn: Conn, org_id: uuid.UUID, report_ids: list[uuid.UUID]) -> None:
    """Queue the follow-up of the reports' change in the caller's transaction: a committed
    change always has one. No dedupe key: a job already running may have read the report
    before this change."""
    if report_ids:
        await JobQueue(conn).enqueue(
            REPORT_CHANGED, {"report_ids": [str(r) for r in report_ids]}, org_id=org_id
        )


class SealedParts(msgspec.Struct, frozen=True, omit_defaults=True):
    """What is encrypted at rest for one report version."""

    worker: WorkerIdentity | None = None
    place: str | None = None


def split_sensitive(report: Report) -> tuple[Report, SealedParts | None]:
    """The report with sensitive parts removed, and those parts (None when there are none)."""
    parts = SealedParts(worker=report.worker, place=report.location.place)
    if parts.worker is None and parts.place is None:
        return report, None
    clear = msgspec.structs.replace(
        report,
        worker=None,
        location=msgspec.structs.replace(report.location, place=None),
    )
    return clear, parts


def _join(clear: Report, parts: SealedParts | None) -> Report:
    if parts is None:
        return clear
    return msgspec.structs.replace(
        clear,
        worker=parts.worker,
        location=msgspec.structs.replace(clear.location, place=parts.place),
    )


_ENCODER = msgspec.json.Encoder()


def is_sensitive_path(path: str) -> bool:
    """Report fields whose values are sealed wherever they are stored (see SealedParts)."""
    return path.split("[", 1)[0].split(".", 1)[0] in ("worker", "location")


def conflict_context(report_id: uuid.UUID, path: str, which: str) -> bytes:
    return f"report_conflicts:{report_id}:{path}:{which}".encode()


def sealed_context(report_id: uuid.UUID) -> bytes:
    """Where a report's sealed parts live; the ciphertext decrypts only with this context."""
    return f"reports.sealed:{report_id}".encode()


def conflict_values(
    report_id: uuid.UUID,
    conflict: FieldConflict,
    seal: Callable[[object, bytes], bytes] | None,
) -> list[str]:
    """The base, server and incoming values of a conflict as stored (JSON text). A conflict over
    the worker's identity or the exact place must not write them in clear: they are sealed like
    the report itself (``seal`` from ``Keyring.struct_sealer``, needed only for such paths)."""
    values = []
    for which, value in (
        ("base", conflict.base),
        ("server", conflict.server),
        ("incoming", conflict.incoming),
    ):
        if is_sensitive_path(conflict.path) and value is not None:
            assert seal is not None
            sealed = seal(value, conflict_context(report_id, conflict.path, which))
            value = {"sealed": base64.b64encode(sealed).decode()}
        values.append(_ENCODER.encode(value).decode())
    return values


class ReportStore:
    """Reads and writes reports for one organisation's push or case work."""

    def __init__(self, conn: Conn, keyring: Keyring) -> None:
        self._conn = conn
        self._keyring = keyring

    async def _seal(self, org_id: uuid.UUID, report: Report) -> tuple[Report, bytes | None]:
        clear, parts = split_sensitive(report)
        if parts is None:
            return clear, None
        sealed = await self._keyring.encrypt_struct(
            self._conn, org_id, parts, sealed_context(report.id)
        )
        return clear, sealed

    async def _unseal(
        self, org_id: uuid.UUID, report_id: uuid.UUID, clear: Report, sealed: bytes | None
    ) -> Report:
        if sealed is None:
            return clear
        parts = await self._keyring.decrypt_struct(
            self._conn, org_id, sealed, sealed_context(report_id), SealedParts
        )
        return _join(clear, parts)

    async def lock(self, org_id: uuid.UUID, report_id: uuid.UUID) -> StoredReport | None:
        """The current report, locked for this transaction; None if absent.

        A report of another organisation is returned with a foreign monitor id so the push rules
        refuse it without learning anything about it.
        """
        row = await self._conn.fetchrow(Q.lock_report, report_id)
        if row is None:
            return None
        return await self.stored(org_id, row)

    async def stored(self, org_id: uuid.UUID, row: asyncpg.Record) -> StoredReport:
        """A row of ``lock_report`` (or ``lock_reports_for_edit``) as the push rules see it."""
        report_id: uuid.UUID = row["id"]
        if row["org_id"] != org_id:
            foreign = msgspec.json.decode(row["content"], type=Report)
            return StoredReport(report=foreign, version=row["version"], monitor_id=uuid.UUID(int=0))
        clear = msgspec.json.decode(row["content"], type=Report)
        report = await self._unseal(org_id, report_id, clear, row["sealed"])
        return StoredReport(
            report=report,
            version=row["version"],
            monitor_id=row["monitor_id"],
            deleted=row["deleted_at"] is not None,
            redacted=row["redacted_at"] is not None,
        )

    async def version(self, org_id: uuid.UUID, report_id: uuid.UUID, version: int) -> Report | None:
        row = await self._conn.fetchrow(Q.report_version, report_id, version)
        if row is None:
            return None
        return await self.stored_version(org_id, report_id, row)

    async def stored_version(
        self, org_id: uuid.UUID, report_id: uuid.UUID, row: asyncpg.Record
    ) -> Report:
        """A ``report_versions`` row (content as text, sealed parts) as a report."""
        clear = msgspec.json.decode(row["content"], type=Report)
        return await self._unseal(org_id, report_id, clear, row["sealed"])

    async def create(
        self,
        *,
        org_id: uuid.UUID,
        monitor_id: uuid.UUID,
        device_id: uuid.UUID,
        report: Report,
        recorded_at: dt.datetime,
        received_at: dt.datetime,
        clock_offset_seconds: float | None,
        time_flags: list[str],
    ) -> None:
        clear, sealed = await self._seal(org_id, report)
        content = _ENCODER.encode(clear).decode()
        await self._conn.execute(
            Q.insert_report,
            report.id,
            org_id,
            monitor_id,
            device_id,
            content,
            sealed,
            report.occurred_at,
            report.location.lat,
            report.location.lon,
            list(report.categories),
            recorded_at,
            received_at,
            clock_offset_seconds,
            time_flags,
        )
        await self._set_attachments(org_id, report)

    async def update(
        self,
        org_id: uuid.UUID,
        report: Report,
        version: int,
        occurred_flags: list[str] | None = None,
    ) -> None:
        """Write a new version; ``occurred_flags`` replace the incident-time flags (None: the
        incident time did not change, `sync.clock.occurred_time_flags`)."""
        clear, sealed = await self._seal(org_id, report)
        content = _ENCODER.encode(clear).decode()
        await self._conn.execute(Q.archive_report_version, report.id)
        await self._conn.execute(
            Q.update_report,
            report.id,
            version,
            content,
            sealed,
            report.occurred_at,
            report.location.lat,
            report.location.lon,
            list(report.categories),
            OCCURRED_FLAG_NAMES,
            occurred_flags,
        )
        await self._set_attachments(org_id, report)
        await queue_report_changed(self._conn, org_id, [report.id])

    async def withdraw(self, org_id: uuid.UUID, report_id: uuid.UUID) -> int:
        version: int = await self._conn.fetchval(Q.delete_report, report_id)
        await queue_report_changed(self._conn, org_id, [report_id])
        return version

    async def add_conflicts(
        self,
        org_id: uuid.UUID,
        report_id: uuid.UUID,
        conflicts: tuple[FieldConflict, ...],
        mutation_id: uuid.UUID,
        device_id: uuid.UUID,
    ) -> None:
        seal = None
        if any(is_sensitive_path(c.path) for c in conflicts):
            seal = await self._keyring.struct_sealer(self._conn, org_id)
        for c in conflicts:
            values = conflict_values(report_id, c, seal)
            await self._conn.execute(
                Q.insert_conflict, org_id, report_id, c.path, *values, mutation_id, device_id
            )

    async def _set_attachments(self, org_id: uuid.UUID, report: Report) -> None:
        atts = report.attachments
        await self._conn.execute(
            Q.replace_report_attachments,
            report.id,
            org_id,
            [a.sha256 for a in atts],
            [a.size_bytes for a in atts],
            [a.media_type for a in atts],
            [a.sensitive for a in atts],
        )

    async def get(self, org_id: uuid.UUID, report_id: uuid.UUID) -> dict[str, Any]:
        """A report for the case team, with its sensitive parts unsealed."""
        row = await self._conn.fetchrow(Q.get_report, org_id, report_id)
        if row is None:
            raise NotFound("report", report_id)
        clear = msgspec.json.decode(row["content"], type=Report)
        report = await self._unseal(org_id, report_id, clear, row["sealed"])
        return {
            "report": report,
            "monitor_id": row["monitor_id"],
            "device_id": row["device_id"],
            "version": row["version"],
            "recorded_at": row["recorded_at"],
            "received_at": row["received_at"],
            "clock_offset_seconds": row["clock_offset_seconds"],
            "time_flags": list(row["time_flags"]),
            "status": row["status"],
            "withdrawn": row["deleted_at"] is not None,
        }
