"""Executing a push: the exactly-once plan from ``sync.push`` carried out in one transaction.

The device row is locked first, so two pushes from one device never interleave; each mutation's
final result is stored once (primary key on the mutation id) and replayed verbatim on resend.
Everything a push accepts is committed before the response is built. New reports and edits go in
batched runs (storage/push_bulk.py, storage/push_edits.py); task answers, and a run the database
refuses, go one mutation at a time (storage/push_single.py).

Locks, in this order and all before the first mutation is applied: the device row, the buckets
of declared attachment hashes (shared), then the rows of the reports the batch touches that exist
(docs/decisions/0112-push-lock-order.md). Two pushes touching the same reports therefore wait for
each other once, up front, and never hold one report while waiting for another.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Set

import msgspec

from storage.db import Conn
from storage.devices import DeviceAuth
from storage.keyring import Keyring
from storage.push_bulk import create_reports
from storage.push_edits import edit_reports
from storage.push_single import ApplyContext, apply_in_savepoint, apply_one_by_one
from storage.queries import Q
from storage.reports import ReportStore
from sync.clock import estimate_clock_offset, offset_sample
from sync.codec import DecodedPush, InvalidMutation, WireFormat, decode_one_mutation
from sync.messages import (
    AmendReport,
    AnswerTask,
    CreateReport,
    DeleteReport,
    MutationResult,
    PushResponse,
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
        ctx = ApplyContext(
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
            # Refused as a batch (None): one by one, so only the culprit fails.
            settled = bulk if bulk is not None else await apply_one_by_one(conn, reports, run, ctx)
            for step in run:
                results[step.mutation_id] = settled[step.mutation_id]

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
                        clock=clock,
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
                results[step.mutation_id] = await apply_in_savepoint(conn, reports, step, ctx)
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
