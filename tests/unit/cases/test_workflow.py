"""The case state machine: every state pair, closure rules, assignment, SLA and timeline."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cases.consent import ConsentOverride, ConsentPurpose, PartnerKind, may_refer
from cases.priority import Priority
from cases.workflow import (
    ALLOWED_TRANSITIONS,
    CLOSURE_OUTCOMES,
    DEFAULT_SLA,
    REASON_REQUIRED,
    Actor,
    ActorRole,
    AssignmentRefused,
    CaseState,
    CaseStatus,
    ClosureOutcome,
    EventKind,
    IllegalTransition,
    SlaPolicy,
    TransitionCommand,
    TransitionRefused,
    assign,
    change_priority,
    create_case,
    due_at,
    is_overdue,
    transition,
)

S = CaseStatus
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=5)
MANAGER = Actor("cm-1", ActorRole.CASE_MANAGER)
COLLEAGUE = Actor("cm-2", ActorRole.CASE_MANAGER)
SUPERVISOR = Actor("sup-1", ActorRole.SUPERVISOR)
SYSTEM = Actor("matcher", ActorRole.SYSTEM)
REFERRAL_OK = may_refer(
    [],
    ConsentPurpose.REFERRAL,
    NOW,
    partner_kind=PartnerKind.LEGAL_AID,
    override=ConsentOverride("sup-1", "Worker is confined and cannot be asked; legal aid needed."),
)

# The documented design, written out independently of the implementation's table so a change
# to either is caught here.
EXPECTED_TRANSITIONS = {
    S.NEW: {S.TRIAGE, S.CLOSED},
    S.TRIAGE: {S.OPEN, S.CLOSED},
    S.OPEN: {S.REFERRED, S.FOLLOW_UP, S.RESOLVED, S.CLOSED},
    S.REFERRED: {S.FOLLOW_UP, S.OPEN, S.RESOLVED, S.CLOSED},
    S.FOLLOW_UP: {S.OPEN, S.REFERRED, S.RESOLVED, S.CLOSED},
    S.RESOLVED: {S.CLOSED, S.REOPENED},
    S.CLOSED: {S.REOPENED},
    S.REOPENED: {S.TRIAGE, S.OPEN},
}


def case_in(
    status: CaseStatus,
    *,
    assignee: str | None = "cm-1",
    priority: Priority = Priority.NORMAL,
    outcome: ClosureOutcome | None = None,
) -> CaseState:
    if status is S.CLOSED and outcome is None:
        outcome = ClosureOutcome.DUPLICATE
    return CaseState(
        case_id="case-1",
        status=status,
        priority=priority,
        created_at=T0,
        sla_started_at=T0,
        due_at=due_at(priority, T0),
        updated_at=T0,
        assignee_id=assignee,
        outcome=outcome,
        closure_reason="earlier closure" if outcome else None,
    )


def valid_command(current: CaseStatus, target: CaseStatus) -> TransitionCommand:
    """The least complete command that the workflow accepts for this move."""
    return TransitionCommand(
        to=target,
        reason="documented reason" if (current, target) in REASON_REQUIRED else None,
        outcome=min(CLOSURE_OUTCOMES[current]) if target is S.CLOSED else None,
        referral=REFERRAL_OK if target is S.REFERRED else None,
    )


def test_transition_table_is_the_documented_one() -> None:
    assert {k: set(v) for k, v in ALLOWED_TRANSITIONS.items()} == EXPECTED_TRANSITIONS
    assert set(ALLOWED_TRANSITIONS) == set(CaseStatus)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_state_pair(current: CaseStatus, target: CaseStatus) -> None:
    case = case_in(current)
    command = TransitionCommand(
        to=target,
        reason="a reason",
        outcome=min(CLOSURE_OUTCOMES[current]) if current in CLOSURE_OUTCOMES else None,
        referral=REFERRAL_OK,
    )
    if target in EXPECTED_TRANSITIONS[current]:
        result = transition(case, valid_command(current, target), SUPERVISOR, NOW)
        assert result.case.status is target
        assert result.case.updated_at == NOW
        assert result.event.kind is EventKind.STATUS_CHANGED
        assert (result.event.from_state, result.event.to_state) == (current, target)
        assert result.event.actor == SUPERVISOR
        assert result.event.at == NOW
    else:
        # However complete the command, an illegal move is refused and names what is allowed.
        with pytest.raises(IllegalTransition) as caught:
            transition(case, command, SUPERVISOR, NOW)
        error = caught.value
        assert error.current is current
        assert error.requested is target
        assert error.allowed == sorted(EXPECTED_TRANSITIONS[current])
        for allowed in error.allowed:
            assert allowed.value in str(error)


def test_every_state_is_reachable_and_every_case_can_end() -> None:
    reachable, frontier = {S.NEW}, [S.NEW]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(S)
    for status in S:
        # Every state can reach closed (closed itself only by reopening and closing again).
        seen, todo = set(), [status]
        while todo:
            for nxt in ALLOWED_TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert S.CLOSED in seen, status


@pytest.mark.parametrize("current", sorted(CLOSURE_OUTCOMES))
def test_closing_requires_an_outcome(current: CaseStatus) -> None:
    command = TransitionCommand(to=S.CLOSED, reason="worker asked us to stop")
    with pytest.raises(TransitionRefused) as caught:
        transition(case_in(current), command, SUPERVISOR, NOW)
    assert caught.value.code == "outcome_required"


@pytest.mark.parametrize(
    ("current", "outcome"), list(itertools.product(sorted(CLOSURE_OUTCOMES), ClosureOutcome))
)
def test_closure_outcomes_per_state(current: CaseStatus, outcome: ClosureOutcome) -> None:
    command = TransitionCommand(to=S.CLOSED, reason="closing note", outcome=outcome)
    if outcome in CLOSURE_OUTCOMES[current]:
        result = transition(case_in(current), command, SUPERVISOR, NOW)
        assert result.case.outcome is outcome
        assert result.case.closure_reason == "closing note"
        assert result.event.detail["outcome"] == outcome.value
    else:
        with pytest.raises(TransitionRefused) as caught:
            transition(case_in(current), command, SUPERVISOR, NOW)
        assert caught.value.code == "outcome_not_allowed"


def test_remedy_outcomes_only_after_resolution() -> None:
    remedies = {ClosureOutcome.REMEDIED, ClosureOutcome.PARTIALLY_REMEDIED}
    for status, outcomes in CLOSURE_OUTCOMES.items():
        assert (status is S.RESOLVED) == bool(outcomes & remedies), status
    assert CLOSURE_OUTCOMES[S.NEW] == {ClosureOutcome.DUPLICATE}
    assert set().union(*CLOSURE_OUTCOMES.values()) == set(ClosureOutcome)


def test_outcome_is_refused_when_not_closing() -> None:
    command = TransitionCommand(to=S.OPEN, outcome=ClosureOutcome.REMEDIED)
    with pytest.raises(TransitionRefused) as caught:
        transition(case_in(S.TRIAGE), command, MANAGER, NOW)
    assert caught.value.code == "outcome_unexpected"


@pytest.mark.parametrize(("current", "target"), sorted(REASON_REQUIRED))
@pytest.mark.parametrize("reason", [None, "", "   \n"])
def test_reason_required(current: CaseStatus, target: CaseStatus, reason: str | None) -> None:
    command = msgspec.structs.replace(valid_command(current, target), reason=reason)
    with pytest.raises(TransitionRefused) as caught:
        transition(case_in(current), command, SUPERVISOR, NOW)
    assert caught.value.code == "reason_required"


def test_reasons_are_required_for_closing_and_reopening_everywhere() -> None:
    for current, targets in ALLOWED_TRANSITIONS.items():
        for target in targets & {S.CLOSED, S.REOPENED}:
            assert (current, target) in REASON_REQUIRED


def test_reason_is_recorded_trimmed() -> None:
    command = TransitionCommand(to=S.REOPENED, reason="  employer stopped paying again \n")
    result = transition(case_in(S.CLOSED), command, MANAGER, NOW)
    assert result.event.detail["reason"] == "employer stopped paying again"


def test_reopening_clears_the_outcome_and_restarts_the_sla() -> None:
    closed = case_in(S.CLOSED, priority=Priority.HIGH, outcome=ClosureOutcome.REMEDIED)
    reopened_at = T0 + timedelta(days=40)
    command = TransitionCommand(to=S.REOPENED, reason="wages stopped again")
    result = transition(closed, command, MANAGER, reopened_at)
    assert result.case.outcome is None
    assert result.case.closure_reason is None
    assert result.case.sla_started_at == reopened_at
    assert result.case.due_at == reopened_at + timedelta(hours=72)
    assert result.case.created_at == T0


def test_opening_needs_an_assignee() -> None:
    unassigned = case_in(S.TRIAGE, assignee=None)
    with pytest.raises(TransitionRefused) as caught:
        transition(unassigned, TransitionCommand(to=S.OPEN), MANAGER, NOW)
    assert caught.value.code == "assignee_required"
    result = transition(unassigned, TransitionCommand(to=S.OPEN, assign_to="cm-1"), MANAGER, NOW)
    assert result.case.assignee_id == "cm-1"
    assert result.event.detail["assignee"] == "cm-1"


def test_case_manager_cannot_assign_a_colleague_while_transitioning() -> None:
    unassigned = case_in(S.TRIAGE, assignee=None)
    with pytest.raises(TransitionRefused) as caught:
        transition(unassigned, TransitionCommand(to=S.OPEN, assign_to="cm-2"), MANAGER, NOW)
    assert caught.value.code == "not_permitted"
    result = transition(unassigned, TransitionCommand(to=S.OPEN, assign_to="cm-2"), SUPERVISOR, NOW)
    assert result.case.assignee_id == "cm-2"


def test_only_the_assignee_or_a_supervisor_moves_an_assigned_case() -> None:
    case = case_in(S.OPEN, assignee="cm-1")
    command = TransitionCommand(to=S.FOLLOW_UP)
    with pytest.raises(TransitionRefused) as caught:
        transition(case, command, COLLEAGUE, NOW)
    assert caught.value.code == "not_permitted"
    assert transition(case, command, MANAGER, NOW).case.status is S.FOLLOW_UP
    assert transition(case, command, SUPERVISOR, NOW).case.status is S.FOLLOW_UP


def test_system_may_only_triage_or_merge_new_cases() -> None:
    new = case_in(S.NEW, assignee=None)
    assert transition(new, TransitionCommand(to=S.TRIAGE), SYSTEM, NOW).case.status is S.TRIAGE
    merge = TransitionCommand(to=S.CLOSED, outcome=ClosureOutcome.DUPLICATE, reason="same as c-9")
    assert transition(new, merge, SYSTEM, NOW).case.outcome is ClosureOutcome.DUPLICATE
    with pytest.raises(TransitionRefused) as caught:
        transition(case_in(S.TRIAGE), TransitionCommand(to=S.OPEN), SYSTEM, NOW)
    assert caught.value.code == "not_permitted"


def test_referral_needs_an_allowed_consent_decision() -> None:
    case = case_in(S.OPEN)
    refused = may_refer([], ConsentPurpose.REFERRAL, NOW)
    wrong_purpose = may_refer(
        [], ConsentPurpose.SHARING, NOW, override=ConsentOverride("s", "x" * 80)
    )
    for decision in (None, refused, wrong_purpose):
        with pytest.raises(TransitionRefused) as caught:
            transition(case, TransitionCommand(to=S.REFERRED, referral=decision), MANAGER, NOW)
        assert caught.value.code == "consent_required"
    result = transition(case, TransitionCommand(to=S.REFERRED, referral=REFERRAL_OK), MANAGER, NOW)
    assert result.event.detail["override"] == "true"
    assert result.event.detail["partner_kind"] == "legal_aid"
    assert result.event.detail["consent"] == "override_justified"
    assert "justification" in result.event.detail


def test_create_case_starts_the_sla_and_the_timeline() -> None:
    created = create_case("case-9", Priority.CRITICAL, SYSTEM, T0)
    assert created.case.status is S.NEW
    assert created.case.due_at == T0 + timedelta(hours=24)
    assert created.event.kind is EventKind.CREATED
    assert created.event.from_state is None
    assert created.event.to_state is S.NEW


@pytest.mark.parametrize(
    ("priority", "duration"),
    [
        (Priority.CRITICAL, timedelta(hours=24)),
        (Priority.HIGH, timedelta(hours=72)),
        (Priority.NORMAL, timedelta(days=7)),
        (Priority.LOW, timedelta(days=30)),
    ],
)
def test_default_sla(priority: Priority, duration: timedelta) -> None:
    assert DEFAULT_SLA.duration(priority) == duration
    assert due_at(priority, T0) == T0 + duration


def test_organisation_sla_policy() -> None:
    policy = msgspec.json.decode(b'{"critical": "PT12H", "high": "P2D"}', type=SlaPolicy)
    assert policy.critical == timedelta(hours=12)
    assert policy.normal == timedelta(days=7)
    created = create_case("c", Priority.CRITICAL, SYSTEM, T0, sla=policy)
    assert created.case.due_at == T0 + timedelta(hours=12)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"critical": "-PT1H"}',
        b'{"critical": "PT0S"}',
        b'{"critical": "P10D"}',  # critical may not be slower than high
        b'{"urgent": "PT1H"}',
    ],
)
def test_unreasonable_sla_policies_are_refused(raw: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(raw, type=SlaPolicy)


def test_overdue_only_while_the_sla_clock_runs() -> None:
    case = case_in(S.OPEN, priority=Priority.HIGH)
    assert not is_overdue(case, case.due_at)
    assert is_overdue(case, case.due_at + timedelta(seconds=1))
    for status in (S.RESOLVED, S.CLOSED):
        assert not is_overdue(case_in(status), case.due_at + timedelta(days=365))


def test_priority_change_moves_the_due_date_from_the_original_start() -> None:
    case = case_in(S.OPEN, priority=Priority.LOW)
    result = change_priority(case, Priority.CRITICAL, MANAGER, NOW, reason="violence disclosed")
    assert result.case.due_at == T0 + timedelta(hours=24)
    assert is_overdue(result.case, T0 + timedelta(hours=25))
    assert result.event.kind is EventKind.PRIORITY_CHANGED
    assert result.event.detail["previous_priority"] == "low"
    with pytest.raises(TransitionRefused):
        change_priority(result.case, Priority.CRITICAL, MANAGER, NOW)
    with pytest.raises(TransitionRefused):
        change_priority(case_in(S.CLOSED), Priority.HIGH, MANAGER, NOW)


def test_assignment_rules() -> None:
    unassigned = case_in(S.TRIAGE, assignee=None)
    claimed = assign(unassigned, "cm-1", MANAGER, NOW)
    assert claimed.case.assignee_id == "cm-1"
    assert claimed.event.kind is EventKind.ASSIGNED
    assert claimed.event.detail == {"assignee": "cm-1", "previous_assignee": ""}

    refusals = [
        (unassigned, "cm-2", MANAGER, "not_permitted"),  # assigning a colleague
        (claimed.case, "cm-2", COLLEAGUE, "not_permitted"),  # taking a colleague's case
        (claimed.case, "cm-1", SUPERVISOR, "already_assigned"),
        (case_in(S.CLOSED), "cm-2", SUPERVISOR, "case_closed"),
    ]
    for case, assignee, actor, code in refusals:
        with pytest.raises(AssignmentRefused) as caught:
            assign(case, assignee, actor, NOW)
        assert caught.value.code == code

    moved = assign(claimed.case, "cm-2", SUPERVISOR, NOW)
    assert moved.event.detail["previous_assignee"] == "cm-1"
    assert assign(unassigned, "cm-3", SYSTEM, NOW).case.assignee_id == "cm-3"


def test_naive_time_is_refused() -> None:
    naive = datetime(2025, 3, 1, 9, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        transition(case_in(S.NEW), TransitionCommand(to=S.TRIAGE), MANAGER, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_overdue(case_in(S.NEW), naive)


def test_timeline_event_encodes() -> None:
    result = transition(case_in(S.NEW), TransitionCommand(to=S.TRIAGE), MANAGER, NOW)
    decoded = msgspec.json.decode(msgspec.json.encode(result), type=type(result))
    assert decoded == result


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=25))
def test_random_walks_keep_the_invariants(choices: list[int]) -> None:
    """Walk the machine with valid commands; the timeline must chain and closure stay coherent."""
    step = timedelta(hours=7)
    created = create_case("walk", Priority.NORMAL, SYSTEM, T0)
    case, events, at = created.case, [created.event], T0
    for choice in choices:
        targets = sorted(ALLOWED_TRANSITIONS[case.status])
        target = targets[choice % len(targets)]
        command = msgspec.structs.replace(
            valid_command(case.status, target),
            assign_to=None if case.assignee_id else "cm-1",
        )
        at += step
        result = transition(case, command, SUPERVISOR, at)
        assert result.event.from_state is case.status
        case = result.case
        events.append(result.event)
        assert (case.status is S.CLOSED) == (case.outcome is not None)
        assert case.due_at > case.sla_started_at >= case.created_at
        assert case.updated_at == at
    for earlier, later in itertools.pairwise(events):
        assert later.from_state is earlier.to_state
        assert later.at > earlier.at
