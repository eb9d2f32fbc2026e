"""A run of amendments and withdrawals of one push, applied together.

About a fifth of a fleet's mutations are edits. One by one, an amendment costs ten round trips or
more; here a run's reports are read at once, each step is decided in memory against the state the
steps before it left, and the writes go out set-based, in one savepoint. If the database refuses
anything, the caller falls back to the one-by-one path, which rejects the offending mutation alone.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Callable, Sequence, Set

import asyncpg
import msgspec

from cases.reports import DeclaredAttachment, Report
from storage.db import Conn
from storage.devices import DeviceAuth
from storage.feed import ReportPublish, publish_report_states
from storage.keyring import Keyring
from storage.queries import Q
from storage.reports import (
    OCCURRED_FLAG_NAMES,
    ReportStore,
    conflict_values,
    is_sensitive_path,
    queue_report_changed,
    sealed_context,
    split_sensitive,
)
from sync.apply import StoredReport, decide_amend
from sync.clock import ClockEstimate, TimeFlag, occurred_time_flags, report_time_flags
from sync.merge import FieldConflict
from sync.messages import (
    AmendReport,
    CreateReport,
    DeleteReport,
    MutationResult,
    MutationStatus,
    ReasonCode,
)
from sync.push import ApplyStep

__all__ = ["amended_time_flags", "edit_reports", "refuse_withdrawal", "rejected"]

_ENCODER = msgspec.json.Encoder()


def refuse_withdrawal(
    step: ApplyStep, mutation: DeleteReport, monitor_id: uuid.UUID, current: StoredReport | None
) -> MutationResult | None:
    """Why a withdrawal is refused (the result to store), or None when it applies."""
    rid = mutation.report_id
    detail = None
    if current is None:
        reason = ReasonCode.NOT_FOUND
    elif current.monitor_id != monitor_id:
        reason = ReasonCode.NOT_OWNER
    elif current.deleted:
        reason = ReasonCode.DELETED
    elif mutation.base_version != current.version:
        reason = ReasonCode.STALE_BASE_VERSION
        detail = f"the report is at version {current.version}; pull before withdrawing it"
    else:
        return None
    return rejected(step, reason, detail, rid)


def created_time_flags(
    step: ApplyStep, device: DeviceAuth, clock: ClockEstimate | None, report: Report
) -> frozenset[TimeFlag]:
    """The time flags of a new report from ``device`` (`report_time_flags`), judged against its
    recording and arrival: the same in the batched and the one-by-one path."""
    assert isinstance(step.mutation, CreateReport)
    return report_time_flags(
        occurred_at=report.occurred_at,
        precision=report.occurred_precision,
        recorded_at=step.mutation.recorded_at,
        received_at=step.received_at,
        enrolled_at=device.enrolled_at,
        clock=clock,
    )


def amended_time_flags(
    step: ApplyStep,
    device: DeviceAuth,
    clock: ClockEstimate | None,
    before: Report,
    after: Report,
) -> list[str] | None:
    """The incident-time flags of an amendment from ``device`` (`occurred_time_flags`), judged
    against its own recording and arrival; None if it keeps the incident time."""
    assert isinstance(step.mutation, AmendReport)
    return occurred_time_flags(
        before,
        after,
        recorded_at=step.mutation.recorded_at,
        received_at=step.received_at,
        enrolled_at=device.enrolled_at,
        clock=clock,
    )


def rejected(
    step: ApplyStep, reason: ReasonCode, detail: str | None = None, record: uuid.UUID | None = None
) -> MutationResult:
    """The stored result of a step refused for ``reason``."""
    return MutationResult(
        mutation_id=step.mutation_id,
        seq=step.seq,
        status=MutationStatus.REJECTED,
        reason=reason,
        detail=detail,
        record_id=record,
        received_at=step.received_at,
    )


async def edit_reports(
    conn: Conn,
    keyring: Keyring,
    device: DeviceAuth,
    steps: Sequence[ApplyStep],
    *,
    known_categories: Set[str],
    retired_categories: Set[str] = frozenset(),
    clock: ClockEstimate | None = None,
) -> dict[uuid.UUID, MutationResult] | None:
    """Results for ``steps`` (AmendReport and DeleteReport, in plan order), or None if refused.

    The same results and rows as applying them one by one: the reports are read at once (locked
    in id order; ``execute_push`` already holds them), each step is decided against the state the
    steps before it left (in memory), and the writes go out set-based, with one feed row per
    touched report (its last state).
    """
    try:
        async with conn.transaction():
            return await _edit(
                conn, keyring, device, steps, known_categories, retired_categories, clock
            )
    except (asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError):
        return None


class _Edits:
    """What a run of edits will write, gathered while deciding it."""

    def __init__(self) -> None:
        self.archived: dict[tuple[uuid.UUID, int], Report] = {}  # versions replaced in this run
        self.first_written: list[uuid.UUID] = []  # archived from their stored row
        self.replaced: list[tuple[uuid.UUID, int, Report]] = []  # archived from memory
        self.last: dict[uuid.UUID, tuple[int, Report]] = {}  # each report's last written version
        self.attachments: list[tuple[uuid.UUID, tuple[DeclaredAttachment, ...]]] = []
        self.conflicts: list[tuple[uuid.UUID, uuid.UUID, tuple[FieldConflict, ...]]] = []
        self.withdrawn: list[uuid.UUID] = []
        self.bumps: dict[uuid.UUID, int] = {}
        # Incident-time flags judged by the last edit of each report that changed its time.
        self.occurred_flags: dict[uuid.UUID, list[str]] = {}

    def write(self, current: StoredReport, report: Report, version: int) -> None:
        rid = report.id
        key = (rid, current.version)
        if rid not in self.last:
            self.first_written.append(rid)
        else:
            self.replaced.append((rid, current.version, current.report))
        self.archived.setdefault(key, current.report)
        self.last[rid] = (version, report)
        self.attachments.append((rid, report.attachments))


async def _edit(
    conn: Conn,
    keyring: Keyring,
    device: DeviceAuth,
    steps: Sequence[ApplyStep],
    known_categories: Set[str],
    retired_categories: Set[str],
    clock: ClockEstimate | None,
) -> dict[uuid.UUID, MutationResult]:
    mutations = [s.mutation for s in steps]
    edits = [m for m in mutations if isinstance(m, AmendReport | DeleteReport)]
    assert len(edits) == len(steps)
    store = ReportStore(conn, keyring)
    org_id = device.org_id
    current: dict[uuid.UUID, StoredReport] = {}
    for row in await conn.fetch(Q.lock_reports_for_edit, sorted({m.report_id for m in edits})):
        current[row["id"]] = await store.stored(org_id, row)
    # The stored versions the amendments may be based on. The one-by-one path reads a base from
    # report_versions unless it is the current version; a report edited more than once here
    # moves its current version, so all of its bases are read.
    touches = collections.Counter(m.report_id for m in edits)
    wanted = {
        (m.report_id, m.base_version)
        for m in edits
        if isinstance(m, AmendReport)
        and (c := current.get(m.report_id)) is not None
        and c.monitor_id == device.monitor_id
        and (m.base_version != c.version or touches[m.report_id] > 1)
    }
    stored_versions = (
        {
            (r["report_id"], r["version"]): r
            for r in await conn.fetch(
                Q.report_versions_wanted, [w[0] for w in wanted], [w[1] for w in wanted]
            )
        }
        if wanted
        else {}
    )
    out = _Edits()
    results: dict[uuid.UUID, MutationResult] = {}
    for step, mutation in zip(steps, edits, strict=True):
        rid = mutation.report_id
        cur = current.get(rid)
        if isinstance(mutation, DeleteReport):
            refused = refuse_withdrawal(step, mutation, device.monitor_id, cur)
            if refused is not None:
                results[step.mutation_id] = refused
                continue
            assert cur is not None
            current[rid] = msgspec.structs.replace(cur, version=cur.version + 1, deleted=True)
            out.withdrawn.append(rid)
            out.bumps[rid] = out.bumps.get(rid, 0) + 1
            results[step.mutation_id] = MutationResult(
                mutation_id=step.mutation_id,
                seq=step.seq,
                status=MutationStatus.APPLIED,
                record_id=rid,
                version=cur.version + 1,
                received_at=step.received_at,
            )
            continue
        base = None
        if cur is not None and cur.monitor_id == device.monitor_id:
            if mutation.base_version == cur.version:
                base = cur.report
            else:
                # As report_versions would answer at this point: rows stored before this run
                # win over versions this run archived (ON CONFLICT DO NOTHING).
                kept = stored_versions.get((rid, mutation.base_version))
                if kept is not None:
                    base = await store.stored_version(org_id, rid, kept)
                else:
                    base = out.archived.get((rid, mutation.base_version))
        outcome = decide_amend(
            mutation,
            monitor_id=device.monitor_id,
            current=cur,
            base=base,
            known_categories=known_categories,
            retired_categories=retired_categories,
            received_at=step.received_at,
        )
        results[step.mutation_id] = outcome.result
        version = outcome.result.version
        if outcome.write is not None and version is not None:
            assert cur is not None
            occurred_flags = amended_time_flags(step, device, clock, cur.report, outcome.write)
            if occurred_flags is not None:
                out.occurred_flags[rid] = occurred_flags
            out.write(cur, outcome.write, version)
            current[rid] = msgspec.structs.replace(cur, report=outcome.write, version=version)
        if outcome.conflicts:
            out.conflicts.append((rid, step.mutation_id, outcome.conflicts))
        if (outcome.write is not None or outcome.conflicts) and version is not None:
            out.bumps[rid] = out.bumps.get(rid, 0) + 1
    await _write_edits(conn, keyring, device, out, current)
    return results


async def _write_edits(
    conn: Conn,
    keyring: Keyring,
    device: DeviceAuth,
    out: _Edits,
    current: dict[uuid.UUID, StoredReport],
) -> None:
    org_id = device.org_id
    sealer: Callable[[object, bytes], bytes] | None = None

    async def seal(report: Report) -> tuple[str, bytes | None]:
        nonlocal sealer
        clear, parts = split_sensitive(report)
        sealed = None
        if parts is not None:
            sealer = sealer or await keyring.struct_sealer(conn, org_id)
            sealed = sealer(parts, sealed_context(report.id))
        return _ENCODER.encode(clear).decode(), sealed

    if out.first_written:
        # Each replaced version is kept, as archive_report_version does before every update.
        await conn.execute(Q.archive_report_versions, out.first_written)
        replaced = []
        for rid, version, report in out.replaced:
            replaced.append((rid, version, *await seal(report)))
        if replaced:
            await conn.executemany(Q.insert_report_version, replaced)
        updates = []
        for rid, (version, report) in out.last.items():
            content, sealed = await seal(report)
            updates.append(
                (
                    rid, version, content, sealed, report.occurred_at, report.location.lat,
                    report.location.lon, list(report.categories), OCCURRED_FLAG_NAMES,
                    out.occurred_flags.get(rid),
                )
            )  # fmt: skip
        await conn.executemany(Q.update_report, updates)
        # Every version's attachments in turn, as one by one (a row dropped by one version and
        # declared again by the next is a new row).
        await conn.executemany(
            Q.replace_report_attachments,
            [
                (
                    rid, org_id, [a.sha256 for a in atts], [a.size_bytes for a in atts],
                    [a.media_type for a in atts], [a.sensitive for a in atts],
                )
                for rid, atts in out.attachments
            ],
        )  # fmt: skip
    if out.conflicts:
        if any(is_sensitive_path(c.path) for _, _, cs in out.conflicts for c in cs):
            sealer = sealer or await keyring.struct_sealer(conn, org_id)
        await conn.executemany(
            Q.insert_conflict,
            [
                (org_id, rid, c.path, *conflict_values(rid, c, sealer), mutation_id, device.id)
                for rid, mutation_id, cs in out.conflicts
                for c in cs
            ],
        )
    if out.withdrawn:
        await conn.executemany(Q.delete_report, [(rid,) for rid in out.withdrawn])
    await queue_report_changed(conn, org_id, sorted({*out.last, *out.withdrawn}))
    await publish_report_states(
        conn,
        org_id,
        device.monitor_id,
        [
            ReportPublish(
                report_id=rid,
                bumps=n,
                attachments=None if current[rid].deleted else current[rid].report.attachments,
            )
            for rid, n in out.bumps.items()
        ],
    )
