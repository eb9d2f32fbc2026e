"""Versioned wire messages of the sync protocol: enrollment, push (mutations and results), pull.

Messages gain fields only with defaults and never forbid unknown fields, so an old app keeps
working against a newer server. Decoding lives in ``sync.codec``.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Final
from uuid import UUID

import msgspec
from msgspec import UNSET, Meta, UnsetType

from cases.reports import (
    MAX_ATTACHMENTS,
    MAX_CATEGORIES,
    MAX_NARRATIVE_CHARS,
    CategoryCode,
    Consent,
    CountryCode,
    DeclaredAttachment,
    LanguageTag,
    Location,
    PartyReference,
    Report,
    TimePrecision,
    WorkerIdentity,
)
from sync.changes import Change

__all__ = [
    "MAX_BATCH",
    "MAX_PULL_LIMIT",
    "PROTOCOL_VERSION",
    "TRANSPORT_FIELDS",
    "AmendReport",
    "AnswerTask",
    "CreateReport",
    "DeleteReport",
    "EnrollRequest",
    "EnrollResponse",
    "Mutation",
    "MutationBase",
    "MutationEnvelope",
    "MutationResult",
    "MutationStatus",
    "PullRequest",
    "PullResponse",
    "PushRequest",
    "PushResponse",
    "ReasonCode",
    "ReportChanges",
    "ResetReason",
    "WipeInstruction",
]

PROTOCOL_VERSION: Final = "1"
MAX_BATCH: Final = 500
MAX_PULL_LIMIT: Final = 1000
# Fields that describe this delivery attempt, not the mutation: left out of the body hash.
TRANSPORT_FIELDS: Final = frozenset({"attempt"})

Seq = Annotated[int, Meta(ge=1, le=2**53 - 1)]
Version = Annotated[int, Meta(ge=1)]
AwareDatetime = Annotated[dt.datetime, Meta(tz=True)]
ProtocolVersion = Annotated[str, Meta(max_length=10)]
Token = Annotated[str, Meta(max_length=512)]


class MutationStatus(enum.StrEnum):
    """Outcome of one mutation. ``held`` is the only status that is not final."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REJECTED = "rejected"
    HELD = "held"


class ReasonCode(enum.StrEnum):
    """Machine-readable reason attached to ``rejected`` (and, for ``held``, ``waiting``)."""

    INVALID = "invalid"
    UNKNOWN_KIND = "unknown_kind"
    UNKNOWN_CATEGORY = "unknown_category"
    RETIRED_CATEGORY = "retired_category"
    ID_REUSED_WITH_DIFFERENT_BODY = "id_reused_with_different_body"
    SEQ_ALREADY_USED = "seq_already_used"
    SEQ_GAP = "seq_gap"
    STALE_BASE_VERSION = "stale_base_version"
    UNKNOWN_BASE_VERSION = "unknown_base_version"
    NOT_OWNER = "not_owner"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    REDACTED = "redacted"
    TASK_CLOSED = "task_closed"
    WAITING_FOR_PREDECESSOR = "waiting_for_predecessor"


class ResetReason(enum.StrEnum):
    """Why a pull answered ``reset_required`` instead of changes."""

    CURSOR_EXPIRED = "cursor_expired"
    SCOPE_CHANGED = "scope_changed"
    SERVER_RESTORED = "server_restored"
    CURSOR_VERSION = "cursor_version"
    CURSOR_INVALID = "cursor_invalid"


class WireMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Base of request and response bodies."""


class MutationBase(msgspec.Struct, tag_field="kind", frozen=True, kw_only=True, omit_defaults=True):
    """One change a device made offline. ``(device_id, seq)`` orders it; ``mutation_id`` dedups it.

    ``recorded_at`` is the device clock when the monitor saved the change; ``attempt`` counts
    delivery attempts and is transport-only (not part of the body hash).
    """

    seq: Seq
    mutation_id: UUID
    recorded_at: AwareDatetime
    attempt: Annotated[int, Meta(ge=0)] = 0


class CreateReport(MutationBase, tag="create_report", frozen=True, kw_only=True):
    report: Report


class ReportChanges(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A partial Report: only the fields an amendment sets (``null`` clears an optional field)."""

    occurred_at: AwareDatetime | UnsetType = UNSET
    occurred_precision: TimePrecision | UnsetType = UNSET
    location: Location | UnsetType = UNSET
    categories: (
        Annotated[tuple[CategoryCode, ...], Meta(min_length=1, max_length=MAX_CATEGORIES)]
        | UnsetType
    ) = UNSET
    severity: Annotated[int, Meta(ge=1, le=5)] | UnsetType = UNSET
    workers_affected: Annotated[int, Meta(ge=0, le=100_000)] | UnsetType = UNSET
    sector: Annotated[str, Meta(max_length=64)] | UnsetType | None = UNSET
    origin_country: CountryCode | UnsetType | None = UNSET
    destination_country: CountryCode | UnsetType | None = UNSET
    narrative: Annotated[str, Meta(max_length=MAX_NARRATIVE_CHARS)] | UnsetType = UNSET
    narrative_language: LanguageTag | UnsetType | None = UNSET
    employer: PartyReference | UnsetType | None = UNSET
    recruiter: PartyReference | UnsetType | None = UNSET
    consent: Consent | UnsetType = UNSET
    worker: WorkerIdentity | UnsetType | None = UNSET
    attachments: (
        Annotated[tuple[DeclaredAttachment, ...], Meta(max_length=MAX_ATTACHMENTS)] | UnsetType
    ) = UNSET


