"""The fast path for the new reports of a push: created together, set-based.

Most of a phone's outbox is new reports. Applying them one by one costs a dozen round trips each;
here a run of creates is decided, sealed and written with binary COPY, in one savepoint. If the
database refuses anything, the caller falls back to the one-by-one path, which rejects the
offending mutation alone. Amendments and withdrawals have their own run (storage/push_edits.py).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence, Set

import asyncpg
import msgspec

from storage.db import Conn
from storage.devices import DeviceAuth
from storage.feed import monitor_audience
from storage.keyring import Keyring
from storage.push_edits import created_time_flags
from storage.queries import Q
from storage.reports import ReportStore, sealed_context, split_sensitive
from sync.apply import decide_create
from sync.changes import RecordKind, ReportStatusChange
from sync.clock import ClockEstimate
from sync.messages import CreateReport, MutationResult
from sync.push import ApplyStep

__all__ = ["MATCH_CHUNK", "create_reports"]

_ENCODER = msgspec.json.Encoder()
# Columns as COPY receives them; the rest take their defaults (change_no, xid, status, ...).
_REPORT_COLUMNS = (
    "id", "org_id", "monitor_id", "device_id", "content", "sealed", "occurred_at", "latitude",
    "longitude", "categories", "recorded_at", "received_at", "clock_offset_seconds", "time_flags",
    "version", "status_version",
)  # fmt: skip
_CHANGE_COLUMNS = ("org_id", "audience", "record_kind", "record_id", "version", "body")
_JOB_COLUMNS = ("org_id", "kind", "payload", "dedupe_key", "max_attempts")
_MATCH_MANY = "reports.match_many"
# Reports per matching job: small enough that a job's transaction stays short (about a second).
MATCH_CHUNK = 50


async def create_reports(
    conn: Conn,
    keyring: Keyring,
    device: DeviceAuth,
    steps: Sequence[ApplyStep],
    *,
    known_categories: Set[str],
    clock: ClockEstimate | None,
    retired_categories: Set[str] = frozenset(),
) -> dict[uuid.UUID, MutationResult] | None:
    """Results for ``steps`` (all CreateReport, distinct report ids), or None if refused."""
    try:
        async with conn.transaction():
            return await _create(
                conn, keyring, device, steps, known_categories, retired_categories, clock
            )
    except (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError):
        return None


async def _create(
    conn: Conn,
    keyring: Keyring,
    device: DeviceAuth,
    steps: Sequence[ApplyStep],
    known_categories: Set[str],
    retired_categories: Set[str],
    clock: ClockEstimate | None,
) -> dict[uuid.UUID, MutationResult]:
    mutations = [s.mutation for s in steps]
    assert all(isinstance(m, CreateReport) for m in mutations)
    creates: list[CreateReport] = [m for m in mutations if isinstance(m, CreateReport)]
    locked = {r["id"] for r in await conn.fetch(Q.lock_reports, [m.report.id for m in creates])}
    store = ReportStore(conn, keyring)
    results: dict[uuid.UUID, MutationResult] = {}
    sealer = None
    report_rows, attachment_rows, change_rows = [], [], []
    declared: set[str] = set()
    for step, mutation in zip(steps, creates, strict=True):
        existing = None
        if mutation.report.id in locked:
            existing = await store.lock(device.org_id, mutation.report.id)
        outcome = decide_create(
            mutation,
            monitor_id=device.monitor_id,
            existing=existing,
            known_categories=known_categories,
            retired_categories=retired_categories,
            received_at=step.received_at,
        )
        results[step.mutation_id] = outcome.result
        report = outcome.write
        if report is None:
            continue
        clear, parts = split_sensitive(report)
        sealed = None
        if parts is not None:
            sealer = sealer or await keyring.struct_sealer(conn, device.org_id)
            sealed = sealer(parts, sealed_context(report.id))
        content = _ENCODER.encode(clear).decode()
        flags = created_time_flags(step, device, clock, report)
        report_rows.append(
            (
                report.id, device.org_id, device.monitor_id, device.id, content, sealed,
                report.occurred_at, report.location.lat, report.location.lon,
                list(report.categories), mutation.recorded_at, step.received_at,
                clock.offset.total_seconds() if clock else None, sorted(f.value for f in flags),
                1, 1,  # version, status_version
            )
        )  # fmt: skip
        if report.attachments:
            atts = report.attachments
            attachment_rows.append(
                (
                    report.id, device.org_id, [a.sha256 for a in atts],
                    [a.size_bytes for a in atts], [a.media_type for a in atts],
                    [a.sensitive for a in atts],
                )
            )  # fmt: skip
            declared.update(a.sha256 for a in atts)
    if not report_rows:
        return results
    arrived = (
        {r["sha256"] for r in await conn.fetch(Q.arrived_blobs, device.org_id, list(declared))}
        if declared
        else set()
    )
    now = dt.datetime.now(dt.UTC)
    audience = monitor_audience(device.monitor_id)
    by_id = {m.report.id: m.report for m in creates}
    new_ids: list[str] = []
    for row in report_rows:
        report = by_id[row[0]]
        report_id = str(report.id)
        new_ids.append(report_id)
        missing = tuple(
            dict.fromkeys(a.sha256 for a in report.attachments if a.sha256 not in arrived)
        )
        change = ReportStatusChange(
            version=1,
            report_version=1,
            changed_at=now,
            report_id=report.id,
            status="received",
            missing_attachments=missing,
        )
        change_rows.append(
            (device.org_id, audience, RecordKind.REPORT.value, report_id, 1,
             _ENCODER.encode(change).decode())
        )  # fmt: skip
    # Binary COPY into the real tables: every id is new (the ones already stored were locked and
    # decided above), so there is nothing to upsert, and COPY costs the database about half of the
    # same rows as INSERT statements. A row the constraints still refuse (the same id created by
    # another device's push a moment ago: the insert waits for it) aborts the savepoint, and the
    # caller goes one by one.
    await conn.copy_records_to_table("reports", records=report_rows, columns=_REPORT_COLUMNS)
    if attachment_rows:
        await conn.executemany(Q.replace_report_attachments, attachment_rows)
    await conn.copy_records_to_table("sync_changes", records=change_rows, columns=_CHANGE_COLUMNS)
    # Matching learns of the new reports in the same transaction: one job per chunk of them
    # (server/matching_jobs.py), not one per report.
    job_rows = [
        (device.org_id, _MATCH_MANY, _ENCODER.encode({"report_ids": chunk}).decode(), None, 8)
        for chunk in (new_ids[i : i + MATCH_CHUNK] for i in range(0, len(new_ids), MATCH_CHUNK))
    ]
    await conn.copy_records_to_table("jobs", records=job_rows, columns=_JOB_COLUMNS)
    return results
