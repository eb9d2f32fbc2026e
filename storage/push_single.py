"""The one-by-one path of a push: each mutation applied on its own, in its own savepoint.

It is the fallback when the database refuses a batched run (storage/push_bulk.py,
storage/push_edits.py), so that only the offending mutation is rejected; the path task answers
always take; and the reference the batched paths must match (``storage.push.BATCH_EDITS``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Set

import asyncpg
import msgspec

from storage.db import Conn
from storage.devices import DeviceAuth
from storage.feed import publish_report_state, publish_report_tombstone
from storage.jobs import JobQueue
from storage.push_edits import (
    amended_time_flags,
    created_time_flags,
    refuse_withdrawal,
    rejected,
)
from storage.reports import ReportStore
from storage.tasks import answer_task
from sync.apply import decide_amend, decide_create
from sync.clock import ClockEstimate
from sync.messages import (
    AmendReport,
    AnswerTask,
    CreateReport,
    DeleteReport,
    MutationResult,
    MutationStatus,
    ReasonCode,
)
from sync.push import ApplyStep

__all__ = ["ApplyContext", "apply_in_savepoint", "apply_one_by_one"]


class ApplyContext(msgspec.Struct, frozen=True, kw_only=True):
    """What applying a mutation needs besides its step, the same for the whole push."""

    device: DeviceAuth
    known_categories: Set[str]
    retired_categories: Set[str]
    clock: ClockEstimate | None


async def apply_one_by_one(
    conn: Conn, reports: ReportStore, steps: Iterable[ApplyStep], ctx: ApplyContext
) -> dict[uuid.UUID, MutationResult]:
    """Results for a run the database refused as a batch, each step in its own savepoint (plan
    order), so only the culprit fails."""
    return {step.mutation_id: await apply_in_savepoint(conn, reports, step, ctx) for step in steps}


async def apply_in_savepoint(
    conn: Conn, reports: ReportStore, step: ApplyStep, ctx: ApplyContext
) -> MutationResult:
    """One mutation in its own savepoint: if the database refuses it (a constraint the decoder
    could not know), it alone is rejected and the rest of the batch goes on."""
    try:
        async with conn.transaction():
            return await _apply_step(conn, reports, step, ctx)
    except (
        asyncpg.exceptions.DataError,
        asyncpg.exceptions.IntegrityConstraintViolationError,
    ) as exc:
        # The message alone: PostgreSQL's DETAIL quotes the failing row, which has no place in
        # a stored result or in an answer to a device.
        return rejected(step, ReasonCode.INVALID, f"refused by the database: {exc.message}")


async def _queue_matching(conn: Conn, device: DeviceAuth, report_id: uuid.UUID) -> None:
    # Same transaction as the report: a committed report always has its matching job.
    await JobQueue(conn).enqueue(
        "reports.match",
        {"report_id": str(report_id)},
        org_id=device.org_id,
        dedupe_key=str(report_id),
    )


async def _apply_step(
    conn: Conn, reports: ReportStore, step: ApplyStep, ctx: ApplyContext
) -> MutationResult:
    mutation = step.mutation
    device = ctx.device
    if isinstance(mutation, CreateReport):
        existing = await reports.lock(device.org_id, mutation.report.id)
        outcome = decide_create(
            mutation,
            monitor_id=device.monitor_id,
            existing=existing,
            known_categories=ctx.known_categories,
            retired_categories=ctx.retired_categories,
            received_at=step.received_at,
        )
        if outcome.write is not None:
            report = outcome.write
            flags = created_time_flags(step, device, ctx.clock, report)
            await reports.create(
                org_id=device.org_id,
                monitor_id=device.monitor_id,
                device_id=device.id,
                report=report,
                recorded_at=mutation.recorded_at,
                received_at=step.received_at,
                clock_offset_seconds=ctx.clock.offset.total_seconds() if ctx.clock else None,
                time_flags=sorted(f.value for f in flags),
            )
            await publish_report_state(
                conn, device.org_id, device.monitor_id, report.id, report.attachments
            )
            await _queue_matching(conn, device, report.id)
        return outcome.result
    if isinstance(mutation, AmendReport):
        current = await reports.lock(device.org_id, mutation.report_id)
        base = None
        if current is not None and current.monitor_id == device.monitor_id:
            if mutation.base_version == current.version:
                base = current.report  # the current version lives in the report row only
            else:
                base = await reports.version(
                    device.org_id, mutation.report_id, mutation.base_version
                )
        outcome = decide_amend(
            mutation,
            monitor_id=device.monitor_id,
            current=current,
            base=base,
            known_categories=ctx.known_categories,
            retired_categories=ctx.retired_categories,
            received_at=step.received_at,
        )
        version = outcome.result.version
        if outcome.write is not None and version is not None:
            assert current is not None
            occurred_flags = amended_time_flags(
                step, device, ctx.clock, current.report, outcome.write
            )
            await reports.update(device.org_id, outcome.write, version, occurred_flags)
        if outcome.conflicts:
            await reports.add_conflicts(
                device.org_id, mutation.report_id, outcome.conflicts, step.mutation_id, device.id
            )
        if (outcome.write is not None or outcome.conflicts) and version is not None:
            written = outcome.write or (current.report if current is not None else None)
            attachments = written.attachments if written is not None else ()
            await publish_report_state(
                conn, device.org_id, device.monitor_id, mutation.report_id, attachments
            )
        return outcome.result
    if isinstance(mutation, DeleteReport):
        current = await reports.lock(device.org_id, mutation.report_id)
        refused = refuse_withdrawal(step, mutation, device.monitor_id, current)
        if refused is not None:
            return refused
        version = await reports.withdraw(device.org_id, mutation.report_id)
        await publish_report_tombstone(
            conn,
            org_id=device.org_id,
            monitor_id=device.monitor_id,
            report_id=mutation.report_id,
        )
        return MutationResult(
            mutation_id=step.mutation_id,
            seq=step.seq,
            status=MutationStatus.APPLIED,
            record_id=mutation.report_id,
            version=version,
            received_at=step.received_at,
        )
    if isinstance(mutation, AnswerTask):
        return await answer_task(conn, device, mutation, step.received_at)
    raise AssertionError("plan_push presets a result for every invalid mutation")
