"""Staff login (password, then a TOTP code once enabled; exponential lockout), logout, sessions."""

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
from server.routes.account_security import TotpCode, matching_step
from storage.accounts import LoginRecord, SessionRepository, UserRepository
from storage.audit import record_staff
from storage.db import Conn
from storage.errors import NotFound
from storage.keyring import Keyring
from storage.staff_security import TotpStore, record_login_failure

__all__ = ["list_sessions", "login", "logout", "me", "revoke_session"]

# From the LOCK_AFTER-th consecutive failure on, each failure locks the account for twice as long
# as the one before: 1 min, 2, 4 ... capped at a day. Online guessing stays hopeless while a user
# who mistyped a few times waits a minute, not a quarter of an hour.
LOCK_AFTER = 5
LOCK_BASE = timedelta(minutes=1)
LOCK_MAX = timedelta(days=1)


class LoginRequest(msgspec.Struct, frozen=True):
    email: Email
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    totp: TotpCode | None = None
    """The current code from the authenticator app, required once TOTP is enabled."""


class LoginResponse(msgspec.Struct, frozen=True):
    token: str
    expires_at: datetime
    user: StaffUser


def _login_refused() -> ProblemError:
    # Same answer for unknown e-mail, wrong password and disabled account: no account enumeration.
    return ProblemError(401, "invalid-credentials", "E-mail or password is wrong")


async def _failed(conn: Conn, record_: LoginRecord, reason: str) -> None:
    failure = await record_login_failure(
        conn, record_.id, LOCK_AFTER, LOCK_BASE.total_seconds(), LOCK_MAX.total_seconds()
    )
    locked = failure.locked_until.isoformat() if failure.locked_until else None
    await _audit_login(conn, record_, "staff.login_failed", reason=reason, locked_until=locked)


async def _audit_login(conn: Conn, record_: LoginRecord, action: str, **detail: Any) -> None:
    present = {k: v for k, v in detail.items() if v is not None}
    await record_staff(conn, record_.org_id, record_.id, action, "user", record_.id, **present)


@post(
    "/v1/auth/login",
    opt={"public": True, "exclude_from_auth": True},
    status_code=HTTP_200_OK,
    tags=["auth"],
    summary="Exchange e-mail, password (and TOTP code, once enabled) for a bearer token",
)
async def login(
    data: JSONBody[LoginRequest], state: State, request: Request[Any, Any, Any]
) -> LoginResponse:
    res = resources_of(state)
    async with res.pool.acquire() as conn:
        users = UserRepository(conn)
        record_ = await users.login_record(data.email)
        now = datetime.now(UTC)
        if record_ is not None and record_.locked_until is not None and record_.locked_until > now:
            retry = max(1, int((record_.locked_until - now).total_seconds()) + 1)
            raise ProblemError(
                429,
                "account-locked",
                "Too many failed logins",
                f"try again in {retry} seconds",
                headers={"Retry-After": str(retry)},
            )
        ok = verify_password(record_.password_hash if record_ else None, data.password)
        if record_ is None or not ok or not record_.is_active:
            if record_ is not None and not ok:
                await _failed(conn, record_, "password")
            raise _login_refused()
        totp_problem = await _check_totp(conn, res.keyring, record_, data.totp)
        if totp_problem == "missing":
            # The password was right; say what is missing (the client shows a code field).
            raise ProblemError(
                401, "totp-required", "A code from your authenticator app is required"
            )
        if totp_problem is not None:
            await _failed(conn, record_, "totp")
            raise ProblemError(401, "invalid-totp", "The code is not valid")
        token = new_token()
        expires = now + timedelta(hours=res.settings.session_ttl_hours)
        agent = request.headers.get("user-agent", "")[:300] or None
        async with conn.transaction():
            await users.record_login_success(record_.id)
            session = await SessionRepository(conn).add(
                record_.org_id, record_.id, hash_token(token), expires, agent
            )
            await _audit_login(conn, record_, "staff.login", session_id=str(session.id))
            user = await users.get(record_.org_id, record_.id)
    return LoginResponse(token=token, expires_at=expires, user=user)


async def _check_totp(
    conn: Conn, keyring: Keyring, record_: LoginRecord, code: str | None
) -> str | None:
    """None when no code is needed or the code is good; else "missing" or "wrong"."""
    store = TotpStore(conn, keyring)
    async with conn.transaction():
        current = await store.lock(record_.org_id, record_.id)
        if current is None or not current.confirmed:
            return None
        if code is None:
            return "missing"
        step = matching_step(current.secret, code)
        if step is None or not await store.use_step(record_.org_id, record_.id, step):
            return "wrong"
    return None


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
