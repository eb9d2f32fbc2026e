"""Consent-gated referral: current consent, withdrawal, expiry, partner kinds and overrides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cases.consent import (
    MIN_OVERRIDE_JUSTIFICATION,
    REFERRAL_DATA_SET,
    ConsentAction,
    ConsentOverride,
    ConsentPurpose,
    ConsentRecord,
    PartnerKind,
    current_consent,
    may_refer,
    referral_payload,
)

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
REFERRAL = ConsentPurpose.REFERRAL
GOOD_JUSTIFICATION = (
    "Worker reported locked in the dormitory with injuries; phone taken, cannot be asked."
)


def record(
    action: ConsentAction,
    *purposes: ConsentPurpose,
    at: datetime = T0,
    kinds: frozenset[PartnerKind] | None = None,
    expires_at: datetime | None = None,
) -> ConsentRecord:
    return ConsentRecord(
        action=action,
        purposes=frozenset(purposes),
        recorded_at=at,
        recorded_by="monitor-7",
        method="verbal",
        partner_kinds=kinds,
        expires_at=expires_at,
    )


def test_no_consent_recorded_is_refused() -> None:
    decision = may_refer([], REFERRAL, NOW)
    assert not decision.allowed
    assert decision.reason == "no_consent_recorded"
    assert decision.basis is None
    assert decision.override is False


def test_current_consent_allows_and_names_its_basis() -> None:
    grant = record("granted", REFERRAL, ConsentPurpose.FOLLOW_UP)
    decision = may_refer([grant], REFERRAL, NOW, partner_kind=PartnerKind.LEGAL_AID)
    assert decision.allowed
    assert decision.reason == "consent_current"
    assert decision.basis == grant
    assert decision.override is False
    assert decision.decided_at == NOW
    assert decision.partner_kind is PartnerKind.LEGAL_AID


def test_purposes_are_independent() -> None:
    history = [record("granted", ConsentPurpose.FOLLOW_UP)]
    assert not may_refer(history, REFERRAL, NOW).allowed
    assert not may_refer(history, ConsentPurpose.SHARING, NOW).allowed
    assert may_refer(history, ConsentPurpose.FOLLOW_UP, NOW).allowed


def test_withdrawal_blocks_and_a_later_grant_restores() -> None:
    grant = record("granted", REFERRAL, ConsentPurpose.SHARING)
    withdrawal = record("withdrawn", REFERRAL, ConsentPurpose.SHARING, at=T0 + timedelta(days=2))
    regrant = record("granted", REFERRAL, at=T0 + timedelta(days=5))

    blocked = may_refer([grant, withdrawal], REFERRAL, NOW)
    assert not blocked.allowed
    assert blocked.reason == "consent_withdrawn"
    assert blocked.basis == withdrawal
    assert may_refer([grant, withdrawal, regrant], REFERRAL, NOW).allowed
    # The re-grant covered referral only; sharing stays withdrawn. Order of the list is irrelevant.
    assert not may_refer([regrant, withdrawal, grant], ConsentPurpose.SHARING, NOW).allowed
    assert may_refer([regrant, withdrawal, grant], REFERRAL, NOW).allowed


def test_decision_looks_only_at_records_made_by_then() -> None:
    grant = record("granted", REFERRAL)
    later_withdrawal = record("withdrawn", REFERRAL, at=NOW + timedelta(hours=1))
    assert may_refer([grant, later_withdrawal], REFERRAL, NOW).allowed
    assert not may_refer([grant, later_withdrawal], REFERRAL, NOW + timedelta(hours=2)).allowed
    assert not may_refer([grant], REFERRAL, T0 - timedelta(seconds=1)).allowed


@pytest.mark.parametrize("withdrawal_first", [True, False])
def test_withdrawal_wins_a_tie(withdrawal_first: bool) -> None:
    grant, withdrawal = record("granted", REFERRAL), record("withdrawn", REFERRAL)
    history = [withdrawal, grant] if withdrawal_first else [grant, withdrawal]
    assert current_consent(history, REFERRAL, NOW) == withdrawal
    assert not may_refer(history, REFERRAL, NOW).allowed


def test_expired_consent_is_refused() -> None:
    grant = record("granted", REFERRAL, expires_at=NOW)
    assert may_refer([grant], REFERRAL, NOW - timedelta(seconds=1)).allowed
    decision = may_refer([grant], REFERRAL, NOW)
    assert not decision.allowed
    assert decision.reason == "consent_expired"


def test_consent_narrowed_to_partner_kinds() -> None:
    grant = record("granted", REFERRAL, kinds=frozenset({PartnerKind.LEGAL_AID}))
    assert may_refer([grant], REFERRAL, NOW, partner_kind=PartnerKind.LEGAL_AID).allowed
    refused = may_refer([grant], REFERRAL, NOW, partner_kind=PartnerKind.EMBASSY)
    assert not refused.allowed
    assert refused.reason == "partner_kind_not_covered"


def test_override_with_written_justification_is_allowed_and_marked() -> None:
    override = ConsentOverride(actor_id="supervisor-2", justification=GOOD_JUSTIFICATION)
    decision = may_refer([], REFERRAL, NOW, partner_kind=PartnerKind.SHELTER, override=override)
    assert decision.allowed
    assert decision.override is True
    assert decision.reason == "override_justified"
    assert decision.override_by == "supervisor-2"
    assert decision.justification == GOOD_JUSTIFICATION


def test_override_covers_expired_and_narrowed_consent() -> None:
    override = ConsentOverride(actor_id="s", justification=GOOD_JUSTIFICATION)
    expired = record("granted", REFERRAL, expires_at=T0 + timedelta(days=1))
    narrow = record("granted", REFERRAL, kinds=frozenset({PartnerKind.UNION}))
    assert may_refer([expired], REFERRAL, NOW, override=override).override
    assert may_refer(
        [narrow], REFERRAL, NOW, partner_kind=PartnerKind.HEALTH, override=override
    ).override


def test_override_justification_must_be_long_enough_without_padding() -> None:
    short = "x" * (MIN_OVERRIDE_JUSTIFICATION - 1)
    padded = ConsentOverride(actor_id="s", justification=f"   {short}        ")
    decision = may_refer([], REFERRAL, NOW, override=padded)
    assert not decision.allowed
    assert decision.reason == "override_justification_too_short"
    exact = ConsentOverride(actor_id="s", justification="x" * MIN_OVERRIDE_JUSTIFICATION)
    assert may_refer([], REFERRAL, NOW, override=exact).allowed
    assert not may_refer([], REFERRAL, NOW, override=exact, min_justification=100).allowed


def test_override_never_beats_a_withdrawal() -> None:
    history = [record("granted", REFERRAL), record("withdrawn", REFERRAL, at=T0 + timedelta(1))]
    override = ConsentOverride(actor_id="s", justification=GOOD_JUSTIFICATION)
    decision = may_refer(history, REFERRAL, NOW, override=override)
    assert not decision.allowed
    assert decision.reason == "consent_withdrawn"
    assert decision.override is False


def test_override_is_not_used_when_consent_is_current() -> None:
    override = ConsentOverride(actor_id="s", justification=GOOD_JUSTIFICATION)
    decision = may_refer([record("granted", REFERRAL)], REFERRAL, NOW, override=override)
    assert decision.allowed
    assert decision.override is False


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        may_refer([], REFERRAL, datetime(2025, 1, 1))


def test_every_partner_kind_has_a_minimum_data_set() -> None:
    assert set(REFERRAL_DATA_SET) == set(PartnerKind)
    assert all(REFERRAL_DATA_SET[kind] for kind in PartnerKind)


def test_inspectorate_never_receives_the_workers_identity() -> None:
    fields = REFERRAL_DATA_SET[PartnerKind.LABOUR_INSPECTORATE]
    assert fields.isdisjoint({"worker_name", "contact_phone", "passport_number"})
    assert "employer_name" in fields


def test_referral_payload_keeps_only_the_partners_fields() -> None:
    case_data: dict[str, object] = {
        "worker_name": "R. Tamang",
        "passport_number": "PA1234567",
        "contact_phone": "+9779800000000",
        "employer_name": "Example Sdn Bhd",
        "incident_categories": ["FL.DOC_RETENTION"],
        "gps": (3.1, 101.6),
    }
    legal = referral_payload(case_data, PartnerKind.LEGAL_AID)
    assert legal == {
        "worker_name": "R. Tamang",
        "contact_phone": "+9779800000000",
        "employer_name": "Example Sdn Bhd",
        "incident_categories": ["FL.DOC_RETENTION"],
    }
    inspectorate = referral_payload(case_data, PartnerKind.LABOUR_INSPECTORATE)
    assert set(inspectorate) == {"employer_name", "incident_categories"}
    assert "passport_number" in referral_payload(case_data, PartnerKind.EMBASSY)


def test_decision_round_trips_for_the_audit_log() -> None:
    override = ConsentOverride(actor_id="s", justification=GOOD_JUSTIFICATION)
    decision = may_refer([], REFERRAL, NOW, override=override)
    encoded = msgspec.json.encode(decision)
    assert msgspec.json.decode(encoded, type=type(decision)) == decision


history_strategy = st.lists(
    st.builds(
        record,
        st.sampled_from(["granted", "withdrawn"]),
        st.sampled_from(list(ConsentPurpose)),
        at=st.integers(min_value=0, max_value=20).map(lambda d: T0 + timedelta(days=d)),
    ),
    max_size=8,
)


@given(history_strategy, st.sampled_from(list(ConsentPurpose)), st.booleans())
def test_a_withdrawal_as_latest_word_always_blocks(
    history: list[ConsentRecord], purpose: ConsentPurpose, with_override: bool
) -> None:
    override = ConsentOverride("s", GOOD_JUSTIFICATION) if with_override else None
    now = T0 + timedelta(days=10)
    decision = may_refer(history, purpose, now, override=override)
    relevant = [r for r in history if purpose in r.purposes and r.recorded_at <= now]
    if not relevant:
        assert decision.allowed == with_override
        return
    last_time = max(r.recorded_at for r in relevant)
    withdrawn_last = any(r.action == "withdrawn" for r in relevant if r.recorded_at == last_time)
    assert decision.allowed == (not withdrawn_last)
    assert decision.override is False
