"""Applying report mutations against what is stored: ownership, versions, duplicates, conflicts."""

from __future__ import annotations

import uuid

import msgspec

from sync.apply import StoredReport, decide_amend, decide_create
from sync.messages import AmendReport, MutationStatus, ReasonCode, ReportChanges
from tests.unit.sync.samples import NOW, create_report, sample_report

MONITOR = uuid.UUID(int=500)
STRANGER = uuid.UUID(int=501)
KNOWN = frozenset({"FR.RECRUITMENT_FEE", "FL.DOC_RETENTION", "FL.WAGE_WITHHOLDING"})


def stored(version: int = 1, **changes: object) -> StoredReport:
    report = msgspec.structs.replace(sample_report(), **changes)
    return StoredReport(report=report, version=version, monitor_id=MONITOR)


def amend(base_version: int, changes: ReportChanges) -> AmendReport:
    return AmendReport(
        seq=2,
        mutation_id=uuid.UUID(int=2),
        recorded_at=NOW,
        report_id=sample_report().id,
        base_version=base_version,
        changes=changes,
    )


def test_new_report_is_version_one() -> None:
    mutation = create_report(1, report=sample_report())
    outcome = decide_create(
        mutation, monitor_id=MONITOR, existing=None, known_categories=KNOWN, received_at=NOW
    )
    assert outcome.result.status is MutationStatus.APPLIED
    assert outcome.result.version == 1
    assert outcome.result.record_id == sample_report().id
    assert outcome.write == sample_report()


def test_unknown_category_is_named() -> None:
    mutation = create_report(1, report=sample_report(categories=["XX.MADE_UP"]))
    outcome = decide_create(
        mutation, monitor_id=MONITOR, existing=None, known_categories=KNOWN, received_at=NOW
    )
    assert outcome.result.reason is ReasonCode.UNKNOWN_CATEGORY
    assert outcome.result.detail is not None
    assert "XX.MADE_UP" in outcome.result.detail
    assert outcome.write is None


def test_same_report_again_is_a_duplicate_and_different_content_is_refused() -> None:
    existing = stored(version=3)
    same = decide_create(
        create_report(9, report=sample_report()),
        monitor_id=MONITOR,
        existing=existing,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert (same.result.status, same.result.version, same.write) == (
        MutationStatus.DUPLICATE,
        3,
        None,
    )
    other = decide_create(
        create_report(9, report=sample_report(severity=1)),
        monitor_id=MONITOR,
        existing=existing,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert other.result.reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY
    assert other.result.version == 3
    stranger = decide_create(
        create_report(9, report=sample_report()),
        monitor_id=STRANGER,
        existing=existing,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert stranger.result.reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY
    assert stranger.result.version is None


def test_amendment_on_the_current_version_applies() -> None:
    current = stored(version=1)
    outcome = decide_amend(
        amend(1, ReportChanges(severity=5)),
        monitor_id=MONITOR,
        current=current,
        base=current.report,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert outcome.result.status is MutationStatus.APPLIED
    assert outcome.result.version == 2
    assert outcome.write is not None
    assert outcome.write.severity == 5


def test_concurrent_amendment_merges_and_records_the_conflict() -> None:
    base = sample_report()
    current = stored(version=3, severity=5, narrative="Edited by the case team.")
    outcome = decide_amend(
        amend(1, ReportChanges(severity=2, workers_affected=30)),
        monitor_id=MONITOR,
        current=current,
        base=base,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert outcome.result.status is MutationStatus.CONFLICT
    assert outcome.result.conflict_fields == ("severity",)
    assert outcome.result.version == 4
    assert outcome.write is not None
    assert (outcome.write.severity, outcome.write.workers_affected) == (5, 30)
    assert outcome.write.narrative == "Edited by the case team."
    assert [c.path for c in outcome.conflicts] == ["severity"]


def test_amendment_refusals() -> None:
    current = stored(version=2)

    def reason(**kwargs: object) -> ReasonCode | None:
        args: dict[str, object] = {
            "monitor_id": MONITOR,
            "current": current,
            "base": current.report,
            "known_categories": KNOWN,
            "received_at": NOW,
        }
        args.update(kwargs)
        mutation = args.pop("mutation", amend(2, ReportChanges(severity=1)))
        return decide_amend(mutation, **args).result.reason  # type: ignore[arg-type]

    assert reason(current=None) is ReasonCode.NOT_FOUND
    assert reason(monitor_id=STRANGER) is ReasonCode.NOT_OWNER
    assert reason(current=msgspec.structs.replace(current, deleted=True)) is ReasonCode.DELETED
    assert reason(current=msgspec.structs.replace(current, redacted=True)) is ReasonCode.REDACTED
    assert reason(mutation=amend(3, ReportChanges(severity=1))) is (ReasonCode.UNKNOWN_BASE_VERSION)
    assert reason(base=None) is ReasonCode.STALE_BASE_VERSION
    bad = amend(2, ReportChanges(categories=("made_up",)))
    assert reason(mutation=bad) is ReasonCode.UNKNOWN_CATEGORY
    assert reason() is None


def test_amendment_that_changes_nothing_keeps_the_version() -> None:
    current = stored(version=2)
    outcome = decide_amend(
        amend(2, ReportChanges(severity=current.report.severity)),
        monitor_id=MONITOR,
        current=current,
        base=current.report,
        known_categories=KNOWN,
        received_at=NOW,
    )
    assert outcome.result.status is MutationStatus.APPLIED
    assert outcome.result.version == 2
    assert outcome.write is None