class AmendReport(MutationBase, tag="amend_report", frozen=True, kw_only=True):
    """An edit of a report, based on the version the device last saw (merged field by field)."""

    report_id: UUID
    base_version: Version
    changes: ReportChanges


class AnswerTask(MutationBase, tag="answer_task", frozen=True, kw_only=True):
    task_id: UUID
    answer: Annotated[str, Meta(max_length=5000)]
    attachments: Annotated[tuple[DeclaredAttachment, ...], Meta(max_length=MAX_ATTACHMENTS)] = ()


class DeleteReport(MutationBase, tag="delete_report", frozen=True, kw_only=True):
    """The monitor withdraws a report (recorded by mistake); the case team keeps an audit trail."""

    report_id: UUID
    base_version: Version
    reason: Annotated[str, Meta(max_length=500)] = ""


Mutation = CreateReport | AmendReport | AnswerTask | DeleteReport


class MutationEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    """The least of a mutation the server must read to account for it, even when the rest is bad."""

    kind: Annotated[str, Meta(max_length=64)]
    seq: Seq
    mutation_id: UUID


class PushRequest(WireMessage, frozen=True, kw_only=True):
    """A batch from a device's outbox. Mutations stay raw so one bad mutation is rejected alone."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    device_id: UUID
    sent_at: AwareDatetime
    outbox_depth: Annotated[int, Meta(ge=0)] = 0
    mutations: Annotated[tuple[msgspec.Raw, ...], Meta(min_length=1, max_length=MAX_BATCH)]


class MutationResult(WireMessage, frozen=True, kw_only=True):
    """What happened to one mutation. Final results are stored and replayed verbatim on resend."""

    mutation_id: UUID
    seq: Seq
    status: MutationStatus
    reason: ReasonCode | None = None
    detail: Annotated[str, Meta(max_length=2000)] | None = None
    record_id: UUID | None = None
    version: Version | None = None
    conflict_fields: tuple[str, ...] = ()
    received_at: AwareDatetime


class PushResponse(WireMessage, frozen=True, kw_only=True):
    """One result per pushed mutation, in the order they were sent."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    results: tuple[MutationResult, ...]
    next_expected_seq: Seq
    received_at: AwareDatetime
    clock_offset_seconds: float | None = None


class PullRequest(WireMessage, frozen=True, kw_only=True):
    """Ask for the next page of changes after ``cursor`` (``None`` on first sync or after reset)."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    device_id: UUID
    cursor: Token | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_PULL_LIMIT)] = 200


class PullResponse(WireMessage, frozen=True, kw_only=True):
    """A page of changes. With ``reset_required`` the device drops its pulled copies (never its
    outbox) and pulls again from no cursor."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    changes: tuple[Change, ...] = ()
    has_more: bool = False
    next_cursor: Token | None = None
    reset_required: bool = False
    reset_reason: ResetReason | None = None
    server_time: AwareDatetime


class EnrollRequest(WireMessage, frozen=True, kw_only=True):
    """Trade a one-time enrollment code for a device credential."""

    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    code: Annotated[str, Meta(min_length=6, max_length=64)]
    device_model: Annotated[str, Meta(max_length=100)] | None = None
    os_version: Annotated[str, Meta(max_length=50)] | None = None
    app_version: Annotated[str, Meta(max_length=50)] | None = None
    device_time: AwareDatetime | None = None


class EnrollResponse(WireMessage, frozen=True, kw_only=True):
    protocol_version: ProtocolVersion = PROTOCOL_VERSION
    device_id: UUID
    credential: Token
    monitor_id: UUID
    enrolled_at: AwareDatetime
    max_batch: int = MAX_BATCH
    max_pull_limit: int = MAX_PULL_LIMIT


class WipeInstruction(WireMessage, frozen=True, kw_only=True):
    """Sent to a revoked or lost device at its next contact: erase every local copy and outbox."""

    wipe: bool = True
    reason: Annotated[str, Meta(max_length=200)] = "device_revoked"
    revoked_at: AwareDatetime
