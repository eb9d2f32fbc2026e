"""Staff login, logout and sessions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from cases.accounts import Email, StaffSession, StaffUser
from server.auth import ANY_STAFF, Caller, requires
from server.passwords import hash_token, new_token, verify_password
from server.problems import ProblemError
from server.resources import Db, resources_of
from storage.accounts import SessionRepository, UserRepository
from storage.errors import NotFound

__all__ = ["list_sessions", "login", "logout", "me", "revoke_session"]

# Lock an account for LOCK_FOR after LOCK_AFTER consecutive failures (issue 6 refines the policy).
LOCK_AFTER = 5
LOCK_FOR = timedelta(minutes=15)


class LoginRequest(msgspec.Struct, frozen=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginResponse(msgspec.Struct, frozen=True):
    token: str
    expires_at: datetime
    user: StaffUser


def _login_refused() -> ProblemError:
    # Same answer for unknown e-mail, wrong password and disabled account: no account enumeration.
    return ProblemError(401, "invalid-credentials", "E-mail or password is wrong")


@post(
    "/v1/auth/login",
    opt={"public": True, "exclude_from_auth": True},
    status_code=HTTP_200_OK,
    tags=["auth"],
    summary="Exchange e-mail and password for a bearer token",
)
async def login(
    data: JSONBody[LoginRequest], state: State, request: Request[Any, Any, Any]
) -> LoginResponse:
    res = resources_of(state)
    async with res.pool.acquire() as conn:
        users = UserRepository(conn)
        record = await users.login_record(data.email)
        now = datetime.now(UTC)
        if record is not None and record.locked_until is not None and record.locked_until > now:
            retry = max(1, int((record.locked_until - now).total_seconds()))
            raise ProblemError(
                429,
                "account-locked",
                "Too many failed logins",
                f"try again in {retry} seconds",
                headers={"Retry-After": str(retry)},
            )
        ok = verify_password(record.password_hash if record else None, data.password)
        if record is None or not ok or not record.is_active:
            if record is not None and not ok:
                await users.record_login_failure(record.id, LOCK_AFTER, LOCK_FOR)
            raise _login_refused()
        token = new_token()
        expires = now + timedelta(hours=res.settings.session_ttl_hours)
        agent = request.headers.get("user-agent", "")[:300] or None
        async with conn.transaction():
            await users.record_login_success(record.id)
            await SessionRepository(conn).add(
                record.org_id, record.id, hash_token(token), expires, agent
            )
            user = await users.get(record.org_id, record.id)
    return LoginResponse(token=token, expires_at=expires, user=user)


@post(
    "/v1/auth/logout",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Revoke the token used for this request",
)
async def logout(principal: Caller, db: Db) -> None:
    await SessionRepository(db).revoke(principal.org_id, principal.session_id)


@get("/v1/auth/me", guards=[requires(*ANY_STAFF)], tags=["auth"], summary="The caller's account")
async def me(principal: Caller, db: Db) -> StaffUser:
    return await UserRepository(db).get(principal.org_id, principal.user_id)


@get(
    "/v1/auth/sessions",
    guards=[requires(*ANY_STAFF)],
    tags=["auth"],
    summary="The caller's active sessions",
)
async def list_sessions(principal: Caller, db: Db) -> list[StaffSession]:
    return await SessionRepository(db).list_for_user(principal.org_id, principal.user_id)


@post(
    "/v1/auth/sessions/{session_id:uuid}/revoke",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Revoke one of the caller's sessions",
)
async def revoke_session(principal: Caller, db: Db, session_id: FromPath[uuid.UUID]) -> None:
    sessions = await SessionRepository(db).list_for_user(principal.org_id, principal.user_id)
    if all(s.id != session_id for s in sessions):
        raise NotFound("session", session_id)
    await SessionRepository(db).revoke(principal.org_id, session_id)
