"""What applying one report mutation means, given what is stored: the result to answer and what to
write. Pure; the storage layer loads the report (and the amendment's base version) and writes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Set
from uuid import UUID

import msgspec

from cases.reports import Report
from sync.merge import FieldConflict, merge_report
from sync.messages import (
    AmendReport,
    CreateReport,
    MutationResult,
    MutationStatus,
    ReasonCode,
)

__all__ = ["ReportOutcome", "StoredReport", "decide_amend", "decide_create"]


class StoredReport(msgspec.Struct, frozen=True, kw_only=True):
    """A report as stored: current content, version, owner, whether it was withdrawn and whether
    retention redacted it (its sensitive parts and attachments erased: closed to edits)."""

    report: Report
    version: int
    monitor_id: UUID
    deleted: bool = False
    redacted: bool = False


class ReportOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """The result to store for the mutation; ``write`` (with ``version``) is the new report version
    to store, if any; ``conflicts`` go to the case team's review queue."""

    result: MutationResult
    write: Report | None = None
    conflicts: tuple[FieldConflict, ...] = ()


def _answer(
    mutation: CreateReport | AmendReport,
    report_id: UUID,
    status: MutationStatus,
    received_at: dt.datetime,
    reason: ReasonCode | None = None,
    *,
    version: int | None = None,
    detail: str | None = None,
    conflict_fields: tuple[str, ...] = (),
) -> MutationResult:
    return MutationResult(
        mutation_id=mutation.mutation_id,
        seq=mutation.seq,
        status=status,
        reason=reason,
        detail=detail[:2000] if detail else None,
        record_id=report_id,
        version=version,
        conflict_fields=conflict_fields,
        received_at=received_at,
    )


def _category_problem(
    categories: tuple[str, ...], known: Set[str], retired: Set[str]
) -> tuple[ReasonCode, str] | None:
    """Why the categories are refused (unknown ones first), or None when all are current."""
    unknown = [c for c in categories if c not in known and c not in retired]
    if unknown:
        return ReasonCode.UNKNOWN_CATEGORY, "unknown categories: " + ", ".join(unknown)
    old = [c for c in categories if c in retired]
    if old:
        return ReasonCode.RETIRED_CATEGORY, "retired categories (pull the taxonomy): " + ", ".join(
            old
        )
    return None


def decide_create(
    mutation: CreateReport,
    *,
    monitor_id: UUID,
    existing: StoredReport | None,
    known_categories: Set[str],
    received_at: dt.datetime,
    retired_categories: Set[str] = frozenset(),
) -> ReportOutcome:
    """A new report is stored as version 1. Its id already stored with the same content (the
    device lost track of its outbox) is a ``duplicate``; with other content it is refused."""
    report = mutation.report
    rid = report.id
    if existing is not None:
        if existing.monitor_id != monitor_id:
            # Do not reveal anything about another monitor's report.
            return ReportOutcome(
                result=_answer(
                    mutation,
                    rid,
                    MutationStatus.REJECTED,
                    received_at,
                    ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY,
                )
            )
        if existing.report == report:
            return ReportOutcome(
                result=_answer(
                    mutation, rid, MutationStatus.DUPLICATE, received_at, version=existing.version
                )
            )
        return ReportOutcome(
            result=_answer(
                mutation,
                rid,
                MutationStatus.REJECTED,
                received_at,
                ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY,
                version=existing.version,
            )
        )
    problem = _category_problem(report.categories, known_categories, retired_categories)
    if problem is not None:
        return ReportOutcome(
            result=_answer(
                mutation, rid, MutationStatus.REJECTED, received_at, problem[0], detail=problem[1]
            )
        )
    return ReportOutcome(
        result=_answer(mutation, rid, MutationStatus.APPLIED, received_at, version=1),
        write=report,
    )


def decide_amend(
    mutation: AmendReport,
    *,
    monitor_id: UUID,
    current: StoredReport | None,
    base: Report | None,
    known_categories: Set[str],
    received_at: dt.datetime,
    retired_categories: Set[str] = frozenset(),
) -> ReportOutcome:
    """Merge an amendment field by field. ``base`` is the stored content at
    ``mutation.base_version`` (None if that version is no longer kept)."""
    rid = mutation.report_id

    def refuse(reason: ReasonCode, detail: str | None = None) -> ReportOutcome:
        version = (
            current.version if current is not None and reason is not ReasonCode.NOT_FOUND else None
        )
        return ReportOutcome(
            result=_answer(
                mutation,
                rid,
                MutationStatus.REJECTED,
                received_at,
                reason,
                version=version,
                detail=detail,
            )
        )

    if current is None:
        return refuse(ReasonCode.NOT_FOUND)
    if current.monitor_id != monitor_id:
        return ReportOutcome(
            result=_answer(
                mutation, rid, MutationStatus.REJECTED, received_at, ReasonCode.NOT_OWNER
            )
        )
    if current.deleted:
        return refuse(ReasonCode.DELETED)
    if current.redacted:
        # An edit could bring back the worker's identity or the erased media.
        return refuse(ReasonCode.REDACTED)
    if mutation.base_version > current.version:
        return refuse(ReasonCode.UNKNOWN_BASE_VERSION)
    if base is None:
        return refuse(ReasonCode.STALE_BASE_VERSION)
    changes = mutation.changes
    if changes.categories is not msgspec.UNSET:
        problem = _category_problem(changes.categories, known_categories, retired_categories)
        if problem is not None:
            return refuse(*problem)
    try:
        merged, result = merge_report(base, current.report, changes)
    except msgspec.ValidationError as exc:
        return refuse(ReasonCode.INVALID, f"merged report is invalid: {exc}")
    version = current.version + 1 if result.changed else current.version
    status = MutationStatus.CONFLICT if result.conflicts else MutationStatus.APPLIED
    return ReportOutcome(
        result=_answer(
            mutation,
            rid,
            status,
            received_at,
            version=version,
            conflict_fields=tuple(c.path for c in result.conflicts),
        ),
        write=merged if result.changed else None,
        conflicts=result.conflicts,
    )
