"""Monitors, their one-time enrollment codes and enrolled devices (with push ledger state)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from storage.db import KEYSET_START, Conn, from_row
from storage.errors import NotFound
from storage.queries import Q

__all__ = [
    "DeviceAuth",
    "DeviceRepository",
    "DeviceStatus",
    "Monitor",
    "MonitorRepository",
]


class Monitor(msgspec.Struct, frozen=True):
    id: uuid.UUID
    org_id: uuid.UUID
    display_name: str
    region_cells: list[str]
    region_countries: list[str]
    is_active: bool
    version: int
    created_at: datetime


class DeviceAuth(msgspec.Struct, frozen=True):
    """An enrolled device as resolved from its credential."""

    id: uuid.UUID
    org_id: uuid.UUID
    monitor_id: uuid.UUID
    enrolled_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    region_cells: list[str]
    region_countries: list[str]
    monitor_active: bool

    @property
    def regions(self) -> list[str]:
        return [*self.region_cells, *self.region_countries]


class DeviceStatus(msgspec.Struct, frozen=True):
    """What an org admin sees of a device's sync health."""

    id: uuid.UUID
    monitor_id: uuid.UUID
    enrolled_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    device_model: str | None
    os_version: str | None
    app_version: str | None
    next_seq: int
    clock_offset_seconds: float | None
    last_push_at: datetime | None
    last_pull_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    outbox_depth: int | None
    held_mutations: int


class MonitorRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def add(
        self, org_id: uuid.UUID, display_name: str, cells: list[str], countries: list[str]
    ) -> Monitor:
        row = await self._conn.fetchrow(Q.insert_monitor, org_id, display_name, cells, countries)
        assert row is not None
        return from_row(Monitor, row)

    async def get(self, org_id: uuid.UUID, monitor_id: uuid.UUID) -> Monitor:
        row = await self._conn.fetchrow(Q.get_monitor, org_id, monitor_id)
        if row is None:
            raise NotFound("monitor", monitor_id)
        return from_row(Monitor, row)

    async def list(
        self, org_id: uuid.UUID, after: tuple[datetime, uuid.UUID] | None, limit: int
    ) -> list[Monitor]:
        created, last = after or KEYSET_START
        rows = await self._conn.fetch(Q.list_monitors, org_id, created, last, limit)
        return [from_row(Monitor, r) for r in rows]

    async def add_enrollment_code(
        self,
        org_id: uuid.UUID,
        monitor_id: uuid.UUID,
        code_hash: bytes,
        created_by: uuid.UUID,
        expires_at: datetime,
    ) -> None:
        await self.get(org_id, monitor_id)  # 404 for another organisation's monitor
        await self._conn.execute(
            Q.insert_enrollment_code, code_hash, org_id, monitor_id, created_by, expires_at
        )


class DeviceRepository:
    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def enroll(
        self,
        code_hash: bytes,
        credential_hash: bytes,
        device_model: str | None,
        os_version: str | None,
        app_version: str | None,
    ) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID, datetime] | None:
        """Redeem a code for a new device; None when the code is unknown, used or expired."""
        device_id = uuid.uuid4()
        async with self._conn.transaction():
            redeemed = await self._conn.fetchrow(Q.redeem_enrollment_code, code_hash, device_id)
            if redeemed is None:
                return None
            org_id, monitor_id = redeemed["org_id"], redeemed["monitor_id"]
            enrolled_at = await self._conn.fetchval(
                Q.insert_device,
                device_id,
                org_id,
                monitor_id,
                credential_hash,
                device_model,
                os_version,
                app_version,
            )
        return device_id, org_id, monitor_id, enrolled_at

    async def resolve(self, credential_hash: bytes) -> DeviceAuth | None:
        row = await self._conn.fetchrow(Q.resolve_device, credential_hash)
        if row is None:
            return None
        return from_row(DeviceAuth, row)

    async def revoke(self, org_id: uuid.UUID, device_id: uuid.UUID, reason: str) -> datetime:
        revoked: datetime | None = await self._conn.fetchval(
            Q.revoke_device, org_id, device_id, reason
        )
        if revoked is None:
            raise NotFound("device", device_id)
        return revoked

    async def statuses(
        self, org_id: uuid.UUID, monitor_id: uuid.UUID | None = None
    ) -> list[DeviceStatus]:
        rows = await self._conn.fetch(Q.list_devices, org_id, monitor_id)
        return [from_row(DeviceStatus, r) for r in rows]

    async def record_error(self, device_id: uuid.UUID, error: str) -> None:
        await self._conn.execute(Q.record_device_error, device_id, error[:500])
