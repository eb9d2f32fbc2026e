"""What a pull delivers to a device: one tagged ``Change`` per record that entered, changed in
or left the device's scope.

Every change carries the record's version so a device applies pages idempotently: a change whose
version is not newer than what the device holds is skipped, which makes re-delivery harmless.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Final
from uuid import UUID

import msgspec
from msgspec import Meta

from cases.reports import CategoryCode, CountryCode, DeclaredAttachment, LanguageTag

__all__ = [
    "Change",
    "ChangeBase",
    "EntityChange",
    "RecordKind",
    "ReportStatusChange",
    "TaskChange",
    "TaxonomyChange",
    "Tombstone",
    "TombstoneReason",
]

Version = Annotated[int, Meta(ge=1)]
AwareDatetime = Annotated[dt.datetime, Meta(tz=True)]
Label = Annotated[str, Meta(max_length=300)]
MAX_LABEL_LANGUAGES: Final = 50


class RecordKind(enum.StrEnum):
    """The kinds of record a device keeps a copy of."""

    REPORT = "report"
    TASK = "task"
    TAXONOMY = "taxonomy"
    ENTITY = "entity"


class TombstoneReason(enum.StrEnum):
    """Why a record must be dropped from the device."""

    DELETED = "deleted"
    OUT_OF_SCOPE = "out_of_scope"


class ChangeBase(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True):
    """Fields every change has; ``changed_at`` is server time, for display only (never ordering)."""

    version: Version
    changed_at: AwareDatetime


class ReportStatusChange(ChangeBase, tag="report_status", frozen=True, kw_only=True):
    """Where one of the monitor's own reports stands: its case status and what the team saw.

    ``version`` counts status updates (a blob arriving changes the status, not the report);
    ``report_version`` is the report's own version, the base for the next amendment.
    """

    report_id: UUID
    report_version: Version | None = None
    status: Annotated[str, Meta(max_length=40)]
    case_reference: Annotated[str, Meta(max_length=40)] | None = None
    message: Annotated[str, Meta(max_length=2000)] | None = None
    missing_attachments: tuple[str, ...] = ()
    open_conflicts: tuple[str, ...] = ()


class TaskChange(ChangeBase, tag="task", frozen=True, kw_only=True):
    """A follow-up task a case manager sent to this monitor (e.g. a question about a report)."""

    task_id: UUID
    report_id: UUID | None = None
    prompt: Annotated[str, Meta(max_length=5000)]
    due_at: AwareDatetime | None = None
    status: Annotated[str, Meta(max_length=40)] = "open"
    attachments: tuple[DeclaredAttachment, ...] = ()


class TaxonomyChange(ChangeBase, tag="taxonomy", frozen=True, kw_only=True):
    """One incident category with its labels; retired codes stay so old reports still render."""

    code: CategoryCode
    parent: CategoryCode | None = None
    labels: Annotated[dict[LanguageTag, Label], Meta(max_length=MAX_LABEL_LANGUAGES)]
    taxonomy_version: Annotated[str, Meta(max_length=40)]
    retired: bool = False


class EntityChange(ChangeBase, tag="entity", frozen=True, kw_only=True):
    """An employer or recruiter from the registry subset of the device's region, for pick lists."""

    entity_id: UUID
    entity_kind: Annotated[str, Meta(max_length=40)]
    name: Annotated[str, Meta(max_length=300)]
    aliases: Annotated[tuple[Annotated[str, Meta(max_length=300)], ...], Meta(max_length=100)] = ()
    licence_number: Annotated[str, Meta(max_length=100)] | None = None
    phones: Annotated[tuple[Annotated[str, Meta(max_length=40)], ...], Meta(max_length=20)] = ()
    country: CountryCode | None = None


class Tombstone(ChangeBase, tag="tombstone", frozen=True, kw_only=True):
    """The device must forget a record: deleted on the server, or no longer in its scope."""

    record_kind: RecordKind
    record_id: Annotated[str, Meta(max_length=64)]
    reason: TombstoneReason


Change = ReportStatusChange | TaskChange | TaxonomyChange | EntityChange | Tombstone
