"""Repositories for organisations, staff users and their sessions.

Every method that reads tenant data takes the caller's ``org_id``: an object of another
organisation is simply not found, which is what the API must answer (404, never 403).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
import msgspec

from cases.accounts import Org, Role, StaffSession, StaffUser
from storage.db import KEYSET_START, Conn, from_row
from storage.errors import AlreadyExists, NotFound
from storage.queries import Q

__all__ = ["LoginRecord", "OrgRepository", "ResolvedSession", "SessionRepository", "UserRepository"]


class LoginRecord(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    password_hash: str
    is_active: bool
    failed_logins: int
    locked_until: datetime | None


class ResolvedSession(msgspec.Struct, frozen=True):
    session_id: uuid.UUID
    user_id: uuid.UUID
    org_id: uuid.UUID
    role: Role
    email: str


class OrgRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(self, slug: str, name: str) -> Org:
        try:
            row = await self._conn.fetchrow(Q.insert_org, slug, name)
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("organisation", "slug") from None
        assert row is not None
        return from_row(Org, row)

    async def get(self, org_id: uuid.UUID) -> Org:
        row = await self._conn.fetchrow(Q.get_org, org_id)
        if row is None:
            raise NotFound("organisation", org_id)
        return from_row(Org, row)

    async def get_by_slug(self, slug: str) -> Org | None:
        row = await self._conn.fetchrow(Q.get_org_by_slug, slug)
        return None if row is None else from_row(Org, row)

    async def count(self) -> int:
        n: int = await self._conn.fetchval(Q.count_orgs)
        return n


class UserRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self, org_id: uuid.UUID, email: str, display_name: str, role: Role, password_hash: str
    ) -> StaffUser:
        try:
            row = await self._conn.fetchrow(
                Q.insert_user, org_id, email.lower(), display_name, role.value, password_hash
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("user", "email") from None
        except asyncpg.ForeignKeyViolationError:
            raise NotFound("organisation", org_id) from None
        assert row is not None
        return from_row(StaffUser, row)

    async def get(self, org_id: uuid.UUID, user_id: uuid.UUID) -> StaffUser:
        row = await self._conn.fetchrow(Q.get_user, org_id, user_id)
        if row is None:
            raise NotFound("user", user_id)
        return from_row(StaffUser, row)

    async def list(
        self, org_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[StaffUser]:
        created, last_id = after or KEYSET_START
        rows = await self._conn.fetch(Q.list_users, org_id, created, last_id, limit)
        return [from_row(StaffUser, r) for r in rows]

    async def set_active(self, org_id: uuid.UUID, user_id: uuid.UUID, active: bool) -> StaffUser:
        row = await self._conn.fetchrow(Q.set_user_active, org_id, user_id, active)
        if row is None:
            raise NotFound("user", user_id)
        return from_row(StaffUser, row)

    async def login_record(self, email: str) -> LoginRecord | None:
        row = await self._conn.fetchrow(Q.get_login, email.lower())
        return None if row is None else from_row(LoginRecord, row)

    async def record_login_failure(
        self, user_id: uuid.UUID, lock_after: int, lock_for: timedelta
    ) -> None:
        await self._conn.execute(Q.record_login_failure, user_id, lock_after, lock_for)

    async def record_login_success(self, user_id: uuid.UUID) -> None:
        await self._conn.execute(Q.record_login_success, user_id)

    async def update_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._conn.execute(Q.update_password_hash, user_id, password_hash)


class SessionRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self,
        org_id: uuid.UUID,
        user_id: uuid.UUID,
        token_hash: bytes,
        expires_at: datetime,
        user_agent: str | None,
    ) -> StaffSession:
        row = await self._conn.fetchrow(
            Q.insert_session, org_id, user_id, token_hash, expires_at, user_agent
        )
        assert row is not None
        return from_row(StaffSession, row)

    async def resolve(self, token_hash: bytes) -> ResolvedSession | None:
        row = await self._conn.fetchrow(Q.resolve_session, token_hash)
        return None if row is None else from_row(ResolvedSession, row)

    async def revoke(self, org_id: uuid.UUID, session_id: uuid.UUID) -> bool:
        status: str = await self._conn.execute(Q.revoke_session, org_id, session_id)
        return status.endswith(" 1")

    async def revoke_all(self, org_id: uuid.UUID, user_id: uuid.UUID) -> int:
        status: str = await self._conn.execute(Q.revoke_user_sessions, org_id, user_id)
        return int(status.rsplit(" ", 1)[1])

    async def list_for_user(self, org_id: uuid.UUID, user_id: uuid.UUID) -> list[StaffSession]:
        rows = await self._conn.fetch(Q.list_user_sessions, org_id, user_id)
        return [from_row(StaffSession, r) for r in rows]

    async def delete_expired(self) -> int:
        status: str = await self._conn.execute(Q.delete_expired_sessions)
        return int(status.rsplit(" ", 1)[1])
