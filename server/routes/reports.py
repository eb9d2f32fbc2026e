"""Reports as the case team sees them, and the review queue of amendment conflicts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from cases.accounts import Role
from cases.classification import ROLE_CLASSES, FieldClass, view_for
from server.auth import Caller, audit_staff, requires
from server.pagination import Page, decode_page_token, page_of
from server.problems import ProblemError
from server.resources import Db, resources_of
from storage.conflicts import (
    Conflict,
    ConflictAlreadyResolved,
    InvalidResolution,
    Resolution,
    list_conflicts,
    resolve_conflict,
)
from storage.db import KEYSET_START
from storage.queries import Q
from storage.reports import ReportStore
from storage.retention import analyst_cell_resolution

__all__ = ["get_report", "list_report_conflicts", "list_report_summaries", "resolve"]

_CASE_TEAM = (Role.ORG_ADMIN, Role.CASE_MANAGER)


class ReportSummary(msgspec.Struct, frozen=True):
    id: uuid.UUID
    monitor_id: uuid.UUID
    version: int
    occurred_at: datetime
    categories: list[str]
    received_at: datetime
    time_flags: list[str]
    status: str
    deleted: bool


class AttachmentView(msgspec.Struct, frozen=True):
    sha256: str
    size_bytes: int
    media_type: str
    sensitive: bool
    arrived: bool
    erased: bool = False
    """Erased by retention with its redacted report: neither arrived nor awaited."""


class ResolveRequest(msgspec.Struct, frozen=True):
    resolution: Resolution
    value: Any = None


class Resolved(msgspec.Struct, frozen=True):
    conflict_id: uuid.UUID
    report_version: int


@get("/v1/reports", guards=[requires(*_CASE_TEAM)], tags=["reports"], summary="List reports")
async def list_report_summaries(
    principal: Caller,
    db: Db,
    monitor_id: FromQuery[uuid.UUID | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[ReportSummary]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    start = after or KEYSET_START
    rows = await db.fetch(Q.list_reports, principal.org_id, monitor_id, *start, limit + 1)
    items = [msgspec.convert(dict(r), ReportSummary) for r in rows]
    return page_of(items, limit, lambda x: (x.received_at, x.id))


@get(
    "/v1/reports/{report_id:uuid}",
    guards=[requires(*_CASE_TEAM)],
    tags=["reports"],
    summary="One report, as the caller's role may see it (reads of sensitive fields are audited)",
)
async def get_report(
    principal: Caller, db: Db, state: State, report_id: FromPath[uuid.UUID]
) -> dict[str, Any]:
    sees_sensitive = FieldClass.SENSITIVE in ROLE_CLASSES[principal.role]
    async with db.transaction():
        found = await ReportStore(db, resources_of(state).keyring).get(principal.org_id, report_id)
        if sees_sensitive:
            await audit_staff(
                db,
                principal,
                "report.read_sensitive",
                "report",
                report_id,
            )
        attachments = [
            msgspec.convert(dict(r), AttachmentView)
            for r in await db.fetch(Q.report_attachment_list, principal.org_id, report_id)
        ]
    view = {**msgspec.to_builtins(found), "attachments": msgspec.to_builtins(attachments)}
    resolution = await analyst_cell_resolution(db, principal.org_id)
    return view_for(principal.role, view, cell_resolution=resolution)


@get(
    "/v1/conflicts",
    guards=[requires(*_CASE_TEAM)],
    tags=["reports"],
    summary="The review queue: amendments whose fields conflicted with the server's",
)
async def list_report_conflicts(
    principal: Caller,
    db: Db,
    state: State,
    include_resolved: FromQuery[bool] = False,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[Conflict]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    reveal = FieldClass.SENSITIVE in ROLE_CLASSES[principal.role]
    items = await list_conflicts(
        db,
        resources_of(state).keyring,
        principal.org_id,
        include_resolved=include_resolved,
        after=after,
        limit=limit + 1,
        reveal_sensitive=reveal,
    )
    return page_of(items, limit, lambda x: (x.created_at, x.id))


@post(
    "/v1/conflicts/{conflict_id:uuid}/resolve",
    guards=[requires(*_CASE_TEAM)],
    status_code=200,
    tags=["reports"],
    summary="Resolve a conflict explicitly: keep the server value, take the device's, or set one",
)
async def resolve(
    principal: Caller,
    db: Db,
    state: State,
    conflict_id: FromPath[uuid.UUID],
    data: JSONBody[ResolveRequest],
) -> Resolved:
    try:
        async with db.transaction():
            version = await resolve_conflict(
                db,
                resources_of(state).keyring,
                org_id=principal.org_id,
                conflict_id=conflict_id,
                resolution=data.resolution,
                value=data.value,
                user_id=principal.user_id,
            )
            await audit_staff(
                db,
                principal,
                "conflict.resolve",
                "conflict",
                conflict_id,
                resolution=data.resolution.value,
            )
    except ConflictAlreadyResolved:
        raise ProblemError(409, "already-resolved", "The conflict is already resolved") from None
    except InvalidResolution as exc:
        raise ProblemError(422, "validation", "The value is not valid here", str(exc)) from None
    return Resolved(conflict_id=conflict_id, report_version=version)
