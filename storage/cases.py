"""Cases as stored: creation, the version-checked write path, the timeline, notes and SLA settings.

Every change to a case goes through ``CaseWriter``: it locks the case row, refuses a write based
on an old version (``StaleVersion`` with the current one), bumps the version and appends the
timeline event in the same transaction. State changes come from the pure ``cases.workflow``
functions; this module only persists what they decide. Links to reports, entities and persons
and the hooks the matching engine calls live in ``storage.case_links``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

from cases.priority import Priority, PriorityReason
from cases.workflow import (
    DEFAULT_SLA,
    Actor,
    ActorRole,
    CaseState,
    CaseStatus,
    ClosureOutcome,
    SlaPolicy,
    TimelineEvent,
    allowed_targets,
    is_overdue,
)
from storage.db import Conn
from storage.errors import NotFound, StaleVersion
from storage.queries import Q

__all__ = [
    "Case",
    "CaseActor",
    "CaseEvent",
    "CaseWriter",
    "Note",
    "NoteVisibility",
    "add_note",
    "get_case",
    "insert_case",
    "list_events",
    "list_notes",
    "load_sla",
    "save_sla",
    "sla_version",
]

NoteVisibility = Literal["internal", "shareable"]
ActorKindName = Literal["staff", "device", "system"]
_ENCODER = msgspec.json.Encoder()


class CaseActor(msgspec.Struct, frozen=True):
    """Who changes a case: recorded on the timeline (``kind:id``) and given a workflow role."""

    kind: ActorKindName
    id: str
    role: ActorRole

    @classmethod
    def staff(cls, user_id: uuid.UUID, *, supervisor: bool) -> CaseActor:
        role = ActorRole.SUPERVISOR if supervisor else ActorRole.CASE_MANAGER
        return cls("staff", str(user_id), role)

    @classmethod
    def system(cls, name: str) -> CaseActor:
        return cls("system", name, ActorRole.SYSTEM)

    @classmethod
    def device(cls, device_id: uuid.UUID) -> CaseActor:
        # A device never moves a case, so its workflow role is never consulted.
        return cls("device", str(device_id), ActorRole.SYSTEM)

    @property
    def workflow(self) -> Actor:
        return Actor(id=self.id, role=self.role)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"


class Case(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    number: int
    org_id: uuid.UUID
    incident_id: uuid.UUID | None
    merged_into: uuid.UUID | None
    title: str
    status: CaseStatus
    priority: Priority
    priority_reasons: list[PriorityReason]
    priority_manual: bool
    assignee_id: uuid.UUID | None
    sla_started_at: dt.datetime
    due_at: dt.datetime
    overdue: bool
    outcome: ClosureOutcome | None
    closure_reason: str | None
    version: int
    created_by: str
    created_at: dt.datetime
    updated_at: dt.datetime
    categories: list[str]
    report_count: int
    occurred_from: dt.datetime | None
    occurred_to: dt.datetime | None
    latitude: float | None  # centroid of the case's reports
    longitude: float | None
    allowed_transitions: list[CaseStatus]

    @property
    def state(self) -> CaseState:
        return CaseState(
            case_id=str(self.id),
            status=self.status,
            priority=self.priority,
            created_at=self.created_at,
            sla_started_at=self.sla_started_at,
            due_at=self.due_at,
            updated_at=self.updated_at,
            assignee_id=str(self.assignee_id) if self.assignee_id else None,
            outcome=self.outcome,
            closure_reason=self.closure_reason,
        )


class CaseEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    case_version: int
    kind: str
    actor_kind: str
    actor_id: str
    at: dt.datetime
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class Note(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    case_id: uuid.UUID
    author_id: uuid.UUID
    visibility: NoteVisibility
    body: str
    created_at: dt.datetime


def _case(row: Any, now: dt.datetime | None = None) -> Case:
    data = dict(row)
    data["priority_reasons"] = msgspec.json.decode(data["priority_reasons"])
    status = CaseStatus(data["status"])
    data["allowed_transitions"] = allowed_targets(status)
    data["overdue"] = False
    case: Case = msgspec.convert(data, Case, strict=False)
    overdue = is_overdue(case.state, now or dt.datetime.now(dt.UTC))
    return msgspec.structs.replace(case, overdue=overdue)


async def get_case(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> Case:
    row = await conn.fetchrow(Q.case_get, org_id, case_id)
    if row is None:
        raise NotFound("case", case_id)
    return _case(row)


async def load_sla(conn: Conn, org_id: uuid.UUID) -> SlaPolicy:
    raw = await conn.fetchval(Q.case_settings_get, org_id)
    return DEFAULT_SLA if raw is None else msgspec.json.decode(raw, type=SlaPolicy)


async def sla_version(conn: Conn, org_id: uuid.UUID) -> int | None:
    """The version of the organisation's SLA settings; None while it uses the defaults."""
    version = await conn.fetchval(Q.case_settings_version, org_id)
    return None if version is None else int(version)


async def save_sla(
    conn: Conn, org_id: uuid.UUID, sla: SlaPolicy, user_id: uuid.UUID, version: int | None
) -> int:
    """Store the organisation's SLA; ``version`` is what the editor saw (None: first time)."""
    body = _ENCODER.encode(sla).decode()
    if version is None:
        stored = await conn.fetchval(Q.case_settings_insert, org_id, body, user_id)
        if stored is not None:
            return int(stored)
    else:
        stored = await conn.fetchval(Q.case_settings_update, org_id, body, user_id, version)
        if stored is not None:
            return int(stored)
    current = await conn.fetchval(Q.case_settings_version, org_id)
    raise StaleVersion("case_settings", org_id, int(current or 0))


