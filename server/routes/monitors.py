"""Monitors, their enrollment codes and devices, managed by the case team."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated

import h3
import msgspec
from litestar import get, post
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from cases.accounts import Role
from cases.registry import REGION_RESOLUTION
from server.auth import Caller, audit_staff, requires
from server.pagination import Page, decode_page_token, page_of
from server.passwords import hash_token
from server.problems import FieldError, ProblemError
from server.resources import Db
from server.routes.sync import normalise_code
from storage.devices import DeviceRepository, DeviceStatus, Monitor, MonitorRepository

__all__ = [
    "create_enrollment_code",
    "create_monitor",
    "get_monitor",
    "list_devices",
    "list_monitors",
    "revoke_device",
]

_MANAGERS = (Role.ORG_ADMIN, Role.CASE_MANAGER)
# No 0/O or 1/I/L: codes are read aloud and typed on small keyboards.
_CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_TTL = timedelta(hours=72)

H3Cell = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{15}$")]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]


class NewMonitor(msgspec.Struct, frozen=True):
    display_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    region_cells: Annotated[list[H3Cell], msgspec.Meta(max_length=5000)] = []
    region_countries: Annotated[list[Country], msgspec.Meta(max_length=50)] = []


class EnrollmentCode(msgspec.Struct, frozen=True):
    code: str
    monitor_id: uuid.UUID
    expires_at: datetime


class Revocation(msgspec.Struct, frozen=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "device_revoked"


class Revoked(msgspec.Struct, frozen=True):
    device_id: uuid.UUID
    revoked_at: datetime


@post(
    "/v1/monitors",
    guards=[requires(*_MANAGERS)],
    status_code=HTTP_201_CREATED,
    tags=["monitors"],
    summary="Register a community monitor and the region whose registry their devices receive",
)
async def create_monitor(principal: Caller, db: Db, data: JSONBody[NewMonitor]) -> Monitor:
    bad = [c for c in data.region_cells if not h3.is_valid_cell(c)]
    if bad:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            f"not H3 cells: {', '.join(bad[:5])}",
            errors=[FieldError("region_cells", "contains invalid H3 cells", "body")],
        )
    return await MonitorRepository(db).add(
        principal.org_id,
        data.display_name,
        region_cells(data.region_cells),
        sorted(set(data.region_countries)),
    )


def region_cells(cells: list[str]) -> list[str]:
    """The region as cells of the registry's resolution: finer cells are widened to their parent,
    coarser ones split into their children (capped, so one continent cannot explode the list)."""
    out: set[str] = set()
    for cell in cells:
        res = h3.get_resolution(cell)
        if res >= REGION_RESOLUTION:
            out.add(h3.cell_to_parent(cell, REGION_RESOLUTION))
        else:
            out.update(h3.cell_to_children(cell, REGION_RESOLUTION))
    if len(out) > 20_000:
        raise ProblemError(
            422, "validation", "The region is too large", "use countries for whole-country regions"
        )
    return sorted(out)


@get("/v1/monitors", guards=[requires(*_MANAGERS)], tags=["monitors"], summary="List monitors")
async def list_monitors(
    principal: Caller,
    db: Db,
    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    page_token: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> Page[Monitor]:
    after = decode_page_token(page_token, tuple[datetime, uuid.UUID]) if page_token else None
    items = await MonitorRepository(db).list(principal.org_id, after, limit + 1)
    return page_of(items, limit, lambda x: (x.created_at, x.id))


@get("/v1/monitors/{monitor_id:uuid}", guards=[requires(*_MANAGERS)], tags=["monitors"])
async def get_monitor(principal: Caller, db: Db, monitor_id: FromPath[uuid.UUID]) -> Monitor:
    return await MonitorRepository(db).get(principal.org_id, monitor_id)


@post(
    "/v1/monitors/{monitor_id:uuid}/enrollment-codes",
    guards=[requires(*_MANAGERS)],
    status_code=HTTP_201_CREATED,
    tags=["monitors"],
    summary="A one-time code (valid 72 hours) to enroll one device for this monitor",
)
async def create_enrollment_code(
    principal: Caller, db: Db, monitor_id: FromPath[uuid.UUID]
) -> EnrollmentCode:
    raw = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(12))
    code = f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
    expires = datetime.now(UTC) + CODE_TTL
    async with db.transaction():
        await MonitorRepository(db).add_enrollment_code(
            principal.org_id,
            monitor_id,
            hash_token(normalise_code(code)),
            principal.user_id,
            expires,
        )
        await audit_staff(db, principal, "device.enrollment_code", "monitor", monitor_id)
    return EnrollmentCode(code=code, monitor_id=monitor_id, expires_at=expires)


@get(
    "/v1/devices",
    guards=[requires(Role.ORG_ADMIN)],
    tags=["monitors"],
    summary="Sync health per device: last push and pull, last error, outbox depth, clock offset",
)
async def list_devices(
    principal: Caller, db: Db, monitor_id: FromQuery[uuid.UUID | None] = None
) -> list[DeviceStatus]:
    return await DeviceRepository(db).statuses(principal.org_id, monitor_id)


@post(
    "/v1/devices/{device_id:uuid}/revoke",
    guards=[requires(*_MANAGERS)],
    status_code=200,
    tags=["monitors"],
    summary="Revoke a lost or compromised device; at its next contact it is told to wipe",
)
async def revoke_device(
    principal: Caller, db: Db, device_id: FromPath[uuid.UUID], data: JSONBody[Revocation]
) -> Revoked:
    async with db.transaction():
        revoked_at = await DeviceRepository(db).revoke(principal.org_id, device_id, data.reason)
        await audit_staff(db, principal, "device.revoke", "device", device_id, reason=data.reason)
    return Revoked(device_id=device_id, revoked_at=revoked_at)
