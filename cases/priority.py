"""Case priority derived from what was reported, with the reasons that produced it.

Every rule sets a floor; the priority is the highest floor any rule reached. The reasons let a
case manager see why a case jumped the queue, and overrule it knowingly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

import msgspec

from cases.taxonomy import Taxonomy

__all__ = [
    "INDICATOR_COUNT_FOR_HIGH",
    "REPORT_SEVERITY_FLOORS",
    "SEVERITY_HINT_FLOORS",
    "WORKERS_AFFECTED_FOR_HIGH",
    "WORKERS_AFFECTED_FOR_NORMAL",
    "Priority",
    "PriorityAssessment",
    "PriorityReason",
    "derive_priority",
]


class Priority(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """Larger is more urgent; use it to compare priorities."""
        return _RANKS[self]


_RANKS: Final = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}

# Taxonomy severity hints (1..5) to a priority floor. Only physical and sexual violence carry 5.
SEVERITY_HINT_FLOORS: Final = {
    1: Priority.LOW,
    2: Priority.LOW,
    3: Priority.NORMAL,
    4: Priority.HIGH,
    5: Priority.CRITICAL,
}
# The reporter's own assessment (1..5); 5 means "immediate danger to life or safety".
REPORT_SEVERITY_FLOORS: Final = {4: Priority.HIGH, 5: Priority.CRITICAL}
# The ILO treats several indicators together as a sign of forced labour, even when each one alone
# looks like an ordinary labour dispute.
INDICATOR_COUNT_FOR_HIGH: Final = 3
WORKERS_AFFECTED_FOR_NORMAL: Final = 10
WORKERS_AFFECTED_FOR_HIGH: Final = 50


class PriorityReason(msgspec.Struct, frozen=True):
    """One rule that fired: a stable rule name, a human explanation and the floor it set."""

    rule: str
    detail: str
    floor: Priority


class PriorityAssessment(msgspec.Struct, frozen=True):
    priority: Priority
    reasons: tuple[PriorityReason, ...]
    # Codes the taxonomy does not know; they cannot raise priority, but a reviewer should see them.
    ignored_codes: tuple[str, ...] = ()


def derive_priority(
    categories: Iterable[str],
    taxonomy: Taxonomy,
    *,
    report_severity: int | None = None,
    workers_affected: int | None = None,
) -> PriorityAssessment:
    """The priority for a case from its category codes, reported severity and workers affected.

    Retired codes count as their successors. Reasons are ordered most urgent first.
    """
    if report_severity is not None and not 1 <= report_severity <= 5:
        raise ValueError("report_severity must be between 1 and 5")
    if workers_affected is not None and workers_affected < 1:
        raise ValueError("workers_affected must be at least 1")

    codes = list(dict.fromkeys(categories))
    known = [c for c in codes if c in taxonomy]
    ignored = tuple(c for c in codes if c not in taxonomy)
    reasons = [PriorityReason("baseline", "every report starts at low", Priority.LOW)]
    reasons += _category_reasons(known, taxonomy)

    if report_severity is not None and report_severity in REPORT_SEVERITY_FLOORS:
        reasons.append(
            PriorityReason(
                "report_severity",
                f"reporter assessed severity {report_severity} of 5",
                REPORT_SEVERITY_FLOORS[report_severity],
            )
        )
    if workers_affected is not None and workers_affected >= WORKERS_AFFECTED_FOR_NORMAL:
        floor = Priority.HIGH if workers_affected >= WORKERS_AFFECTED_FOR_HIGH else Priority.NORMAL
        reasons.append(
            PriorityReason("workers_affected", f"{workers_affected} workers affected", floor)
        )

    # Stable sort keeps rule order among equal floors, so the explanation reads predictably.
    reasons.sort(key=lambda r: -r.floor.rank)
    return PriorityAssessment(
        priority=reasons[0].floor, reasons=tuple(reasons), ignored_codes=ignored
    )


def _category_reasons(codes: list[str], taxonomy: Taxonomy) -> list[PriorityReason]:
    reasons: list[PriorityReason] = []
    if not codes:
        return reasons
    categories = [taxonomy.category(taxonomy.canonical_code(c)) for c in codes]
    top = max(categories, key=lambda c: c.severity_hint)
    reasons.append(
        PriorityReason(
            "severity_hint",
            f"{top.code} has severity hint {top.severity_hint} of 5",
            SEVERITY_HINT_FLOORS[top.severity_hint],
        )
    )

    for group in taxonomy.priority_groups:
        members = sorted({c.code for c in categories if c.code in group.categories})
        if members:
            reasons.append(
                PriorityReason(
                    f"group:{group.code}",
                    f"{', '.join(members)} in high-priority group {group.code}",
                    Priority(group.escalates_to),
                )
            )

    forced_labour_indicators = sorted(
        {i for c in categories for i in c.indicators if i.startswith("ILO-FL-")}
    )
    if len(forced_labour_indicators) >= INDICATOR_COUNT_FOR_HIGH:
        reasons.append(
            PriorityReason(
                "ilo_indicator_count",
                f"{len(forced_labour_indicators)} distinct ILO forced labour indicators: "
                + ", ".join(forced_labour_indicators),
                Priority.HIGH,
            )
        )
    return reasons
