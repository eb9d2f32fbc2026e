"""Staff account protection at rest: sealed TOTP secrets, one-time reset tokens, login backoff.

The TOTP secret is sealed with the organisation's data key (a database dump does not let anyone
mint codes); reset tokens are stored as sha256 only. Codes and tokens are checked here, against
the database, so replay (the same TOTP step twice) and reuse (a reset token twice) are refused by
single atomic statements rather than by read-then-write races.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from storage.db import Conn
from storage.errors import NotFound, StorageError
from storage.keyring import Keyring
from storage.queries import Q

__all__ = [
    "LoginFailure",
    "PasswordResets",
    "ResetClaim",
    "TotpAlreadyEnabled",
    "TotpState",
    "TotpStore",
    "record_login_failure",
]


class TotpAlreadyEnabled(StorageError):
    """A confirmed second factor exists; disable it before enrolling a new one."""


class TotpState(msgspec.Struct, frozen=True):
    secret: str
    confirmed: bool
    last_step: int


class LoginFailure(msgspec.Struct, frozen=True):
    failed_logins: int
    locked_until: datetime | None


class ResetClaim(msgspec.Struct, frozen=True):
    org_id: uuid.UUID
    user_id: uuid.UUID


def _context(user_id: uuid.UUID) -> bytes:
    return f"staff_totp:{user_id}".encode()


class TotpStore:
    """A staff member's TOTP secret, sealed under their organisation's key."""

    def __init__(self, conn: Conn, keyring: Keyring) -> None:
        self._conn = conn
        self._keyring = keyring

    async def enroll(self, org_id: uuid.UUID, user_id: uuid.UUID, secret: str) -> None:
        sealed = await self._keyring.encrypt(self._conn, org_id, secret.encode(), _context(user_id))
        stored = await self._conn.fetchval(Q.upsert_pending_totp, user_id, org_id, sealed)
        if stored is None:
            raise TotpAlreadyEnabled("a second factor is already enabled")

    async def lock(self, org_id: uuid.UUID, user_id: uuid.UUID) -> TotpState | None:
        """The user's TOTP state, locked for this transaction; None when not enrolled."""
        row = await self._conn.fetchrow(Q.lock_totp, org_id, user_id)
        if row is None:
            return None
        secret = await self._keyring.decrypt(
            self._conn, org_id, row["sealed_secret"], _context(user_id)
        )
        return TotpState(secret.decode(), row["confirmed_at"] is not None, row["last_step"])

    async def enabled(self, org_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        found = await self._conn.fetchval(Q.totp_enabled, org_id, user_id)
        return bool(found)

    async def confirm(self, org_id: uuid.UUID, user_id: uuid.UUID, step: int) -> None:
        await self._conn.execute(Q.confirm_totp, org_id, user_id, step)

    async def use_step(self, org_id: uuid.UUID, user_id: uuid.UUID, step: int) -> bool:
        """Record ``step`` as used; False if it (or a later one) was used already."""
        return await self._conn.fetchval(Q.use_totp_step, org_id, user_id, step) is not None

    async def remove(self, org_id: uuid.UUID, user_id: uuid.UUID) -> None:
        if await self._conn.fetchval(Q.delete_totp, org_id, user_id) is None:
            raise NotFound("second factor", user_id)


async def record_login_failure(
    conn: Conn, user_id: uuid.UUID, lock_after: int, base_seconds: float, max_seconds: float
) -> LoginFailure:
    """Count a failed login; from the ``lock_after``-th in a row, lock with doubling duration."""
    row = await conn.fetchrow(
        Q.record_login_failure_backoff, user_id, lock_after, base_seconds, max_seconds
    )
    if row is None:
        raise NotFound("user", user_id)
    return LoginFailure(row["failed_logins"], row["locked_until"])


class PasswordResets:
    """One-time reset tokens: stored hashed, expiring, single use, newest voids older ones."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def issue(
        self,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        created_by: uuid.UUID,
        token_hash: bytes,
        expires_at: datetime,
    ) -> None:
        async with self._conn.transaction():
            await self._conn.execute(Q.void_password_resets, user_id)
            await self._conn.execute(
                Q.insert_password_reset, token_hash, org_id, user_id, created_by, expires_at
            )

    async def claim(self, token_hash: bytes) -> ResetClaim | None:
        """Mark the token used and say whose it is; None if unknown, used or expired."""
        row = await self._conn.fetchrow(Q.claim_password_reset, token_hash)
        return None if row is None else ResetClaim(row["org_id"], row["user_id"])

    async def set_password(self, org_id: uuid.UUID, user_id: uuid.UUID, password_hash: str) -> bool:
        """Set the new password and clear any lockout; False if the account is deactivated."""
        done = await self._conn.fetchval(Q.set_password_after_reset, org_id, user_id, password_hash)
        return done is not None
