"""Consent-gated referral: what a worker agreed to, and whether a case may be shared with a partner.

A referral exposes a worker to people outside the monitoring network, so it needs the worker's
current recorded consent for that purpose, or an audited override with a written justification.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, Literal

import msgspec

__all__ = [
    "MIN_OVERRIDE_JUSTIFICATION",
    "REFERRAL_DATA_SET",
    "ConsentAction",
    "ConsentMethod",
    "ConsentOverride",
    "ConsentPurpose",
    "ConsentRecord",
    "Decision",
    "DecisionReason",
    "PartnerKind",
    "current_consent",
    "may_refer",
    "referral_payload",
]

MIN_OVERRIDE_JUSTIFICATION: Final = 40


class ConsentPurpose(enum.StrEnum):
    """What the worker agrees to. Purposes are independent: one never implies another."""

    FOLLOW_UP = "follow_up"  # being contacted again by the NGO or a monitor
    REFERRAL = "referral"  # the case passed to a partner organisation for help
    SHARING = "sharing"  # case data shared beyond a referral (advocacy, brand, regulator)


class PartnerKind(enum.StrEnum):
    LEGAL_AID = "legal_aid"
    SHELTER = "shelter"
    EMBASSY = "embassy"
    UNION = "union"
    HEALTH = "health"
    LABOUR_INSPECTORATE = "labour_inspectorate"


ConsentAction = Literal["granted", "withdrawn"]
ConsentMethod = Literal["verbal", "written", "in_app"]
DecisionReason = Literal[
    "consent_current",
    "no_consent_recorded",
    "consent_withdrawn",
    "consent_expired",
    "partner_kind_not_covered",
    "override_justified",
    "override_justification_too_short",
]


class ConsentRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One statement by the worker, as recorded by a monitor or case manager.

    ``partner_kinds`` narrows a grant to some kinds of partner (None means any kind); on a
    withdrawal it is ignored, because a worker who withdraws means all of it.
    """

    action: ConsentAction
    purposes: frozenset[ConsentPurpose]
    recorded_at: datetime
    recorded_by: str
    method: ConsentMethod
    partner_kinds: frozenset[PartnerKind] | None = None
    expires_at: datetime | None = None


class ConsentOverride(msgspec.Struct, frozen=True):
    """A decision to refer without current consent, e.g. a worker in danger who cannot be asked."""

    actor_id: str
    justification: str


class Decision(msgspec.Struct, frozen=True):
    """Whether a referral or share may go ahead, and on what basis; stored for audit."""

    allowed: bool
    purpose: ConsentPurpose
    reason: DecisionReason
    decided_at: datetime
    partner_kind: PartnerKind | None = None
    override: bool = False
    basis: ConsentRecord | None = None
    override_by: str | None = None
    justification: str | None = None


def current_consent(
    history: Iterable[ConsentRecord], purpose: ConsentPurpose, now: datetime
) -> ConsentRecord | None:
    """The latest record about ``purpose`` made at or before ``now``, grant or withdrawal."""
    _require_aware(now)
    latest: ConsentRecord | None = None
    for record in history:
        _require_aware(record.recorded_at)
        if purpose not in record.purposes or record.recorded_at > now:
            continue
        # On equal timestamps a withdrawal wins: when in doubt, do not share.
        if (
            latest is None
            or record.recorded_at > latest.recorded_at
            or (record.recorded_at == latest.recorded_at and record.action == "withdrawn")
        ):
            latest = record
    return latest


def may_refer(
    consent_history: Iterable[ConsentRecord],
    purpose: ConsentPurpose,
    now: datetime,
    *,
    partner_kind: PartnerKind | None = None,
    override: ConsentOverride | None = None,
    min_justification: int = MIN_OVERRIDE_JUSTIFICATION,
) -> Decision:
    """Whether the case may be referred or shared for ``purpose`` (to ``partner_kind``) now.

    Allowed when the worker's current consent covers the purpose and partner kind. Otherwise an
    override with a justification of at least ``min_justification`` characters allows it, marked
    ``override=True``, except after an explicit withdrawal: a worker's "no" is never overridden.
    """
    latest = current_consent(consent_history, purpose, now)

    def decide(
        allowed: bool,
        reason: DecisionReason,
        override_by: str | None = None,
        justification: str | None = None,
    ) -> Decision:
        return Decision(
            allowed=allowed,
            purpose=purpose,
            reason=reason,
            decided_at=now,
            partner_kind=partner_kind,
            override=override_by is not None,
            basis=latest,
            override_by=override_by,
            justification=justification,
        )

    refusal: DecisionReason
    if latest is None:
        refusal = "no_consent_recorded"
    elif latest.action == "withdrawn":
        return decide(False, "consent_withdrawn")
    elif latest.expires_at is not None and latest.expires_at <= now:
        refusal = "consent_expired"
    elif (
        partner_kind is not None
        and latest.partner_kinds is not None
        and partner_kind not in latest.partner_kinds
    ):
        refusal = "partner_kind_not_covered"
    else:
        return decide(True, "consent_current")

    if override is None:
        return decide(False, refusal)
    justification = override.justification.strip()
    if len(justification) < min_justification:
        return decide(False, "override_justification_too_short")
    return decide(True, "override_justified", override.actor_id, justification)


# The least each kind of partner needs to act. Anything else stays with the NGO: an inspectorate,
# for instance, gets the workplace and the violations but never who reported them.
REFERRAL_DATA_SET: Final[Mapping[PartnerKind, frozenset[str]]] = {
    PartnerKind.LEGAL_AID: frozenset(
        {
            "worker_name",
            "contact_phone",
            "preferred_language",
            "nationality",
            "employer_name",
            "recruiter_name",
            "incident_categories",
            "incident_summary",
            "incident_dates",
        }
    ),
    PartnerKind.SHELTER: frozenset(
        {
            "worker_name",
            "contact_phone",
            "preferred_language",
            "gender",
            "dependants_count",
            "current_district",
            "safety_risk",
        }
    ),
    PartnerKind.EMBASSY: frozenset(
        {
            "worker_name",
            "nationality",
            "passport_number",
            "contact_phone",
            "preferred_language",
            "employer_name",
            "current_district",
            "incident_categories",
        }
    ),
    PartnerKind.UNION: frozenset(
        {
            "contact_phone",
            "preferred_language",
            "employer_name",
            "sector",
            "workplace_district",
            "workers_affected",
            "incident_categories",
        }
    ),
    PartnerKind.HEALTH: frozenset(
        {
            "worker_name",
            "contact_phone",
            "preferred_language",
            "gender",
            "age_band",
            "current_district",
            "health_need_summary",
        }
    ),
    PartnerKind.LABOUR_INSPECTORATE: frozenset(
        {
            "employer_name",
            "employer_registration",
            "workplace_address",
            "workers_affected",
            "incident_categories",
            "incident_summary",
            "incident_dates",
        }
    ),
}


def referral_payload(
    case_data: Mapping[str, object], partner_kind: PartnerKind
) -> dict[str, object]:
    """Only the fields of ``case_data`` that ``partner_kind`` may receive."""
    allowed = REFERRAL_DATA_SET[partner_kind]
    return {key: value for key, value in case_data.items() if key in allowed}


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("consent times must be timezone-aware")
