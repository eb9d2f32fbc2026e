"""Who is calling, and what they may do: bearer-token authentication and role guards.

Every route either opts out of authentication explicitly (``opt={"public": True}``) or carries a
``requires(...)`` guard; a test walks the route table so a new route cannot forget to declare one.
The resolved ``Principal`` carries the caller's organisation, and every query is scoped by it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from cases.accounts import Role
from server.passwords import hash_token
from server.problems import ProblemError
from server.resources import resources_of
from storage.accounts import SessionRepository
from storage.audit import record_staff
from storage.db import Conn
from storage.devices import DeviceAuth, DeviceRepository

__all__ = [
    "ANY_STAFF",
    "DEVICE_TOKEN_PREFIX",
    "AuthMiddleware",
    "Caller",
    "DeviceCaller",
    "DevicePrincipal",
    "Guard",
    "Principal",
    "audit_staff",
    "device_of",
    "principal_of",
    "requires",
    "requires_device",
]

PUBLIC = "public"
# Device credentials carry a prefix so one lookup finds the right table (and so a leaked one is
# recognisable in a secret scanner).
DEVICE_TOKEN_PREFIX = "fwd_"  # noqa: S105 - a prefix, not a secret


class Principal(msgspec.Struct, frozen=True):
    """An authenticated staff member acting within one organisation."""

    user_id: uuid.UUID
    org_id: uuid.UUID
    role: Role
    session_id: uuid.UUID
    email: str


class DevicePrincipal(msgspec.Struct, frozen=True):
    """An enrolled, unrevoked device acting for one monitor."""

    device: DeviceAuth

    @property
    def org_id(self) -> uuid.UUID:
        return self.device.org_id


def _wipe(device: DeviceAuth) -> ProblemError:
    revoked = device.revoked_at.isoformat() if device.revoked_at else None
    return ProblemError(
        403,
        "device-revoked",
        "This device is no longer enrolled",
        "erase all local data, including the outbox, and forget the credential",
        wipe=True,
        reason=device.revoked_reason or "device_revoked",
        revoked_at=revoked,
    )


def _bearer(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    token = token.strip()
    # Our tokens are 43 url-safe characters; refuse anything wildly different before hashing.
    return token if 16 <= len(token) <= 256 else None


class AuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = _bearer(connection)
        if token is None:
            raise NotAuthorizedException()
        res = resources_of(connection.app.state)
        if token.startswith(DEVICE_TOKEN_PREFIX):
            async with res.pool.acquire() as conn:
                device = await DeviceRepository(conn).resolve(hash_token(token))
            if device is None:
                raise NotAuthorizedException(detail="the device credential is unknown")
            if device.revoked_at is not None or not device.monitor_active:
                raise _wipe(device)
            return AuthenticationResult(user=DevicePrincipal(device), auth=token)
        async with res.pool.acquire() as conn:
            resolved = await SessionRepository(conn).resolve(hash_token(token))
        if resolved is None:
            raise NotAuthorizedException(detail="the token is unknown, expired or revoked")
        principal = Principal(
            user_id=resolved.user_id,
            org_id=resolved.org_id,
            role=resolved.role,
            session_id=resolved.session_id,
            email=resolved.email,
        )
        return AuthenticationResult(user=principal, auth=token)


# Guards are coroutines: Litestar runs a plain-function guard in a worker thread, a thread hop
# on every request for what is an isinstance check.
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def requires(*roles: Role) -> Guard:
    """A guard admitting staff whose role is one of ``roles``."""
    allowed = frozenset(roles)

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.user
        if not isinstance(principal, Principal):
            raise NotAuthorizedException()
        if principal.role not in allowed:
            raise PermissionDeniedException(
                detail=f"requires role {' or '.join(sorted(r.value for r in allowed))}"
            )

    guard.roles = allowed  # type: ignore[attr-defined]  # read by the route-policy test
    return guard


def requires_device() -> Guard:
    """A guard admitting enrolled devices only (the sync endpoints)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not isinstance(connection.user, DevicePrincipal):
            raise PermissionDeniedException(detail="only an enrolled device may call this")

    guard.roles = frozenset({"device"})  # type: ignore[attr-defined]  # read by the policy test
    return guard


def device_of(connection: ASGIConnection[Any, Any, Any, Any]) -> DeviceAuth:
    principal = connection.user
    if not isinstance(principal, DevicePrincipal):
        raise NotAuthorizedException()
    return principal.device


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal = connection.user
    if not isinstance(principal, Principal):
        raise NotAuthorizedException()
    return principal


ANY_STAFF = (Role.ORG_ADMIN, Role.CASE_MANAGER, Role.ANALYST)

# A route parameter ``principal: Caller`` receives the authenticated staff member,
# ``device: DeviceCaller`` the authenticated device.
Caller = NamedDependency[Principal]
DeviceCaller = NamedDependency[DeviceAuth]


async def audit_staff(
    db: Conn,
    principal: Principal,
    action: str,
    kind: str,
    object_id: object = None,
    **detail: Any,
) -> None:
    """Audit an action of the signed-in staff member, in the caller's transaction."""
    await record_staff(db, principal.org_id, principal.user_id, action, kind, object_id, **detail)
