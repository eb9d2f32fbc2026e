"""Priority derived from categories, reported severity and workers affected, with its reasons."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cases.priority import Priority, PriorityAssessment, derive_priority
from cases.taxonomy import Taxonomy, load_taxonomy

TAXONOMY = load_taxonomy()
ALL_CODES = [c.code for c in TAXONOMY.categories]


def rules(assessment: PriorityAssessment) -> set[str]:
    return {r.rule for r in assessment.reasons}


def test_nothing_reported_is_low() -> None:
    assessment = derive_priority([], TAXONOMY)
    assert assessment.priority is Priority.LOW
    assert rules(assessment) == {"baseline"}


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        (["OT.OTHER"], Priority.LOW),
        (["FR.NO_WRITTEN_CONTRACT"], Priority.LOW),
        (["FL.EXCESSIVE_OVERTIME"], Priority.LOW),
        (["FR.RECRUITMENT_FEE"], Priority.NORMAL),
        (["FL.WAGE_WITHHOLDING", "OT.OTHER"], Priority.NORMAL),
        (["FL.ISOLATION"], Priority.HIGH),
        (["FL.DOC_RETENTION"], Priority.HIGH),
        (["FR.RETALIATION"], Priority.HIGH),
        (["FL.PASSPORT_RETENTION"], Priority.HIGH),  # retired, counted as its successor
        (["FL.PHYSICAL_VIOLENCE"], Priority.CRITICAL),
        (["FR.RECRUITMENT_FEE", "FL.SEXUAL_VIOLENCE"], Priority.CRITICAL),
    ],
)
def test_priority_from_categories(codes: list[str], expected: Priority) -> None:
    assert derive_priority(codes, TAXONOMY).priority is expected


def test_coercion_group_is_named_in_the_reasons() -> None:
    assessment = derive_priority(["FL.DEBT_BONDAGE", "FR.RECRUITMENT_FEE"], TAXONOMY)
    assert assessment.priority is Priority.HIGH
    group_reason = next(r for r in assessment.reasons if r.rule == "group:coercion")
    assert group_reason.floor is Priority.HIGH
    assert "FL.DEBT_BONDAGE" in group_reason.detail
    assert "FR.RECRUITMENT_FEE" not in group_reason.detail


def test_violence_reasons_come_first() -> None:
    assessment = derive_priority(["FR.RECRUITMENT_FEE", "FL.PHYSICAL_VIOLENCE"], TAXONOMY)
    assert assessment.reasons[0].floor is Priority.CRITICAL
    assert {"group:violence", "group:coercion", "severity_hint"} <= rules(assessment)
    assert assessment.reasons[-1].rule == "baseline"


def test_several_forced_labour_indicators_together_raise_to_high() -> None:
    two = derive_priority(["FL.DECEPTION", "FL.WAGE_WITHHOLDING"], TAXONOMY)
    assert two.priority is Priority.NORMAL
    assert "ilo_indicator_count" not in rules(two)
    three = derive_priority(
        ["FL.DECEPTION", "FL.WAGE_WITHHOLDING", "FL.EXCESSIVE_OVERTIME"], TAXONOMY
    )
    assert three.priority is Priority.HIGH
    reason = next(r for r in three.reasons if r.rule == "ilo_indicator_count")
    assert "ILO-FL-02" in reason.detail
    assert "ILO-FL-08" in reason.detail
    assert "ILO-FL-11" in reason.detail


def test_indicators_are_counted_once_per_indicator_not_per_category() -> None:
    # Physical and sexual violence share ILO-FL-05; abusive work and housing share ILO-FL-10.
    assessment = derive_priority(
        ["FL.ABUSIVE_WORKING_CONDITIONS", "FL.ABUSIVE_LIVING_CONDITIONS", "OT.OTHER"], TAXONOMY
    )
    assert assessment.priority is Priority.NORMAL


@pytest.mark.parametrize(
    ("severity", "expected"),
    [(1, Priority.LOW), (3, Priority.LOW), (4, Priority.HIGH), (5, Priority.CRITICAL)],
)
def test_report_severity(severity: int, expected: Priority) -> None:
    assessment = derive_priority(["OT.OTHER"], TAXONOMY, report_severity=severity)
    assert assessment.priority is expected
    assert ("report_severity" in rules(assessment)) == (severity >= 4)


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        (1, Priority.LOW),
        (9, Priority.LOW),
        (10, Priority.NORMAL),
        (49, Priority.NORMAL),
        (50, Priority.HIGH),
        (400, Priority.HIGH),
    ],
)
def test_workers_affected(workers: int, expected: Priority) -> None:
    assert derive_priority(["OT.OTHER"], TAXONOMY, workers_affected=workers).priority is expected


def test_unknown_codes_are_ignored_but_reported() -> None:
    assessment = derive_priority(["XX.NOPE", "FR.RECRUITMENT_FEE", "XX.NOPE"], TAXONOMY)
    assert assessment.priority is Priority.NORMAL
    assert assessment.ignored_codes == ("XX.NOPE",)


@pytest.mark.parametrize(
    "kwargs", [{"report_severity": 0}, {"report_severity": 6}, {"workers_affected": 0}]
)
def test_out_of_range_inputs_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        derive_priority([], TAXONOMY, **kwargs)


def test_priority_ranks_order_urgency() -> None:
    ordered = sorted(Priority, key=lambda p: p.rank)
    assert ordered == [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL]


codes_strategy = st.lists(st.sampled_from(ALL_CODES), max_size=6)
severity_strategy = st.none() | st.integers(min_value=1, max_value=5)
workers_strategy = st.none() | st.integers(min_value=1, max_value=500)


@given(codes_strategy, st.sampled_from(ALL_CODES), severity_strategy, workers_strategy)
def test_more_evidence_never_lowers_priority(
    codes: list[str], extra: str, severity: int | None, workers: int | None
) -> None:
    taxonomy: Taxonomy = TAXONOMY
    before = derive_priority(codes, taxonomy, report_severity=severity, workers_affected=workers)
    after = derive_priority(
        [*codes, extra], taxonomy, report_severity=severity, workers_affected=workers
    )
    assert after.priority.rank >= before.priority.rank


@given(codes_strategy, severity_strategy, workers_strategy)
def test_priority_is_the_highest_floor_and_is_explained(
    codes: list[str], severity: int | None, workers: int | None
) -> None:
    assessment = derive_priority(
        codes, TAXONOMY, report_severity=severity, workers_affected=workers
    )
    assert assessment.priority is max((r.floor for r in assessment.reasons), key=lambda p: p.rank)
    assert assessment.reasons[0].floor is assessment.priority
    assert all(r.detail for r in assessment.reasons)
