"""Partners, the worker's consent history, and referrals that only go ahead when consent allows.

A referral asks ``cases.consent.may_refer`` for a decision from the case's consent history (the
flags of its reports, then every grant and withdrawal recorded since). Without current consent it
needs an override with a written justification; after a withdrawal nothing is shared at all. The
partner receives only its kind's minimum data set, built from the unsealed reports (each read is
audited); what was sent is kept encrypted with the referral.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import asyncpg
import msgspec

from cases.consent import (
    ConsentAction,
    ConsentMethod,
    ConsentOverride,
    ConsentPurpose,
    ConsentRecord,
    Decision,
    PartnerKind,
    may_refer,
    referral_payload,
)
from cases.reports import Report
from cases.workflow import CaseStatus, TransitionCommand, transition
from storage.audit import ActorKind, AuditEntry, record
from storage.cases import CaseActor, CaseWriter, get_case, load_sla
from storage.db import Conn
from storage.errors import AlreadyExists, NotFound, StaleVersion, StorageError
from storage.keyring import Keyring
from storage.queries import Q
from storage.reports import ReportStore

__all__ = [
    "ConsentEntry",
    "Partner",
    "PartnerDraft",
    "Referral",
    "ReferralOutcome",
    "ReferralRefused",
    "ReferralSent",
    "add_partner",
    "consent_history",
    "create_referral",
    "list_consents",
    "list_partners",
    "list_referrals",
    "record_consent",
    "set_referral_outcome",
    "update_partner",
]

ReferralOutcome = Literal["sent", "accepted", "declined", "completed", "failed"]
_ENCODER = msgspec.json.Encoder()


class ReferralRefused(StorageError):
    """The worker's consent does not allow this referral (``decision.reason`` says why)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"referral refused: {decision.reason}")
        self.decision = decision


