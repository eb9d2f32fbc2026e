"""Staff accounts of the caller's organisation, managed by its org admins."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec
from litestar import get, patch, post
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from cases.accounts import Email, Org, Role, StaffUser
from server.auth import ANY_STAFF, Caller, audit_staff, requires
from server.pagination import Page, decode_page_token, page_of
from server.passwords import hash_password, password_problem
from server.problems import FieldError, ProblemError
from server.resources import Db
from storage.accounts import OrgRepository, SessionRepository, UserRepository

__all__ = ["create_user", "get_org", "get_user", "list_users", "update_user"]


class NewUser(msgspec.Struct, frozen=True):
    email: Email
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    role: Role
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class UserUpdate(msgspec.Struct, frozen=True):
    is_active: bool


def _weak_password(reason: str) -> ProblemError:
    return ProblemError(
        422,
        "validation",
        "The request has invalid fields",
        f"password: {reason}",
        errors=[FieldError("password", reason, "body")],
    )


@get("/v1/org", guards=[requires(*ANY_STAFF)], tags=["organisation"], summary="Your organisation")
async def get_org(principal: Caller, db: Db) -> Org:
    return await OrgRepository(db).get(principal.org_id)


@get("/v1/users", guards=[requires(Role.ORG_ADMIN)], tags=["users"], summary="List staff accounts")
async def list_users(
    principal: Caller,
    db: Db,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[StaffUser]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    users = await UserRepository(db).list(principal.org_id, after, limit + 1)
    return page_of(users, limit, lambda x: (x.created_at, x.id))


@post(
    "/v1/users",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_201_CREATED,
    tags=["users"],
    summary="Create a staff account in your organisation",
)
async def create_user(principal: Caller, db: Db, data: JSONBody[NewUser]) -> StaffUser:
    if (reason := password_problem(data.password)) is not None:
        raise _weak_password(reason)
    async with db.transaction():
        user = await UserRepository(db).add(
            principal.org_id, data.email, data.display_name, data.role, hash_password(data.password)
        )
        await audit_staff(db, principal, "staff.create", "user", user.id, role=user.role.value)
    return user


@get("/v1/users/{user_id:uuid}", guards=[requires(Role.ORG_ADMIN)], tags=["users"])
async def get_user(principal: Caller, db: Db, user_id: FromPath[uuid.UUID]) -> StaffUser:
    return await UserRepository(db).get(principal.org_id, user_id)


@patch("/v1/users/{user_id:uuid}", guards=[requires(Role.ORG_ADMIN)], tags=["users"])
async def update_user(
    principal: Caller, db: Db, user_id: FromPath[uuid.UUID], data: JSONBody[UserUpdate]
) -> StaffUser:
    """Deactivate (or reactivate) an account; deactivation revokes its sessions at once."""
    async with db.transaction():
        user = await UserRepository(db).set_active(principal.org_id, user_id, data.is_active)
        if not data.is_active:
            await SessionRepository(db).revoke_all(principal.org_id, user_id)
        action = "staff.reactivate" if data.is_active else "staff.deactivate"
        await audit_staff(db, principal, action, "user", user_id)
    return user
