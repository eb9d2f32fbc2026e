"""The fast path of a push: new reports of one batch created together.

Most of a phone's outbox is new reports. Applying them one by one costs a dozen round trips each;
here the batch is locked, decided, sealed and written with pipelined statements, in one
savepoint. If the database refuses anything, the caller falls back to the one-by-one path, which
rejects the offending mutation alone.
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
from storage.queries import Q
from storage.reports import ReportStore, sealed_context, split_sensitive
from sync.apply import decide_create
from sync.changes import RecordKind, ReportStatusChange
from sync.clock import ClockEstimate, report_time_flags
from sync.messages import CreateReport, MutationResult
from sync.push import ApplyStep

__all__ = ["create_reports"]

_ENCODER = msgspec.json.Encoder()


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
    report_rows, version_rows, attachment_rows, change_rows, job_rows = [], [], [], [], []
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
        flags = report_time_flags(
            occurred_at=report.occurred_at,
            precision=report.occurred_precision,
            recorded_at=mutation.recorded_at,
            received_at=step.received_at,
            enrolled_at=device.enrolled_at,
            clock=clock,
        )
        report_rows.append(
            (
                report.id, device.org_id, device.monitor_id, device.id, content, sealed,
                report.occurred_at, report.location.lat, report.location.lon,
                list(report.categories), mutation.recorded_at, step.received_at,
                clock.offset.total_seconds() if clock else None, sorted(f.value for f in flags),
            )
        )  # fmt: skip
        version_rows.append((report.id, 1, content, sealed, step.mutation_id))
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
        job_rows.append(
            (device.org_id, "reports.match", f'{{"report_id": "{report.id}"}}', str(report.id),
             None, 8)
        )  # fmt: skip
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
    for row in report_rows:
        report = by_id[row[0]]
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
            (device.org_id, audience, RecordKind.REPORT.value, str(report.id), 1,
             _ENCODER.encode(change).decode())
        )  # fmt: skip
    await conn.executemany(Q.insert_new_report, report_rows)
    await conn.executemany(Q.insert_report_version, version_rows)
    if attachment_rows:
        await conn.executemany(Q.replace_report_attachments, attachment_rows)
    await conn.executemany(Q.upsert_change, change_rows)
    await conn.executemany(Q.enqueue_job, job_rows)
    return results
