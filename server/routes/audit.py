"""The audit log for org admins: read it page by page (keyset on seq) and verify its chain.

``ROUTES`` also registers the other protection routes (second factor, password reset links,
retention and privacy settings), so server/app.py includes this area with one line.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_200_OK

from cases.accounts import Role
from server.auth import Caller, audit_staff, requires
from server.resources import Db
from server.retention import ROUTES as RETENTION_ROUTES
from server.routes import account_security
from storage.audit import AuditRecord, list_entries, verify_chain

__all__ = ["ROUTES", "AuditPage", "AuditView", "audit_staff", "list_audit", "verify_audit"]

MAX_PAGE = 500


class AuditView(msgspec.Struct, frozen=True):
    seq: int
    at: datetime
    actor_kind: str
    actor_id: str
    action: str
    object_kind: str | None
    object_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditView]
    next_after_seq: int | None = None
    """Pass as ``after_seq`` for the next page; absent on the last page."""


class ChainVerification(msgspec.Struct, frozen=True):
    ok: bool
    entries_checked: int
    head_seq: int
    problem: str | None = None
    first_bad_seq: int | None = None
    explanation: str | None = None


def _view(entry: AuditRecord) -> AuditView:
    return AuditView(
        seq=entry.seq,
        at=entry.at,
        actor_kind=entry.actor_kind.value,
        actor_id=entry.actor_id,
        action=entry.action,
        object_kind=entry.object_kind,
        object_id=entry.object_id,
        detail=entry.detail,
        prev_hash=entry.prev_hash.hex(),
        hash=entry.hash.hex(),
    )


@get(
    "/v1/audit",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["audit"],
    summary="Your organisation's audit log in order, after a sequence number",
)
async def list_audit(
    principal: Caller,
    db: Db,
    after_seq: Annotated[int, QueryParameter(ge=0, le=2**62)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
) -> AuditPage:
    entries = await list_entries(db, principal.org_id, after_seq, limit + 1)
    more = len(entries) > limit
    entries = entries[:limit]
    return AuditPage(
        items=[_view(e) for e in entries],
        next_after_seq=entries[-1].seq if more else None,
    )


@post(
    "/v1/audit/verify",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_200_OK,
    tags=["audit"],
    summary="Recompute your organisation's hash chain; the run is itself recorded",
)
async def verify_audit(principal: Caller, db: Db) -> ChainVerification:
    report = await verify_chain(db, principal.org_id)
    result = report.orgs[0]
    verdict = ChainVerification(
        ok=result.ok,
        entries_checked=result.entries_checked,
        head_seq=result.head_seq,
        problem=result.problem.value if result.problem else None,
        first_bad_seq=result.first_bad_seq,
        explanation=result.explanation,
    )
    await audit_staff(
        db,
        principal,
        "audit.verify",
        "org",
        principal.org_id,
        ok=result.ok,
        entries_checked=result.entries_checked,
        problem=verdict.problem,
    )
    return verdict


ROUTES: list[Any] = [
    list_audit,
    verify_audit,
    account_security.totp_status,
    account_security.enroll_totp,
    account_security.confirm_totp,
    account_security.disable_totp,
    account_security.remove_user_totp,
    account_security.issue_password_reset,
    account_security.reset_password,
    *RETENTION_ROUTES,
]
