"""Account repositories against the real database: org scoping and constraint errors."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from cases.accounts import Role
from storage.accounts import OrgRepository, SessionRepository, UserRepository
from storage.errors import AlreadyExists, NotFound

pytestmark = pytest.mark.db


async def test_user_of_other_org_is_not_found(db: asyncpg.Connection) -> None:
    orgs, users = OrgRepository(db), UserRepository(db)
    a = await orgs.add("org-a", "A")
    b = await orgs.add("org-b", "B")
    user = await users.add(a.id, "Amina@Example.org", "Amina", Role.CASE_MANAGER, "hash")
    assert user.email == "amina@example.org"
    assert (await users.get(a.id, user.id)).id == user.id
    with pytest.raises(NotFound):
        await users.get(b.id, user.id)
    assert await users.list(b.id, None, 10) == []


async def test_duplicate_email_and_slug_become_domain_errors(db: asyncpg.Connection) -> None:
    orgs, users = OrgRepository(db), UserRepository(db)
    org = await orgs.add("org-dup", "Dup")
    await users.add(org.id, "x@example.org", "X", Role.ANALYST, "hash")
    # Each refused write runs in a savepoint, as a use case would, so the session goes on.
    with pytest.raises(AlreadyExists) as info:
        async with db.transaction():
            await users.add(org.id, "X@example.org", "X2", Role.ANALYST, "hash")
    assert info.value.field == "email"
    with pytest.raises(AlreadyExists) as info:
        async with db.transaction():
            await orgs.add("org-dup", "Again")
    assert info.value.field == "slug"
    assert len(await users.list(org.id, None, 10)) == 1


async def test_sessions_expire_and_revoke(db: asyncpg.Connection) -> None:
    org = await OrgRepository(db).add("org-s", "S")
    user = await UserRepository(db).add(org.id, "s@example.org", "S", Role.ORG_ADMIN, "hash")
    sessions = SessionRepository(db)
    live = await sessions.add(
        org.id, user.id, b"live-token-hash", datetime.now(UTC) + timedelta(hours=1), None
    )
    await sessions.add(
        org.id, user.id, b"old-token-hash", datetime.now(UTC) - timedelta(seconds=1), None
    )
    resolved = await sessions.resolve(b"live-token-hash")
    assert resolved is not None
    assert resolved.user_id == user.id
    assert resolved.org_id == org.id
    assert await sessions.resolve(b"old-token-hash") is None
    assert await sessions.resolve(b"unknown") is None
    assert not await sessions.revoke(uuid.uuid4(), live.id)  # another org cannot revoke it
    assert await sessions.revoke(org.id, live.id)
    assert await sessions.resolve(b"live-token-hash") is None
