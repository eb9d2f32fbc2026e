"""The case API: create, list, read, move through the workflow, assign, prioritise, link.

Every write names the case version it was based on; a stale one gets 409 ``stale-version`` with
the current version. Analysts may list and read cases, seen through ``view_for``; everything else
is for the case team. Notes, tasks, referrals and exports are in the ``case_*`` route modules.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec
from litestar import get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from cases.accounts import Role
from cases.priority import Priority, PriorityReason
from cases.workflow import (
    CaseStatus,
    ClosureOutcome,
    TransitionCommand,
    assign,
    change_priority,
    transition,
)
from server.auth import ANY_STAFF, Caller, requires
from server.pagination import decode_page_token, encode_page_token
from server.problems import FieldError, ProblemError
from server.resources import Db, resources_of
from server.routes import case_export, case_work
from server.routes.case_filters import CaseFilters, provide_case_filters
from server.routes.case_problems import CASE_TEAM, actor_of, case_errors, case_view
from storage.case_links import create_case, link_entity, link_person, link_reports, list_links
from storage.case_links import unlink_report as unlink
from storage.case_list import CaseSort, count_by_status, list_cases, sort_key
from storage.cases import Case, CaseEvent, CaseWriter, get_case, list_events, load_sla
from storage.queries import Q
from storage.retention import analyst_cell_resolution

__all__ = ["ROUTES"]

Version = Annotated[int, msgspec.Meta(ge=1)]
Reason = Annotated[str, msgspec.Meta(max_length=4000)]
_CASE_ROLES = frozenset({Role.ORG_ADMIN.value, Role.CASE_MANAGER.value})


class NewCase(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    report_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=200)]
    title: Annotated[str, msgspec.Meta(max_length=300)] = ""


class TransitionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    to: CaseStatus
    reason: Reason | None = None
    outcome: ClosureOutcome | None = None
    assign_to: uuid.UUID | None = None


class AssignRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    assignee_id: uuid.UUID


class PriorityRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    priority: Priority
    reason: Reason | None = None


class LinkReports(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    report_ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=200)]


class LinkEntity(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    entity_id: uuid.UUID
    role: Annotated[str, msgspec.Meta(pattern="^(employer|recruiter)$")]


class LinkPerson(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Version
    person_id: uuid.UUID


class CasePage(msgspec.Struct, frozen=True):
    items: list[dict[str, Any]]
    counts: dict[str, int]
    next_page_token: str | None = None


class Link(msgspec.Struct, frozen=True):
    kind: str
    id: uuid.UUID
    role: str | None
    source: str


async def _check_assignee(db: Db, org_id: uuid.UUID, user_id: uuid.UUID | None) -> None:
    if user_id is None:
        return
    role = await db.fetchval(Q.case_staff_role, org_id, user_id)
    if role not in _CASE_ROLES:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            "the assignee must be an active case manager or admin of your organisation",
            errors=[FieldError("assignee_id", "not a case manager of this organisation", "body")],
        )


@post(
    "/v1/cases",
    guards=[requires(*CASE_TEAM)],
    status_code=HTTP_201_CREATED,
    tags=["cases"],
    summary="Open a case by hand for one or more reports",
)
async def open_case(principal: Caller, db: Db, state: State, data: JSONBody[NewCase]) -> Case:
    with case_errors():
        case = await create_case(
            db,
            org_id=principal.org_id,
            actor=actor_of(principal),
            report_ids=data.report_ids,
            title=data.title,
            taxonomy=resources_of(state).taxonomy,
        )
    assert case is not None  # only an incident's second case is refused
    return case


@get(
    "/v1/cases",
    guards=[requires(*ANY_STAFF)],
    tags=["cases"],
    summary="List cases with filters, search, sort and counts per state",
    dependencies={"filters": provide_case_filters},
)
async def list_case_page(
    principal: Caller,
    db: Db,
    filters: CaseFilters,
    sort: FromQuery[CaseSort] = CaseSort.CREATED,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=300)] = None,
) -> CasePage:
    after = None
    if page_token:
        token = decode_page_token(page_token, tuple[str, list[Any]])
        if token[0] != sort.value:
            raise ProblemError(400, "invalid-page-token", "The page token is for another sort")
        after = _decode_key(sort, token[1])
    with case_errors():
        items = await list_cases(
            db, principal.org_id, filters, sort=sort, after=after, limit=limit + 1
        )
        counts = await count_by_status(db, principal.org_id, filters)
    more = len(items) > limit
    items = items[:limit]
    next_token = None
    if more:
        key = msgspec.to_builtins(sort_key(items[-1], sort))  # datetimes and ids as strings
        next_token = encode_page_token((sort.value, key))
    resolution = await analyst_cell_resolution(db, principal.org_id)
    views = [case_view(principal.role, msgspec.to_builtins(i), resolution) for i in items]
    return CasePage(items=views, counts=counts, next_page_token=next_token)


def _decode_key(sort: CaseSort, raw: list[Any]) -> tuple[Any, ...]:
    try:
        if sort is CaseSort.PRIORITY:
            rank, due, last = raw
            return (int(rank), dt.datetime.fromisoformat(due), uuid.UUID(last))
        moment, last = raw
        return (dt.datetime.fromisoformat(moment), uuid.UUID(last))
    except (ValueError, TypeError):
        raise ProblemError(
            400, "invalid-page-token", "The page token is not valid", "start again without it"
        ) from None


@get("/v1/cases/{case_id:uuid}", guards=[requires(*ANY_STAFF)], tags=["cases"])
async def read_case(principal: Caller, db: Db, case_id: FromPath[uuid.UUID]) -> dict[str, Any]:
    case = await get_case(db, principal.org_id, case_id)
    resolution = await analyst_cell_resolution(db, principal.org_id)
    view = case_view(principal.role, msgspec.to_builtins(case), resolution)
    if principal.role is not Role.ANALYST:
        view["links"] = msgspec.to_builtins(
            [
                msgspec.convert(link, Link)
                for link in await list_links(db, principal.org_id, case_id)
            ]
        )
    return view


@get(
    "/v1/cases/{case_id:uuid}/timeline",
    guards=[requires(*CASE_TEAM)],
    tags=["cases"],
    summary="Every change to the case, oldest first (page with after_event)",
)
async def read_timeline(
    principal: Caller,
    db: Db,
    case_id: FromPath[uuid.UUID],
    after_event: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 200,
) -> list[CaseEvent]:
    return await list_events(db, principal.org_id, case_id, after=after_event, limit=limit)


@post(
    "/v1/cases/{case_id:uuid}/transitions",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
    summary="Move the case; 409 illegal-transition lists the allowed targets",
)
async def move_case(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[TransitionRequest]
) -> Case:
    await _check_assignee(db, principal.org_id, data.assign_to)
    actor = actor_of(principal)
    command = TransitionCommand(
        to=data.to,
        reason=data.reason,
        outcome=data.outcome,
        assign_to=str(data.assign_to) if data.assign_to else None,
    )
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        sla = await load_sla(db, principal.org_id)
        with case_errors():
            moved = transition(
                writer.case.state, command, actor.workflow, dt.datetime.now(dt.UTC), sla=sla
            )
        return await writer.apply(moved.case, moved.event, actor)


@put("/v1/cases/{case_id:uuid}/assignee", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def assign_case(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[AssignRequest]
) -> Case:
    await _check_assignee(db, principal.org_id, data.assignee_id)
    actor = actor_of(principal)
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        with case_errors():
            moved = assign(
                writer.case.state, str(data.assignee_id), actor.workflow, dt.datetime.now(dt.UTC)
            )
        return await writer.apply(moved.case, moved.event, actor)


@put("/v1/cases/{case_id:uuid}/priority", guards=[requires(*CASE_TEAM)], tags=["cases"])
async def set_priority(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[PriorityRequest]
) -> Case:
    """Set the priority by hand; it is no longer derived from the reports afterwards."""
    actor = actor_of(principal)
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        sla = await load_sla(db, principal.org_id)
        with case_errors():
            moved = change_priority(
                writer.case.state,
                data.priority,
                actor.workflow,
                dt.datetime.now(dt.UTC),
                reason=data.reason,
                sla=sla,
            )
        manual = PriorityReason("manual", data.reason or "set by a case manager", data.priority)
        return await writer.apply(
            moved.case, moved.event, actor, reasons=(manual,), priority_manual=True
        )


@post(
    "/v1/cases/{case_id:uuid}/reports",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
)
async def add_reports(
    principal: Caller,
    db: Db,
    state: State,
    case_id: FromPath[uuid.UUID],
    data: JSONBody[LinkReports],
) -> Case:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        with case_errors():
            return await link_reports(
                db, writer, actor_of(principal), data.report_ids, resources_of(state).taxonomy
            )


@post(
    "/v1/cases/{case_id:uuid}/reports/{report_id:uuid}/unlink",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
)
async def remove_report(
    principal: Caller,
    db: Db,
    state: State,
    case_id: FromPath[uuid.UUID],
    report_id: FromPath[uuid.UUID],
    version: Annotated[int, QueryParameter(ge=1)],
) -> Case:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, version)
        return await unlink(
            db, writer, actor_of(principal), report_id, resources_of(state).taxonomy
        )


@post(
    "/v1/cases/{case_id:uuid}/entities",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
)
async def add_entity(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[LinkEntity]
) -> Case:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await link_entity(db, writer, actor_of(principal), data.entity_id, data.role)


@post(
    "/v1/cases/{case_id:uuid}/persons",
    guards=[requires(*CASE_TEAM)],
    status_code=200,
    tags=["cases"],
)
async def add_person(
    principal: Caller, db: Db, case_id: FromPath[uuid.UUID], data: JSONBody[LinkPerson]
) -> Case:
    async with db.transaction():
        writer = await CaseWriter.lock(db, principal.org_id, case_id, data.version)
        return await link_person(db, writer, actor_of(principal), data.person_id)


ROUTES: list[Any] = [
    open_case,
    list_case_page,
    read_case,
    read_timeline,
    move_case,
    assign_case,
    set_priority,
    add_reports,
    remove_report,
    add_entity,
    add_person,
    *case_work.ROUTES,
    *case_export.ROUTES,
]
