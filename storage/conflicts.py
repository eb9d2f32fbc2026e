"""The review queue of amendment conflicts, and their explicit resolution by a case manager.

A conflict kept the server's value when it arose; resolving it either confirms that value, takes
the device's value, or sets another, as a new report version that the monitor's devices receive.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import msgspec

from cases.reports import Report
from storage.db import KEYSET_START, Conn
from storage.errors import NotFound, StorageError
from storage.feed import publish_report_state
from storage.keyring import Keyring
from storage.queries import Q
from storage.reports import ReportStore, conflict_context, is_sensitive_path
from sync.clock import occurred_time_flags
from sync.merge import report_fields, set_field_path

__all__ = [
    "Conflict",
    "ConflictAlreadyResolved",
    "InvalidResolution",
    "Resolution",
    "list_conflicts",
    "resolve_conflict",
]


class Resolution(StrEnum):
    KEEP_SERVER = "keep_server"
    TAKE_INCOMING = "take_incoming"
    CUSTOM = "custom"


class ConflictAlreadyResolved(StorageError):
    def __init__(self, conflict_id: uuid.UUID) -> None:
        super().__init__(f"conflict {conflict_id} is already resolved")


class InvalidResolution(StorageError):
    """The chosen value would make the report invalid."""


class Conflict(msgspec.Struct, frozen=True):
    id: uuid.UUID
    report_id: uuid.UUID
    field: str
    base_value: Any
    server_value: Any
    incoming_value: Any
    mutation_id: uuid.UUID
    device_id: uuid.UUID
    created_at: datetime
    resolved_at: datetime | None
    resolved_by: uuid.UUID | None
    resolution: str | None
    resolved_value: Any
    # True when the values are about the worker's identity or the exact place and the caller's
    # role may not see them: they are then left out (null).
    withheld: bool = False


def _json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


async def _open(
    conn: Conn,
    keyring: Keyring,
    org_id: uuid.UUID,
    report_id: uuid.UUID,
    path: str,
    which: str,
    text: str | None,
) -> Any:
    """A stored conflict value, unsealed if it was sealed."""
    value = _json(text)
    if isinstance(value, dict) and set(value) == {"sealed"}:
        sealed = base64.b64decode(value["sealed"])
        context = conflict_context(report_id, path, which)
        return await keyring.decrypt_struct(conn, org_id, sealed, context, object)
    return value


async def list_conflicts(
    conn: Conn,
    keyring: Keyring,
    org_id: uuid.UUID,
    *,
    include_resolved: bool,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    reveal_sensitive: bool,
) -> list[Conflict]:
    created, last = after or KEYSET_START
    rows = await conn.fetch(Q.list_conflicts, org_id, include_resolved, created, last, limit)
    out = []
    for r in rows:
        withheld = is_sensitive_path(r["field"]) and not reveal_sensitive
        values = [
            None
            if withheld
            else await _open(conn, keyring, org_id, r["report_id"], r["field"], which, r[column])
            for which, column in (
                ("base", "base_value"),
                ("server", "server_value"),
                ("incoming", "incoming_value"),
            )
        ]
        out.append(
            Conflict(
                id=r["id"],
                report_id=r["report_id"],
                field=r["field"],
                base_value=values[0],
                server_value=values[1],
                incoming_value=values[2],
                mutation_id=r["mutation_id"],
                device_id=r["device_id"],
                created_at=r["created_at"],
                resolved_at=r["resolved_at"],
                resolved_by=r["resolved_by"],
                resolution=r["resolution"],
                resolved_value=None if withheld else _json(r["resolved_value"]),
                withheld=withheld,
            )
        )
    return out


async def resolve_conflict(
    conn: Conn,
    keyring: Keyring,
    *,
    org_id: uuid.UUID,
    conflict_id: uuid.UUID,
    resolution: Resolution,
    value: Any,
    user_id: uuid.UUID,
) -> int:
    """Resolve one conflict; returns the report's version afterwards."""
    async with conn.transaction():
        # The report first, then its conflict: the order of every writer that touches both
        # (a push inserting conflicts, retention redacting them), so none waits in a cycle. A
        # conflict's report never changes, so it can be read before anything is locked.
        report_id = await conn.fetchval(Q.conflict_report, org_id, conflict_id)
        if report_id is None:
            raise NotFound("conflict", conflict_id)
        store = ReportStore(conn, keyring)
        current = await store.lock(org_id, report_id)
        row = await conn.fetchrow(Q.lock_conflict, org_id, conflict_id)
        if row is None:
            raise NotFound("conflict", conflict_id)
        if row["resolved_at"] is not None:
            raise ConflictAlreadyResolved(conflict_id)
        if current is None:
            raise NotFound("report", row["report_id"])
        version = current.version
        chosen: Any = None
        if resolution is not Resolution.KEEP_SERVER:
            if resolution is Resolution.TAKE_INCOMING:
                chosen = await _open(
                    conn,
                    keyring,
                    org_id,
                    row["report_id"],
                    row["field"],
                    "incoming",
                    row["incoming_value"],
                )
            else:
                chosen = value
            fields = set_field_path(report_fields(current.report), row["field"], chosen)
            try:
                updated = msgspec.convert(fields, Report)
            except msgspec.ValidationError as exc:
                raise InvalidResolution(f"the value would make the report invalid: {exc}") from None
            if updated != current.report:
                version += 1
                # A time a case manager picks is judged now, as if recorded and received now.
                now = datetime.now(UTC)
                flags = occurred_time_flags(
                    current.report, updated, recorded_at=now, received_at=now,
                    enrolled_at=now, clock=None,
                )  # fmt: skip
                await store.update(org_id, updated, version, flags)
        # The resolved value of a sensitive field lives in the report (sealed), not here.
        kept = None if is_sensitive_path(row["field"]) else chosen
        await conn.execute(
            Q.resolve_conflict,
            org_id,
            conflict_id,
            user_id,
            resolution.value,
            msgspec.json.encode(kept).decode(),
        )
        await publish_report_state(
            conn, org_id, current.monitor_id, row["report_id"], current.report.attachments
        )
    return version