class PartnerDraft(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: PartnerKind
    name: str
    contact: str = ""
    country: str | None = None
    is_active: bool = True


class Partner(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    kind: PartnerKind
    name: str
    contact: str
    country: str | None
    is_active: bool
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime


class ConsentEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    case_id: uuid.UUID
    action: ConsentAction
    purposes: list[ConsentPurpose]
    partner_kinds: list[PartnerKind] | None
    method: ConsentMethod
    expires_at: dt.datetime | None
    note: str | None
    recorded_by: str
    recorded_at: dt.datetime


class Referral(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    case_id: uuid.UUID
    partner_id: uuid.UUID
    partner_kind: PartnerKind
    decision: Decision
    override: bool
    fields: list[str]
    status: ReferralOutcome
    outcome_note: str | None
    version: int
    created_by: uuid.UUID
    created_at: dt.datetime
    updated_at: dt.datetime


class ReferralSent(msgspec.Struct, frozen=True, kw_only=True):
    """A new referral and the data to hand to the partner (only its kind's minimum set)."""

    referral: Referral
    payload: dict[str, Any]
    case_version: int


def _referral(row: Any) -> Referral:
    data = dict(row)
    data["decision"] = msgspec.json.decode(data["decision"])
    referral: Referral = msgspec.convert(data, Referral, strict=False)
    return referral


async def add_partner(conn: Conn, org_id: uuid.UUID, draft: PartnerDraft) -> Partner:
    try:
        row = await conn.fetchrow(
            Q.partner_insert, org_id, draft.kind.value, draft.name, draft.contact, draft.country
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("partner", "name") from None
    assert row is not None
    partner: Partner = msgspec.convert(dict(row), Partner, strict=False)
    return partner


async def update_partner(
    conn: Conn, org_id: uuid.UUID, partner_id: uuid.UUID, draft: PartnerDraft, version: int
) -> Partner:
    row = await conn.fetchrow(
        Q.partner_update,
        org_id,
        partner_id,
        draft.kind.value,
        draft.name,
        draft.contact,
        draft.country,
        draft.is_active,
        version,
    )
    if row is None:
        current = await conn.fetchrow(Q.partner_get, org_id, partner_id)
        if current is None:
            raise NotFound("partner", partner_id)
        raise StaleVersion("partner", partner_id, current["version"])
    partner: Partner = msgspec.convert(dict(row), Partner, strict=False)
    return partner


async def list_partners(conn: Conn, org_id: uuid.UUID, *, include_inactive: bool) -> list[Partner]:
    rows = await conn.fetch(Q.partners_list, org_id, include_inactive)
    return [msgspec.convert(dict(r), Partner, strict=False) for r in rows]


async def consent_history(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[ConsentRecord]:
    """Every consent statement about the case's worker(s): report flags first, then records."""
    history: list[ConsentRecord] = []
    for row in await conn.fetch(Q.report_consents_of_case, org_id, case_id):
        flags = msgspec.json.decode(row["consent"]) if row["consent"] else {}
        purposes = frozenset(ConsentPurpose(p) for p, given in flags.items() if given)
        if purposes:
            history.append(
                ConsentRecord(
                    action="granted",
                    purposes=purposes,
                    recorded_at=row["received_at"],
                    recorded_by=f"monitor:{row['monitor_id']}",
                    method="in_app",
                )
            )
    for entry in await list_consents(conn, org_id, case_id):
        history.append(
            ConsentRecord(
                action=entry.action,
                purposes=frozenset(entry.purposes),
                recorded_at=entry.recorded_at,
                recorded_by=entry.recorded_by,
                method=entry.method,
                partner_kinds=frozenset(entry.partner_kinds) if entry.partner_kinds else None,
                expires_at=entry.expires_at,
            )
        )
    return history


async def list_consents(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[ConsentEntry]:
    rows = await conn.fetch(Q.consents_of_case, org_id, case_id)
    return [msgspec.convert(dict(r), ConsentEntry, strict=False) for r in rows]


async def record_consent(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    *,
    action: ConsentAction,
    purposes: frozenset[ConsentPurpose],
    method: ConsentMethod,
    partner_kinds: frozenset[PartnerKind] | None = None,
    expires_at: dt.datetime | None = None,
    note: str | None = None,
) -> ConsentEntry:
    """Record a grant or a withdrawal (a withdrawal covers every partner kind)."""
    case = writer.case
    now = dt.datetime.now(dt.UTC)
    kinds = None if action == "withdrawn" or partner_kinds is None else sorted(partner_kinds)
    row = await conn.fetchrow(
        Q.consent_insert,
        case.org_id,
        case.id,
        action,
        sorted(purposes),
        kinds,
        method,
        expires_at,
        note,
        actor.label,
        now,
    )
    assert row is not None
    entry: ConsentEntry = msgspec.convert(dict(row), ConsentEntry, strict=False)
    kind = "consent_withdrawn" if action == "withdrawn" else "consent_granted"
    await writer.record(kind, actor, {"consent": str(entry.id), "purposes": sorted(purposes)})
    await record(
        conn,
        AuditEntry(
            org_id=case.org_id,
            actor_kind=ActorKind(actor.kind),
            actor_id=actor.id,
            action=f"case.{kind}",
            object_kind="case",
            object_id=str(case.id),
            detail={"consent": str(entry.id), "purposes": sorted(purposes)},
        ),
    )
    return entry


def _case_data(reports: list[Report]) -> dict[str, Any]:
    """Everything a partner could be given about the case; ``referral_payload`` cuts it down."""
    data: dict[str, Any] = {}
    for report in reports:  # earliest first: later reports fill what earlier ones lack
        worker = report.worker
        party = report.employer
        facts: dict[str, Any] = {
            "worker_name": worker.name if worker else None,
            "contact_phone": worker.phone if worker else None,
            "passport_number": worker.passport_number if worker else None,
            "preferred_language": report.narrative_language,
            "nationality": report.origin_country,
            "employer_name": party.name if party else None,
            "recruiter_name": report.recruiter.name if report.recruiter else None,
            "workplace_address": party.address if party else None,
            "sector": report.sector,
        }
        for key, value in facts.items():
            if value is not None and key not in data:
                data[key] = value
    data["incident_categories"] = sorted({c for r in reports for c in r.categories})
    data["incident_dates"] = sorted({r.occurred_at.date().isoformat() for r in reports})
    data["incident_summary"] = "\n\n".join(r.narrative for r in reports if r.narrative)
    data["workers_affected"] = max((r.workers_affected for r in reports), default=None)
    return data


async def create_referral(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    keyring: Keyring,
    *,
    user_id: uuid.UUID,
    partner_id: uuid.UUID,
    justification: str | None = None,
) -> ReferralSent:
    """Refer the case to a partner if consent allows (or a justified override does).

    An open or followed-up case moves to ``referred``; a case already referred just gains another
    referral; any other state is an illegal transition (the workflow says which moves it allows).
    """
    case = writer.case
    org_id = case.org_id
    now = dt.datetime.now(dt.UTC)
    partner_row = await conn.fetchrow(Q.partner_get, org_id, partner_id)
    if partner_row is None or not partner_row["is_active"]:
        raise NotFound("partner", partner_id)
    kind = PartnerKind(partner_row["kind"])
    override = ConsentOverride(str(user_id), justification) if justification else None
    decision = may_refer(
        await consent_history(conn, org_id, case.id),
        ConsentPurpose.REFERRAL,
        now,
        partner_kind=kind,
        override=override,
    )
    if not decision.allowed:
        raise ReferralRefused(decision)
    moved = None
    if case.status is not CaseStatus.REFERRED:
        command = TransitionCommand(to=CaseStatus.REFERRED, referral=decision)
        moved = transition(
            case.state, command, actor.workflow, now, sla=await load_sla(conn, org_id)
        )
    referral_id = uuid.uuid4()
    store = ReportStore(conn, keyring)
    reports: list[Report] = []
    for member in await conn.fetch(Q.case_report_ids, case.id):
        reports.append((await store.get(org_id, member["report_id"]))["report"])
        await record(
            conn,
            AuditEntry(
                org_id=org_id,
                actor_kind=ActorKind(actor.kind),
                actor_id=actor.id,
                action="report.read_sensitive",
                object_kind="report",
                object_id=str(member["report_id"]),
                detail={"purpose": "referral", "referral": str(referral_id)},
            ),
        )
    payload = referral_payload(_case_data(reports), kind)
    payload = {k: v for k, v in payload.items() if v not in (None, "", [])}
    sealed = await keyring.encrypt_struct(
        conn, org_id, payload, f"referrals.payload:{referral_id}".encode()
    )
    row = await conn.fetchrow(
        Q.referral_insert,
        referral_id,
        org_id,
        case.id,
        partner_id,
        kind.value,
        _ENCODER.encode(decision).decode(),
        decision.override,
        sorted(payload),
        sealed,
        user_id,
    )
    referral = _referral(row)
    if moved is not None:
        await writer.apply(moved.case, moved.event, actor)
    await writer.record(
        "referral_sent",
        actor,
        {
            "referral": str(referral_id),
            "partner": str(partner_id),
            "partner_kind": kind.value,
            "consent": decision.reason,
            "override": decision.override,
            "fields": sorted(payload),
        },
        at=now,
    )
    await record(
        conn,
        AuditEntry(
            org_id=org_id,
            actor_kind=ActorKind(actor.kind),
            actor_id=actor.id,
            action="case.referral_override" if decision.override else "case.referral_sent",
            object_kind="case",
            object_id=str(case.id),
            detail={
                "referral": str(referral_id),
                "partner": str(partner_id),
                "consent": decision.reason,
                "justification": decision.justification,
                "fields": sorted(payload),
            },
        ),
    )
    return ReferralSent(referral=referral, payload=payload, case_version=writer.case.version)


async def set_referral_outcome(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    referral_id: uuid.UUID,
    status: ReferralOutcome,
    note: str | None,
) -> Referral:
    case = writer.case
    row = await conn.fetchrow(
        Q.referral_set_outcome, case.org_id, case.id, referral_id, status, note
    )
    if row is None:
        raise NotFound("referral", referral_id)
    await writer.record("referral_outcome", actor, {"referral": str(referral_id), "status": status})
    return _referral(row)


async def list_referrals(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[Referral]:
    await get_case(conn, org_id, case_id)
    return [_referral(r) for r in await conn.fetch(Q.referrals_of_case, org_id, case_id)]
