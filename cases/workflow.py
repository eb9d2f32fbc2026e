"""The case workflow: an explicit state machine with assignment, SLA due dates and a timeline.

Every change to a case goes through a pure function here that returns the new case state and the
timeline event recording it, or raises a domain error; storage persists both in one transaction.
See docs/decisions/0104-case-workflow.md for why the transitions are what they are.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec

from cases.consent import ConsentPurpose, Decision
from cases.priority import Priority

__all__ = [
    "ALLOWED_TRANSITIONS",
    "CLOSURE_OUTCOMES",
    "DEFAULT_SLA",
    "REASON_REQUIRED",
    "SLA_RUNNING",
    "Actor",
    "ActorRole",
    "AssignmentRefused",
    "CaseState",
    "CaseStatus",
    "ClosureOutcome",
    "EventKind",
    "IllegalTransition",
    "RefusalCode",
    "SlaPolicy",
    "TimelineEvent",
    "TransitionCommand",
    "TransitionRefused",
    "Transitioned",
    "WorkflowError",
    "allowed_targets",
    "assign",
    "change_priority",
    "create_case",
    "due_at",
    "is_overdue",
    "transition",
]


class CaseStatus(enum.StrEnum):
    NEW = "new"
    TRIAGE = "triage"
    OPEN = "open"
    REFERRED = "referred"
    FOLLOW_UP = "follow_up"
    RESOLVED = "resolved"
    CLOSED = "closed"
    REOPENED = "reopened"


class ClosureOutcome(enum.StrEnum):
    REMEDIED = "remedied"
    PARTIALLY_REMEDIED = "partially_remedied"
    REFERRED_ELSEWHERE = "referred_elsewhere"
    WORKER_WITHDREW = "worker_withdrew"
    UNREACHABLE = "unreachable"
    DUPLICATE = "duplicate"
    NOT_ACTIONABLE = "not_actionable"
    NO_CONSENT = "no_consent"


class ActorRole(enum.StrEnum):
    CASE_MANAGER = "case_manager"
    SUPERVISOR = "supervisor"
    SYSTEM = "system"  # the worker process, e.g. the matching engine merging a duplicate


class EventKind(enum.StrEnum):
    CREATED = "created"
    STATUS_CHANGED = "status_changed"
    ASSIGNED = "assigned"
    PRIORITY_CHANGED = "priority_changed"


_S = CaseStatus
_O = ClosureOutcome  # short aliases keep the tables below readable

ALLOWED_TRANSITIONS: Final[Mapping[CaseStatus, frozenset[CaseStatus]]] = {
    # The matching engine may close an obvious duplicate before anyone triages it.
    _S.NEW: frozenset({_S.TRIAGE, _S.CLOSED}),
    # Triage decides whether there is a case at all; nothing is referred before it is opened.
    _S.TRIAGE: frozenset({_S.OPEN, _S.CLOSED}),
    # Active work moves freely between working it, referring it and following up; it can end
    # without remedy at any point (the worker withdraws, cannot be reached, ...).
    _S.OPEN: frozenset({_S.REFERRED, _S.FOLLOW_UP, _S.RESOLVED, _S.CLOSED}),
    _S.REFERRED: frozenset({_S.FOLLOW_UP, _S.OPEN, _S.RESOLVED, _S.CLOSED}),
    _S.FOLLOW_UP: frozenset({_S.OPEN, _S.REFERRED, _S.RESOLVED, _S.CLOSED}),
    # Resolved means a remedy was delivered and awaits confirmation; if it falls through the
    # case is reopened rather than silently moved back, so the timeline shows the relapse.
    _S.RESOLVED: frozenset({_S.CLOSED, _S.REOPENED}),
    _S.CLOSED: frozenset({_S.REOPENED}),
    # A reopened case is re-triaged when the new information may change what the case is,
    # or goes straight back to work when it clearly does not.
    _S.REOPENED: frozenset({_S.TRIAGE, _S.OPEN}),
}

_ENDED_WITHOUT_REMEDY: Final = frozenset(
    {_O.REFERRED_ELSEWHERE, _O.WORKER_WITHDREW, _O.UNREACHABLE, _O.DUPLICATE, _O.NOT_ACTIONABLE}
    | {_O.NO_CONSENT}
)
# Outcomes allowed when closing from each state. Remedy outcomes only come after `resolved`,
# so every "remedied" in the statistics passed through an explicit resolution step.
CLOSURE_OUTCOMES: Final[Mapping[CaseStatus, frozenset[ClosureOutcome]]] = {
    _S.NEW: frozenset({_O.DUPLICATE}),
    _S.TRIAGE: frozenset(
        {_O.DUPLICATE, _O.NOT_ACTIONABLE, _O.NO_CONSENT, _O.UNREACHABLE, _O.WORKER_WITHDREW}
    ),
    _S.OPEN: _ENDED_WITHOUT_REMEDY,
    _S.REFERRED: _ENDED_WITHOUT_REMEDY,
    _S.FOLLOW_UP: _ENDED_WITHOUT_REMEDY,
    _S.RESOLVED: frozenset({_O.REMEDIED, _O.PARTIALLY_REMEDIED}),
}

# Moves that end, revive or undo work need a written reason: they are the ones a supervisor
# reviewing the timeline later asks "why?" about.
REASON_REQUIRED: Final[frozenset[tuple[CaseStatus, CaseStatus]]] = frozenset(
    {(source, _S.CLOSED) for source in CLOSURE_OUTCOMES}
    | {(_S.RESOLVED, _S.REOPENED), (_S.CLOSED, _S.REOPENED)}
    | {(_S.REFERRED, _S.OPEN), (_S.FOLLOW_UP, _S.OPEN)}
)

# States in which someone must be responsible for the case.
_NEEDS_ASSIGNEE: Final = frozenset({_S.OPEN, _S.REFERRED, _S.FOLLOW_UP, _S.RESOLVED})
# The SLA clock runs until a remedy is delivered or the case is closed.
SLA_RUNNING: Final = frozenset({_S.NEW, _S.TRIAGE, _S.OPEN, _S.REFERRED, _S.FOLLOW_UP, _S.REOPENED})
_SYSTEM_TRANSITIONS: Final = frozenset({(_S.NEW, _S.TRIAGE), (_S.NEW, _S.CLOSED)})

Reason = Annotated[str, msgspec.Meta(max_length=4000)]
RefusalCode = Literal[
    "not_permitted",
    "reason_required",
    "outcome_required",
    "outcome_not_allowed",
    "outcome_unexpected",
    "assignee_required",
    "consent_required",
    "case_closed",
    "already_assigned",
    "unchanged",
]


class WorkflowError(Exception):
    """A command the workflow refuses; the case is unchanged."""


class IllegalTransition(WorkflowError):
    """The requested target state cannot be reached from the current one."""

    def __init__(self, current: CaseStatus, requested: CaseStatus) -> None:
        self.current = current
        self.requested = requested
        self.allowed: list[CaseStatus] = allowed_targets(current)
        super().__init__(
            f"cannot move a case from {current} to {requested}; "
            f"allowed: {', '.join(self.allowed) or 'none'}"
        )


class TransitionRefused(WorkflowError):
    """The move is allowed in principle but this command lacks something it needs."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        self.code: RefusalCode = code
        super().__init__(message)


