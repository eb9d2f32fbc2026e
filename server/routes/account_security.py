"""Staff second factor (TOTP) and admin-issued one-time password reset links.

A TOTP secret is shown once at enrollment and stored sealed with the organisation's key; it takes
effect only once confirmed with a code. A reset link carries a random token whose sha256 alone is
stored; it expires, works once, and using it revokes every session of the account.
"""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import msgspec
import pyotp
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from cases.accounts import Role
from server.auth import ANY_STAFF, Caller, audit_staff, requires
from server.passwords import hash_password, hash_token, new_token, password_problem
from server.problems import FieldError, ProblemError
from server.resources import Db, resources_of
from storage.accounts import OrgRepository, SessionRepository, UserRepository
from storage.audit import record_staff
from storage.errors import NotFound
from storage.staff_security import PasswordResets, TotpAlreadyEnabled, TotpStore

__all__ = [
    "RESET_TTL",
    "TotpCode",
    "confirm_totp",
    "disable_totp",
    "enroll_totp",
    "issue_password_reset",
    "matching_step",
    "remove_user_totp",
    "reset_password",
    "totp_status",
]

RESET_TTL = timedelta(hours=24)
# One step either side: phones' clocks drift, and a code typed at the end of its window is fine.
_DRIFT_STEPS = 1

TotpCode = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{6}$")]


class TotpEnrollment(msgspec.Struct, frozen=True):
    secret: str
    otpauth_uri: str


class TotpStatus(msgspec.Struct, frozen=True):
    enabled: bool


class CodeRequest(msgspec.Struct, frozen=True):
    code: TotpCode


class ResetLink(msgspec.Struct, frozen=True):
    reset_url: str
    expires_at: datetime