async def insert_case(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    incident_id: uuid.UUID | None,
    title: str,
    state: CaseState,
    reasons: tuple[PriorityReason, ...],
    priority_manual: bool,
    event: TimelineEvent,
    actor: CaseActor,
    detail: dict[str, Any] | None = None,
) -> uuid.UUID | None:
    """Insert a new case and its ``created`` event; None when the incident already has one."""
    case_id = await conn.fetchval(
        Q.case_insert,
        uuid.UUID(state.case_id),
        org_id,
        incident_id,
        title,
        state.priority.value,
        state.priority.rank,
        _ENCODER.encode(list(reasons)).decode(),
        priority_manual,
        uuid.UUID(state.assignee_id) if state.assignee_id else None,
        state.sla_started_at,
        state.due_at,
        actor.label,
        state.created_at,
    )
    if case_id is None:
        return None
    await _append_event(
        conn, org_id, case_id, 1, event.kind.value, actor, event.at, event, detail or {}
    )
    return uuid.UUID(str(case_id))


async def _append_event(
    conn: Conn,
    org_id: uuid.UUID,
    case_id: uuid.UUID,
    case_version: int,
    kind: str,
    actor: CaseActor,
    at: dt.datetime,
    event: TimelineEvent | None,
    detail: dict[str, Any],
    states: tuple[str | None, str | None] = (None, None),
) -> None:
    if event is not None:
        states = (event.from_state, event.to_state)
        detail = {**event.detail, **detail}
    await conn.execute(
        Q.case_event_insert,
        org_id,
        case_id,
        case_version,
        kind,
        actor.kind,
        actor.id,
        at,
        states[0],
        states[1],
        _ENCODER.encode(detail).decode(),
    )


class CaseWriter:
    """One version-checked change to one case, inside the caller's transaction.

    ``await CaseWriter.lock(conn, org_id, case_id, version)`` locks the row (concurrent writers
    queue here), so a second writer based on the same version sees the first one's bump and gets
    ``StaleVersion``: never a lost update. ``version=None`` is for the system (matching, device
    answers), which acts on whatever the case is now.
    """

    def __init__(self, conn: Conn, case: Case) -> None:
        self._conn = conn
        self.case = case

    @classmethod
    async def lock(
        cls, conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID, version: int | None
    ) -> CaseWriter:
        if not conn.is_in_transaction():
            raise RuntimeError("a case write must run inside a transaction")
        row = await conn.fetchrow(Q.case_lock, org_id, case_id)
        if row is None:
            raise NotFound("case", case_id)
        if version is not None and row["version"] != version:
            raise StaleVersion("case", case_id, row["version"])
        return cls(conn, _case(row))

    async def apply(
        self,
        state: CaseState,
        event: TimelineEvent,
        actor: CaseActor,
        *,
        reasons: tuple[PriorityReason, ...] | None = None,
        priority_manual: bool | None = None,
    ) -> Case:
        """Save a state the workflow produced, with its timeline event."""
        c = self.case
        row = await self._conn.fetchrow(
            Q.case_update_state,
            c.id,
            state.status.value,
            state.priority.value,
            state.priority.rank,
            uuid.UUID(state.assignee_id) if state.assignee_id else None,
            state.sla_started_at,
            state.due_at,
            state.outcome.value if state.outcome else None,
            state.closure_reason,
            state.updated_at,
            None if reasons is None else _ENCODER.encode(list(reasons)).decode(),
            priority_manual,
        )
        assert row is not None
        await _append_event(
            self._conn, c.org_id, c.id, row["version"], event.kind.value, actor, event.at, event, {}
        )
        self.case = _case(row)
        return self.case

    async def record(
        self,
        kind: str,
        actor: CaseActor,
        detail: dict[str, Any],
        *,
        at: dt.datetime | None = None,
    ) -> Case:
        """A change that does not move the case's state (a note, a link, a task, a referral)."""
        c = self.case
        now = at or dt.datetime.now(dt.UTC)
        row = await self._conn.fetchrow(Q.case_touch, c.id, now)
        assert row is not None
        status = c.status.value
        await _append_event(
            self._conn,
            c.org_id,
            c.id,
            row["version"],
            kind,
            actor,
            now,
            None,
            detail,
            (status, status),
        )
        self.case = _case(row)
        return self.case


async def list_events(
    conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID, *, after: int, limit: int
) -> list[CaseEvent]:
    await get_case(conn, org_id, case_id)
    rows = await conn.fetch(Q.case_events_list, org_id, case_id, after, limit)
    return [
        msgspec.convert({**dict(r), "detail": msgspec.json.decode(r["detail"])}, CaseEvent)
        for r in rows
    ]


async def add_note(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    author_id: uuid.UUID,
    visibility: NoteVisibility,
    body: str,
) -> Note:
    c = writer.case
    row = await conn.fetchrow(Q.case_note_insert, c.org_id, c.id, author_id, visibility, body)
    assert row is not None
    note: Note = msgspec.convert(dict(row), Note)
    await writer.record("note_added", actor, {"note_id": str(note.id), "visibility": visibility})
    return note


async def list_notes(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[Note]:
    await get_case(conn, org_id, case_id)
    rows = await conn.fetch(Q.case_notes_list, org_id, case_id)
    return [msgspec.convert(dict(r), Note) for r in rows]
