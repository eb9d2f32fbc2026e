"""Executing a push: the exactly-once plan from ``sync.push`` carried out in one transaction.

The device row is locked first, so two pushes from one device never interleave; each mutation's
final result is stored once (primary key on the mutation id) and replayed verbatim on resend.
Everything a push accepts is committed before the response is built.

Locks, in this order and all before the first mutation is applied: the device row, the buckets
of declared attachment hashes (shared), then the rows of the reports the batch touches that exist
(docs/decisions/0112-push-lock-order.md). Two pushes touching the same reports therefore wait for
each other once, up front, and never hold one report while waiting for another.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Set

import asyncpg
import msgspec

from storage.db import Conn
from storage.devices import DeviceAuth
from storage.feed import publish_report_state, publish_report_tombstone
from storage.jobs import JobQueue
from storage.keyring import Keyring
from storage.push_bulk import create_reports
from storage.push_edits import edit_reports, refuse_withdrawal, rejected
from storage.queries import Q
from storage.reports import ReportStore
from storage.tasks import answer_task
from sync.apply import decide_amend, decide_create
from sync.clock import ClockEstimate, estimate_clock_offset, offset_sample, report_time_flags
from sync.codec import DecodedPush, InvalidMutation, WireFormat, decode_one_mutation
from sync.messages import (
    AmendReport,
    AnswerTask,
    CreateReport,
    DeleteReport,
    MutationResult,
    MutationStatus,
    PushResponse,
    ReasonCode,
)
from sync.push import (
    ApplyStep,
    DeviceLedger,
    HeldMutation,
    StoredMutation,
    plan_push,
    push_response,
)

__all__ = ["BATCH_EDITS", "CLOCK_SAMPLES_KEPT", "execute_push"]

CLOCK_SAMPLES_KEPT = 20
# Amendments and withdrawals go through storage.push_edits.edit_reports; False applies them one by
# one (the reference the batched path must match, and what tests compare it with).
BATCH_EDITS = True
_RESULT = msgspec.json.Decoder(MutationResult)
_ENCODER = msgspec.json.Encoder()
_STORED_COLUMNS = (
    "mutation_id", "org_id", "device_id", "seq", "body_hash", "result", "received_at",
)  # fmt: skip


class _Context(msgspec.Struct, frozen=True, kw_only=True):
    device: DeviceAuth
    known_categories: Set[str]
    retired_categories: Set[str]
    clock: ClockEstimate | None


async def execute_push(
    conn: Conn,
    device: DeviceAuth,
    push: DecodedPush,
    fmt: WireFormat,
    *,
    keyring: Keyring,
    known_categories: Set[str],
    received_at: dt.datetime,
    retired_categories: Set[str] = frozenset(),
) -> PushResponse:
    request = push.request
    ids = [_mutation_id(m) for m in push.mutations]
    async with conn.transaction():
        ledger_row = await conn.fetchrow(Q.lock_device_ledger, device.id)
        assert ledger_row is not None
        ledger = DeviceLedger(device_id=device.id, next_seq=ledger_row["next_seq"])
        stored = {
            r["mutation_id"]: StoredMutation(
                mutation_id=r["mutation_id"],
                device_id=r["device_id"],
                seq=r["seq"],
                body_hash=r["body_hash"],
                result=_RESULT.decode(r["result"]),
            )
            for r in await conn.fetch(Q.stored_mutations, ids)
        }
        held = [
            HeldMutation(
                mutation_id=r["mutation_id"],
                seq=r["seq"],
                body_hash=r["body_hash"],
                mutation=decode_one_mutation(
                    await keyring.decrypt(
                        conn, device.org_id, r["body"], _held_context(device.id, r["mutation_id"])
                    ),
                    WireFormat(r["body_format"]),
                ),
                received_at=r["received_at"],
            )
            for r in await conn.fetch(Q.held_mutations, device.id)
        ]
        declared = _declared_hashes([*push.mutations, *(h.mutation for h in held)])
        if declared:
            # While this push decides whether its attachments have arrived, retention cannot
            # erase their bytes as needed by no live report (this one is not committed yet), and
            # an upload cannot finish them unseen. Shared: other pushes do not wait.
            await conn.execute(Q.share_blob_buckets, declared)
        samples = [*ledger_row["clock_samples"], offset_sample(request.sent_at, received_at)]
        samples = samples[-CLOCK_SAMPLES_KEPT:]
        seconds = [s.total_seconds() if isinstance(s, dt.timedelta) else s for s in samples]
        clock = estimate_clock_offset([dt.timedelta(seconds=s) for s in seconds])
        ctx = _Context(
            device=device,
            known_categories=known_categories,
            retired_categories=retired_categories,
            clock=clock,
        )

        plan = plan_push(ledger, push.mutations, stored=stored, held=held, received_at=received_at)
        await _lock_reports(conn, plan.steps)
        results: dict[uuid.UUID, MutationResult] = {}
        reports = ReportStore(conn, keyring)
        # New reports and edits (amendments, withdrawals) are gathered into runs applied as
        # batches. Runs may interleave with each other, but never on the same report: a step on a
        # report the other run holds flushes that run first, so each report sees its steps in
        # plan order (different reports do not see each other). The runs lock their reports
        # again; the transaction holds every one that existed up front, so those never wait.
        creates: list[ApplyStep] = []
        pending_ids: set[uuid.UUID] = set()
        edits: list[ApplyStep] = []
        edited_ids: set[uuid.UUID] = set()

        async def settle(
            run: list[ApplyStep], bulk: dict[uuid.UUID, MutationResult] | None
        ) -> None:
            for step in run:
                if bulk is None:  # refused as a batch: one by one, so only the culprit fails
                    results[step.mutation_id] = await _apply_in_savepoint(conn, reports, step, ctx)
                else:
                    results[step.mutation_id] = bulk[step.mutation_id]

        async def flush_creates() -> None:
            if creates:
                bulk = await create_reports(
                    conn,
                    keyring,
                    device,
                    creates,
                    known_categories=known_categories,
                    retired_categories=retired_categories,
                    clock=clock,
                )
                await settle(creates, bulk)
            creates.clear()
            pending_ids.clear()

        async def flush_edits() -> None:
            if edits:
                bulk = None
                if BATCH_EDITS:
                    bulk = await edit_reports(
                        conn,
                        keyring,
                        device,
                        edits,
                        known_categories=known_categories,
                        retired_categories=retired_categories,
                    )
                await settle(edits, bulk)
            edits.clear()
            edited_ids.clear()

        for step in plan.steps:
            mutation = step.mutation
            if step.preset_result is not None:
                results[step.mutation_id] = step.preset_result
            elif isinstance(mutation, CreateReport):
                report_id = mutation.report.id
                if report_id in edited_ids:
                    await flush_edits()  # edits sent before the create answer as they did
                if report_id in pending_ids:
                    await flush_creates()  # the second one must see the first as existing
                creates.append(step)
                pending_ids.add(report_id)
            elif isinstance(mutation, AmendReport | DeleteReport):
                if mutation.report_id in pending_ids:
                    await flush_creates()  # the edit must see the report it edits
                edits.append(step)
                edited_ids.add(mutation.report_id)
            else:
                # Task answers touch no report: neither run needs to be flushed before them.
                results[step.mutation_id] = await _apply_in_savepoint(conn, reports, step, ctx)
        await flush_creates()
        await flush_edits()
        if plan.steps:
            # Binary COPY: these ids had no stored result (looked up above, under the device lock).
            await conn.copy_records_to_table(
                "sync_mutations",
                records=[
                    (
                        step.mutation_id,
                        device.org_id,
                        device.id,
                        step.seq,
                        step.body_hash,
                        _ENCODER.encode(results[step.mutation_id]).decode(),
                        results[step.mutation_id].received_at,
                    )
                    for step in plan.steps
                ],
                columns=_STORED_COLUMNS,
            )
        await conn.executemany(
            Q.delete_held_mutation,
            [(device.id, step.mutation_id) for step in plan.steps if step.from_hold],
        )
        raw_by_id = (
            {_mutation_id(m): raw for m, raw in zip(push.mutations, request.mutations, strict=True)}
            if plan.new_holds
            else {}
        )
        for hold in plan.new_holds:
            await conn.execute(
                Q.insert_held_mutation,
                device.id,
                hold.mutation_id,
                hold.seq,
                hold.body_hash,
                # Sealed: a waiting mutation may carry a worker's identity.
                await keyring.encrypt(
                    conn,
                    device.org_id,
                    bytes(raw_by_id[hold.mutation_id]),
                    _held_context(device.id, hold.mutation_id),
                ),
                fmt.value,
                hold.received_at,
            )
        offset = clock.offset.total_seconds() if clock else None
        await conn.execute(
            Q.update_device_after_push,
            device.id,
            plan.next_seq,
            seconds,
            offset,
            request.outbox_depth,
        )
    return push_response(plan, results, stored=stored, clock_offset_seconds=offset)


async def _lock_reports(conn: Conn, steps: Iterable[ApplyStep]) -> None:
    """Lock the existing reports the steps create, amend or withdraw, in id order, before any of
    them is applied.

    Row locks only: they live in the rows, not in PostgreSQL's bounded shared lock table. A
    report id another push is creating has no row to lock yet; only another device sending the
    same new report can be doing that (ids are chosen on the phone, and one device's pushes are
    serialised by its ledger row), and if the two meet in a cycle, one push is aborted as a
    deadlock (a 503 ``contention``, nothing saved) and its resend is answered exactly once.
    """
    ids = sorted(
        {
            m.report.id if isinstance(m, CreateReport) else m.report_id
            for step in steps
            if step.preset_result is None
            and isinstance(m := step.mutation, CreateReport | AmendReport | DeleteReport)
        }
    )
    if ids:
        await conn.execute(Q.lock_reports, ids)


async def _apply_in_savepoint(
    conn: Conn, reports: ReportStore, step: ApplyStep, ctx: _Context
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


def _declared_hashes(mutations: Iterable[object]) -> list[str]:
    hashes: set[str] = set()
    for m in mutations:
        if isinstance(m, CreateReport):
            hashes.update(a.sha256 for a in m.report.attachments)
        elif isinstance(m, AmendReport) and m.changes.attachments is not msgspec.UNSET:
            hashes.update(a.sha256 for a in m.changes.attachments)
    return sorted(hashes)


def _held_context(device_id: uuid.UUID, mutation_id: uuid.UUID) -> bytes:
    return f"sync_held:{device_id}:{mutation_id}".encode()


def _mutation_id(mutation: object) -> uuid.UUID:
    if isinstance(mutation, InvalidMutation):
        return mutation.envelope.mutation_id
    assert isinstance(mutation, CreateReport | AmendReport | AnswerTask | DeleteReport)
    return mutation.mutation_id


async def _apply_step(
    conn: Conn, reports: ReportStore, step: ApplyStep, ctx: _Context
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
            flags = report_time_flags(
                occurred_at=report.occurred_at,
                precision=report.occurred_precision,
                recorded_at=mutation.recorded_at,
                received_at=step.received_at,
                enrolled_at=device.enrolled_at,
                clock=ctx.clock,
            )
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
            await reports.update(device.org_id, outcome.write, version)
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
        version = await reports.withdraw(mutation.report_id)
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