class PasswordResetRequest(msgspec.Struct, frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=16, max_length=256)]
    new_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step whose code ``code`` is (within the allowed drift), or None."""
    totp = pyotp.TOTP(secret)
    at = time.time() if now is None else now
    for offset in range(-_DRIFT_STEPS, _DRIFT_STEPS + 1):
        moment = at + offset * totp.interval
        if secrets.compare_digest(totp.at(moment), code):
            return totp.timecode(datetime.fromtimestamp(moment, UTC))
    return None


def _wrong_code() -> ProblemError:
    return ProblemError(
        422,
        "invalid-totp",
        "The code is not valid",
        "use the current code from your authenticator app (each code works once)",
        errors=[FieldError("code", "wrong, expired or already used", "body")],
    )


@get("/v1/auth/totp", guards=[requires(*ANY_STAFF)], tags=["auth"], summary="Is TOTP enabled")
async def totp_status(principal: Caller, db: Db, state: State) -> TotpStatus:
    store = TotpStore(db, resources_of(state).keyring)
    return TotpStatus(enabled=await store.enabled(principal.org_id, principal.user_id))


@post(
    "/v1/auth/totp/enroll",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_201_CREATED,
    tags=["auth"],
    summary="Start TOTP enrollment: the secret is shown once; confirm it with a code",
)
async def enroll_totp(principal: Caller, db: Db, state: State) -> TotpEnrollment:
    secret = pyotp.random_base32()
    org = await OrgRepository(db).get(principal.org_id)
    try:
        async with db.transaction():
            await TotpStore(db, resources_of(state).keyring).enroll(
                principal.org_id, principal.user_id, secret
            )
            await audit_staff(db, principal, "staff.totp_enroll", "user", principal.user_id)
    except TotpAlreadyEnabled:
        raise ProblemError(
            409, "totp-already-enabled", "A second factor is already enabled", "disable it first"
        ) from None
    uri = pyotp.TOTP(secret).provisioning_uri(
        name=principal.email, issuer_name=f"Fairwatch ({org.slug})"
    )
    return TotpEnrollment(secret=secret, otpauth_uri=uri)


@post(
    "/v1/auth/totp/confirm",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Turn TOTP on by proving the authenticator app has the secret",
)
async def confirm_totp(
    principal: Caller, db: Db, state: State, data: JSONBody[CodeRequest]
) -> None:
    store = TotpStore(db, resources_of(state).keyring)
    async with db.transaction():
        current = await store.lock(principal.org_id, principal.user_id)
        if current is None or current.confirmed:
            raise ProblemError(
                409, "totp-not-pending", "No TOTP enrollment is waiting", "enroll first"
            )
        step = matching_step(current.secret, data.code)
        if step is None:
            raise _wrong_code()
        await store.confirm(principal.org_id, principal.user_id, step)
        await audit_staff(db, principal, "staff.totp_enable", "user", principal.user_id)


@post(
    "/v1/auth/totp/disable",
    guards=[requires(*ANY_STAFF)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Turn TOTP off (needs a current code)",
)
async def disable_totp(
    principal: Caller, db: Db, state: State, data: JSONBody[CodeRequest]
) -> None:
    store = TotpStore(db, resources_of(state).keyring)
    async with db.transaction():
        current = await store.lock(principal.org_id, principal.user_id)
        if current is None:
            raise NotFound("second factor", principal.user_id)
        step = matching_step(current.secret, data.code)
        if step is None or not await store.use_step(principal.org_id, principal.user_id, step):
            raise _wrong_code()
        await store.remove(principal.org_id, principal.user_id)
        await audit_staff(db, principal, "staff.totp_disable", "user", principal.user_id)


@delete(
    "/v1/users/{user_id:uuid}/totp",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_204_NO_CONTENT,
    tags=["users"],
    summary="Remove a staff member's second factor (a lost phone); they can enroll again",
)
async def remove_user_totp(
    principal: Caller, db: Db, state: State, user_id: FromPath[uuid.UUID]
) -> None:
    async with db.transaction():
        await TotpStore(db, resources_of(state).keyring).remove(principal.org_id, user_id)
        await audit_staff(db, principal, "staff.totp_remove", "user", user_id)


@post(
    "/v1/users/{user_id:uuid}/password-reset",
    guards=[requires(Role.ORG_ADMIN)],
    status_code=HTTP_201_CREATED,
    tags=["users"],
    summary="Issue a one-time password reset link (24 hours; voids earlier links)",
)
async def issue_password_reset(
    principal: Caller, db: Db, request: Request[Any, Any, Any], user_id: FromPath[uuid.UUID]
) -> ResetLink:
    token = new_token()
    expires = datetime.now(UTC) + RESET_TTL
    async with db.transaction():
        user = await UserRepository(db).get(principal.org_id, user_id)
        await PasswordResets(db).issue(
            principal.org_id, user.id, principal.user_id, hash_token(token), expires
        )
        await audit_staff(db, principal, "staff.password_reset_issue", "user", user.id)
    # The token travels in the fragment, which browsers never send to servers or proxies' logs.
    base = str(request.base_url).rstrip("/")
    return ResetLink(reset_url=f"{base}/v1/auth/password-reset#token={token}", expires_at=expires)


@post(
    "/v1/auth/password-reset",
    opt={"public": True, "exclude_from_auth": True},
    status_code=HTTP_204_NO_CONTENT,
    tags=["auth"],
    summary="Set a new password with a one-time reset token; every session is signed out",
)
async def reset_password(data: JSONBody[PasswordResetRequest], state: State) -> None:
    if (reason := password_problem(data.new_password)) is not None:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            f"new_password: {reason}",
            errors=[FieldError("new_password", reason, "body")],
        )
    password_hash = hash_password(data.new_password)
    async with resources_of(state).pool.acquire() as conn, conn.transaction():
        resets = PasswordResets(conn)
        claim = await resets.claim(hash_token(data.token))
        if claim is None or not await resets.set_password(
            claim.org_id, claim.user_id, password_hash
        ):
            raise ProblemError(
                400,
                "invalid-reset-token",
                "The reset link is not valid",
                "it is unknown, expired or already used; ask an administrator for a new one",
            )
        await SessionRepository(conn).revoke_all(claim.org_id, claim.user_id)
        await record_staff(
            conn, claim.org_id, claim.user_id, "staff.password_reset", "user", claim.user_id
        )
