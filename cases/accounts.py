"""Organisations and staff accounts: who works in Fairwatch and with which role."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated

import msgspec

__all__ = ["Email", "Org", "OrgSlug", "Role", "StaffSession", "StaffUser"]

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
]
OrgSlug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]


class Role(StrEnum):
    """Staff roles. Monitors are not staff: they act through enrolled devices."""

    ORG_ADMIN = "org_admin"
    CASE_MANAGER = "case_manager"
    ANALYST = "analyst"


class Org(msgspec.Struct, frozen=True):
    id: uuid.UUID
    slug: str
    name: str
    created_at: datetime


class StaffUser(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    email: str
    display_name: str
    role: Role
    is_active: bool
    version: int
    created_at: datetime


class StaffSession(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    revoked_at: datetime | None
    user_agent: str | None