class AssignmentRefused(TransitionRefused):
    """The assignment is not allowed for this actor or case."""


class Actor(msgspec.Struct, frozen=True):
    id: str
    role: ActorRole


class SlaPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Time from creation (or reopening) to resolution, per priority; set per organisation."""

    critical: timedelta = timedelta(hours=24)
    high: timedelta = timedelta(hours=72)
    normal: timedelta = timedelta(days=7)
    low: timedelta = timedelta(days=30)

    def __post_init__(self) -> None:
        durations = [self.critical, self.high, self.normal, self.low]
        if any(d <= timedelta(0) for d in durations):
            raise ValueError("SLA durations must be positive")
        if durations != sorted(durations):
            raise ValueError("SLA durations must not shrink as priority falls")

    def duration(self, priority: Priority) -> timedelta:
        value: timedelta = getattr(self, priority.value)
        return value


DEFAULT_SLA: Final = SlaPolicy()


class CaseState(msgspec.Struct, frozen=True, kw_only=True):
    """The workflow-relevant state of one case (its reports, notes and tasks live elsewhere)."""

    case_id: str
    status: CaseStatus
    priority: Priority
    created_at: datetime
    sla_started_at: datetime
    due_at: datetime
    updated_at: datetime
    assignee_id: str | None = None
    outcome: ClosureOutcome | None = None
    closure_reason: str | None = None


class TransitionCommand(msgspec.Struct, frozen=True, kw_only=True):
    """A request to move a case to ``to``.

    ``assign_to`` assigns in the same step (e.g. triage to open); ``referral`` is the consent
    decision that permits entering ``referred``.
    """

    to: CaseStatus
    reason: Reason | None = None
    outcome: ClosureOutcome | None = None
    assign_to: str | None = None
    referral: Decision | None = None


class TimelineEvent(msgspec.Struct, frozen=True, kw_only=True):
    kind: EventKind
    actor: Actor
    at: datetime
    from_state: CaseStatus | None
    to_state: CaseStatus
    detail: dict[str, str] = {}


class Transitioned(msgspec.Struct, frozen=True):
    case: CaseState
    event: TimelineEvent


def allowed_targets(current: CaseStatus) -> list[CaseStatus]:
    """The states a case in ``current`` may move to, sorted."""
    return sorted(ALLOWED_TRANSITIONS[current])


def due_at(
    priority: Priority, sla_started_at: datetime, policy: SlaPolicy = DEFAULT_SLA
) -> datetime:
    return sla_started_at + policy.duration(priority)


def is_overdue(case: CaseState, now: datetime) -> bool:
    """True when the SLA clock is running and its due date has passed."""
    _require_aware(now)
    return case.status in SLA_RUNNING and now > case.due_at


def create_case(
    case_id: str,
    priority: Priority,
    actor: Actor,
    now: datetime,
    *,
    sla: SlaPolicy = DEFAULT_SLA,
) -> Transitioned:
    """A new case; the SLA clock starts now."""
    _require_aware(now)
    case = CaseState(
        case_id=case_id,
        status=_S.NEW,
        priority=priority,
        created_at=now,
        sla_started_at=now,
        due_at=due_at(priority, now, sla),
        updated_at=now,
    )
    event = TimelineEvent(
        kind=EventKind.CREATED,
        actor=actor,
        at=now,
        from_state=None,
        to_state=_S.NEW,
        detail={"priority": priority.value, "due_at": case.due_at.isoformat()},
    )
    return Transitioned(case, event)


def transition(
    case_state: CaseState,
    command: TransitionCommand,
    actor: Actor,
    now: datetime,
    *,
    sla: SlaPolicy = DEFAULT_SLA,
) -> Transitioned:
    """Apply ``command`` to the case, or raise IllegalTransition / TransitionRefused."""
    _require_aware(now)
    current, target = case_state.status, command.to
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    _check_permission(case_state, command, actor)

    reason = (command.reason or "").strip() or None
    if (current, target) in REASON_REQUIRED and reason is None:
        raise TransitionRefused(
            "reason_required", f"moving from {current} to {target} needs a reason"
        )
    _check_outcome(current, target, command.outcome)

    assignee = command.assign_to or case_state.assignee_id
    if target in _NEEDS_ASSIGNEE and assignee is None:
        raise TransitionRefused("assignee_required", f"a case in {target} needs an assignee")
    if target is _S.REFERRED:
        _check_referral(command.referral)

    detail: dict[str, str] = {}
    changes: dict[str, object] = {"status": target, "updated_at": now}
    if reason is not None:
        detail["reason"] = reason
    if command.assign_to is not None and command.assign_to != case_state.assignee_id:
        changes["assignee_id"] = command.assign_to
        detail["assignee"] = command.assign_to
    if target is _S.CLOSED:
        assert command.outcome is not None  # checked by _check_outcome
        changes |= {"outcome": command.outcome, "closure_reason": reason}
        detail["outcome"] = command.outcome.value
    if target is _S.REOPENED:
        # A reopened case gets a fresh SLA: the old clock measured a different piece of work.
        changes |= {
            "outcome": None,
            "closure_reason": None,
            "sla_started_at": now,
            "due_at": due_at(case_state.priority, now, sla),
        }
        detail["due_at"] = due_at(case_state.priority, now, sla).isoformat()
    if target is _S.REFERRED and command.referral is not None:
        detail |= _referral_detail(command.referral)

    event = TimelineEvent(
        kind=EventKind.STATUS_CHANGED,
        actor=actor,
        at=now,
        from_state=current,
        to_state=target,
        detail=detail,
    )
    return Transitioned(msgspec.structs.replace(case_state, **changes), event)


def assign(case_state: CaseState, assignee_id: str, actor: Actor, now: datetime) -> Transitioned:
    """Make ``assignee_id`` responsible for the case.

    Supervisors and the system may assign anyone; a case manager may only claim an unassigned
    case for themselves, so work is never taken from a colleague without a supervisor.
    """
    _require_aware(now)
    if case_state.status is _S.CLOSED:
        raise AssignmentRefused("case_closed", "reopen a closed case before assigning it")
    if case_state.assignee_id == assignee_id:
        raise AssignmentRefused("already_assigned", f"case is already assigned to {assignee_id}")
    if actor.role is ActorRole.CASE_MANAGER and (
        assignee_id != actor.id or case_state.assignee_id is not None
    ):
        raise AssignmentRefused(
            "not_permitted", "a case manager may only claim an unassigned case for themselves"
        )
    event = TimelineEvent(
        kind=EventKind.ASSIGNED,
        actor=actor,
        at=now,
        from_state=case_state.status,
        to_state=case_state.status,
        detail={"assignee": assignee_id, "previous_assignee": case_state.assignee_id or ""},
    )
    case = msgspec.structs.replace(case_state, assignee_id=assignee_id, updated_at=now)
    return Transitioned(case, event)


def change_priority(
    case_state: CaseState,
    priority: Priority,
    actor: Actor,
    now: datetime,
    *,
    reason: str | None = None,
    sla: SlaPolicy = DEFAULT_SLA,
) -> Transitioned:
    """Set a new priority; the due date moves with it but keeps the original SLA start."""
    _require_aware(now)
    if case_state.status is _S.CLOSED:
        raise TransitionRefused("case_closed", "a closed case has no priority to change")
    if priority is case_state.priority:
        raise TransitionRefused("unchanged", f"case is already {priority}")
    new_due = due_at(priority, case_state.sla_started_at, sla)
    detail = {
        "previous_priority": case_state.priority.value,
        "priority": priority.value,
        "due_at": new_due.isoformat(),
    }
    if reason and reason.strip():
        detail["reason"] = reason.strip()
    event = TimelineEvent(
        kind=EventKind.PRIORITY_CHANGED,
        actor=actor,
        at=now,
        from_state=case_state.status,
        to_state=case_state.status,
        detail=detail,
    )
    case = msgspec.structs.replace(case_state, priority=priority, due_at=new_due, updated_at=now)
    return Transitioned(case, event)


def _check_permission(case: CaseState, command: TransitionCommand, actor: Actor) -> None:
    if actor.role is ActorRole.SYSTEM:
        if (case.status, command.to) not in _SYSTEM_TRANSITIONS:
            raise TransitionRefused(
                "not_permitted", "the system may only triage or merge new cases"
            )
        return
    if actor.role is ActorRole.SUPERVISOR:
        return
    if case.assignee_id is not None and case.assignee_id != actor.id:
        raise TransitionRefused("not_permitted", "only the assignee or a supervisor may move it")
    if command.assign_to is not None and command.assign_to != actor.id:
        raise TransitionRefused("not_permitted", "a case manager may only assign themselves")


def _check_outcome(current: CaseStatus, target: CaseStatus, outcome: ClosureOutcome | None) -> None:
    if target is not _S.CLOSED:
        if outcome is not None:
            raise TransitionRefused("outcome_unexpected", "only closing a case takes an outcome")
        return
    if outcome is None:
        raise TransitionRefused("outcome_required", "closing a case needs an outcome")
    permitted = CLOSURE_OUTCOMES[current]
    if outcome not in permitted:
        raise TransitionRefused(
            "outcome_not_allowed",
            f"a case in {current} cannot close as {outcome}; "
            f"allowed: {', '.join(sorted(permitted))}",
        )


def _check_referral(decision: Decision | None) -> None:
    if decision is None or not decision.allowed or decision.purpose is not ConsentPurpose.REFERRAL:
        raise TransitionRefused(
            "consent_required", "referring a case needs an allowed consent decision for referral"
        )


def _referral_detail(decision: Decision) -> dict[str, str]:
    detail = {"consent": decision.reason, "override": str(decision.override).lower()}
    if decision.partner_kind is not None:
        detail["partner_kind"] = decision.partner_kind.value
    if decision.justification is not None:
        detail["justification"] = decision.justification
    return detail


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("workflow times must be timezone-aware")
