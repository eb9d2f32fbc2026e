"""Case work around the workflow: notes, tasks to monitors, consent, referrals, partners, SLA.

Writes to a case name the case version they were based on, like every other case write.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from cases.accounts import Role
from cases.consent import ConsentAction, ConsentMethod, ConsentPurpose, PartnerKind
from cases.workflow import SlaPolicy
from server.auth import Caller, requires
from server.problems import invalid_request
from server.resources import Db, resources_of
from server.routes.case_problems import CASE_TEAM, actor_of, case_errors
from storage.case_referrals import (
    ConsentEntry,
    Partner,
    PartnerDraft,
    Referral,
    ReferralOutcome,
    ReferralSent,
    add_partner,
    create_referral,
    list_consents,
    list_partners,
    list_referrals,
    record_consent,
    set_referral_outcome,
    update_partner,
)
from storage.cases import (
    CaseWriter,
    Note,
    NoteVisibility,
    add_note,
    get_case,
    list_notes,
    load_sla,
    sla_version,
)
from storage.cases import save_sla as store_sla
from storage.tasks import Task, cancel_task, create_task, list_tasks

__all__ = ["ROUTES"]

Version = Annotated[int, msgspec.Meta(ge=1)]


class NewNote(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    body: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
    visibility: NoteVisibility = "internal"


class NewTask(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    monitor_id: uuid.UUID
    prompt: Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]
    report_id: uuid.UUID | None = None
    due_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


class CaseVersion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version


class NewConsent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    action: ConsentAction
    purposes: Annotated[frozenset[ConsentPurpose], msgspec.Meta(min_length=1)]
    method: ConsentMethod
    partner_kinds: frozenset[PartnerKind] | None = None
    expires_at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None
    note: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class NewReferral(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    partner_id: uuid.UUID
    # Only needed without current consent; must say why referring anyway is right (audited).
    override_justification: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class ReferralUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    status: ReferralOutcome
    note: Annotated[str, msgspec.Meta(max_length=4000)] | None = None


class PartnerBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: PartnerKind
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    contact: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    country: Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")] | None = None
    is_active: bool = True

    def draft(self) -> PartnerDraft:
        return PartnerDraft(**msgspec.structs.asdict(self))


class PartnerUpdate(PartnerBody, frozen=True, forbid_unknown_fields=True):
    version: Version = 1

    def draft(self) -> PartnerDraft:
        fields = msgspec.structs.asdict(self)
        fields.pop("version")
        return PartnerDraft(**fields)


class SlaSettings(msgspec.Struct, frozen=True):
    sla: SlaPolicy
    version: int | None


class SlaUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sla: dict[str, Any]
    version: int | None = None  # None: the organisation has no settings yet


@post(
    "/v1/cases/{case_id:uuid}/notes",
    guards=[requires(*CASE_TEAM)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
)
async def post_note(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[NewNote]
) -> Note:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await add_note(
            db, writer, actor_of(principal), principal.user_id, data.visibility, data.body
        )


@get("/v1/cases/{case_id:uuid}/notes", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_notes(principal: Caller, db: Db, case_id: FromPath[uuid.UUID]) -> list[Note]:
    return await list_notes(db, principal.org_id, case_id)


@post(
    "/v1/cases/{case_id:uuid}/tasks",
    guards=[requires(*CASE_TEAM)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
    summary="Send a task to a monitor's devices (delivered on their next pull)",
)
async def post_task(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[NewTask]
) -> Task:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await create_task(
            db,
            writer,
            actor_of(principal),
            created_by=principal.user_id,
            monitor_id=data.monitor_id,
            prompt=data.prompt,
            report_id=data.report_id,
            due_at=data.due_at,
        )


@get("/v1/cases/{case_id:uuid}/tasks", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_tasks(principal: Caller, db: Db, case_id: FromPath[uuid.UUID]) -> list[Task]:
    return await list_tasks(db, principal.org_id, case_id)


@post(
    "/v1/cases/{case_id:uuid}/tasks/{task_id:uuid}/cancel",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
)
async def post_task_cancel(
    principal: Caller,
    db: Db,
    case_id: FromPath[uuid.UUID],
    task_id: FromPath[uuid.UUID],
    data: JSONBody[CaseVersion],
) -> Task:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        with case_errors():
            return await cancel_task(db, writer, actor_of(principal), task_id)


@post(
    "/v1/cases/{case_id:uuid}/consents",
    guards=[requires(*CASE_TEAM)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
    summary="Record the worker's consent or its withdrawal (a withdrawal blocks sharing)",
)
async def post_consent(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[NewConsent]
) -> ConsentEntry:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await record_consent(
            db,
            writer,
            actor_of(principal),
            action=data.action,
            purposes=data.purposes,
            method=data.method,
            partner_kinds=data.partner_kinds,
            expires_at=data.expires_at,
            note=data.note,
        )


@get("/v1/cases/{case_id:uuid}/consents", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_consents(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID]
) -> list[ConsentEntry]:
    await get_case(db, principal.org_id, case_id)
    return await list_consents(db, principal.org_id, case_id)


@post(
    "/v1/cases/{case_id:uuid}/referrals",
    guards=[requires(*CASE_TEAM)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
    summary="Refer the case to a partner; needs the worker's consent or a justified override",
)
async def post_referral(
    principal: Caller,
    db: Db,
    state: State,
    case_id: FromPath[uuid.UUID],
    data: JSONBody[NewReferral],
) -> ReferralSent:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        with case_errors():
            return await create_referral(
                db,
                writer,
                actor_of(principal),
                resources_of(state).keyring,
                user_id=principal.user_id,
                partner_id=data.partner_id,
                justification=data.override_justification,
            )


@get("/v1/cases/{case_id:uuid}/referrals", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_referrals(principal: Caller, db: Db, case_id: FromPath[uuid.UUID]) -> list[Referral]:
    return await list_referrals(db, principal.org_id, case_id)


@put(
    "/v1/cases/{case_id:uuid}/referrals/{referral_id:uuid}",
    guards=[requires(*CASE_TEAM)],
    tags=["cases"],
    summary="Record what came of a referral",
)
async def put_referral_outcome(
    principal: Caller,
    db: Db,
    case_id: FromPath[uuid.UUID],
    referral_id: FromPath[uuid.UUID],
    data: JSONBody[ReferralUpdate],
) -> Referral:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await set_referral_outcome(
            db, writer, actor_of(principal), referral_id, data.status, data.note
        )


@post(
    "/v1/partners",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
)
async def post_partner(principal: Caller, db: Db, data: JSONBody[PartnerBody]) -> Partner:
    return await add_partner(db, principal.org_id, data.draft())


@get("/v1/partners", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_partners(
    principal: Caller,
    db: Db,
    include_inactive: Annotated[bool, QueryParameter()] = False,
) -> list[Partner]:
    return await list_partners(db, principal.org_id, include_inactive=include_inactive)


@put("/v1/partners/{partner_id:uuid}", guards=[requires(Role.ORG_ADMIN)], tags=["cases"])
async def put_partner(
    principal: Caller, db: Db, partner_id: FromPath[uuid.UUID], data: JSONBody[PartnerUpdate]
) -> Partner:
    return await update_partner(db, principal.org_id, partner_id, data.draft(), data.version)


@get("/v1/case-settings", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def get_case_settings(principal: Caller, db: Db) -> SlaSettings:
    sla = await load_sla(db, principal.org_id)
    return SlaSettings(sla=sla, version=await sla_version(db, principal.org_id))


@put(
    "/v1/case-settings",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["cases"],
    summary="Set the SLA per priority (ISO 8601 durations) for cases opened or reopened later",
)
async def put_case_settings(principal: Caller, db: Db, data: JSONBody[SlaUpdate]) -> SlaSettings:
    try:
        sla = msgspec.convert(data.sla, SlaPolicy, strict=False)
    except (msgspec.ValidationError, ValueError) as exc:
        raise invalid_request(f"sla: {exc}") from None
    version = await store_sla(db, principal.org_id, sla, principal.user_id, data.version)
    return SlaSettings(sla=sla, version=version)


ROUTES: list[Any] = [
    post_note,
    get_notes,
    post_task,
    get_tasks,
    post_task_cancel,
    post_consent,
    get_consents,
    post_referral,
    get_referrals,
    put_referral_outcome,
    post_partner,
    get_partners,
    put_partner,
    get_case_settings,
    put_case_settings,
]
