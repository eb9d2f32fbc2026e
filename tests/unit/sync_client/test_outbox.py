"""The device outbox: seq handed out once, survival across reopen, atomic pages, resets."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sync.changes import (
    RecordKind,
    ReportStatusChange,
    TaxonomyChange,
    Tombstone,
    TombstoneReason,
)
from sync.client.outbox import Outbox
from sync.messages import (
    CreateReport,
    EnrollResponse,
    MutationResult,
    MutationStatus,
    ReasonCode,
)
from tests.unit.sync.samples import NOW, sample_report


def _create(outbox: Outbox, **overrides: Any) -> CreateReport:
    report = sample_report(id=str(uuid.uuid4()), **overrides)
    return outbox.enqueue(
        lambda seq: CreateReport(seq=seq, mutation_id=uuid.uuid4(), recorded_at=NOW, report=report)
    )


def _result(
    m: CreateReport, status: MutationStatus, reason: ReasonCode | None = None
) -> MutationResult:
    return MutationResult(
        mutation_id=m.mutation_id,
        seq=m.seq,
        status=status,
        reason=reason,
        record_id=m.report.id,
        version=1 if status is MutationStatus.APPLIED else None,
        received_at=NOW,
    )


def _status(report_id: uuid.UUID, version: int, status: str = "received") -> ReportStatusChange:
    return ReportStatusChange(version=version, changed_at=NOW, report_id=report_id, status=status)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "device" / "outbox.sqlite3"


def test_seq_is_assigned_once_and_never_reused_across_reopen(path: Path) -> None:
    outbox = Outbox.open(path)
    first = [_create(outbox) for _ in range(3)]
    assert [m.seq for m in first] == [1, 2, 3]
    # Everything settles: the outbox is empty, but the counter must not go back.
    assert outbox.record_results([_result(m, MutationStatus.APPLIED) for m in first]) == 3
    assert outbox.depth() == 0
    outbox.close()

    reopened = Outbox.open(path)  # the app was killed and started again
    assert _create(reopened).seq == 4
    assert [p.seq for p in reopened.pending()] == [4]
    reopened.close()


def test_a_pending_mutation_survives_a_restart_byte_for_byte(path: Path) -> None:
    outbox = Outbox.open(path)
    created = _create(outbox)
    body = outbox.pending()[0].body
    outbox.close()
    pending = Outbox.open(path).pending()
    assert len(pending) == 1
    assert pending[0].body == body
    assert pending[0].mutation() == created


def test_an_invalid_mutation_is_refused_before_it_takes_a_seq(path: Path) -> None:
    outbox = Outbox.open(path)
    with pytest.raises(msgspec.ValidationError, match="severity"):
        _create(outbox, severity=9)
    assert outbox.depth() == 0
    assert _create(outbox).seq == 1


def test_final_results_leave_the_outbox_held_and_seq_gap_stay(path: Path) -> None:
    outbox = Outbox.open(path)
    applied, held, gap, rejected = (_create(outbox) for _ in range(4))
    settled = outbox.record_results(
        [
            _result(applied, MutationStatus.APPLIED),
            _result(held, MutationStatus.HELD, ReasonCode.WAITING_FOR_PREDECESSOR),
            _result(gap, MutationStatus.REJECTED, ReasonCode.SEQ_GAP),
            _result(rejected, MutationStatus.REJECTED, ReasonCode.UNKNOWN_CATEGORY),
        ]
    )
    assert settled == 2
    assert [p.seq for p in outbox.pending()] == [held.seq, gap.seq]
    assert {r.mutation_id for r in outbox.results()} == {applied.mutation_id, rejected.mutation_id}
    local = outbox.report(applied.report.id)
    assert local is not None and local.server_version == 1
    # A late duplicate answer for a settled mutation changes nothing.
    assert outbox.record_results([_result(applied, MutationStatus.HELD)]) == 0
    assert outbox.result(applied.mutation_id) == _result(applied, MutationStatus.APPLIED)


def test_a_page_and_its_cursor_are_stored_together(path: Path) -> None:
    outbox = Outbox.open(path)
    rid = uuid.uuid4()
    outbox.apply_page([_status(rid, 1)], "cursor-1")
    # The second page fails half-way (a corrupt change): neither its rows nor its cursor land.
    broken: Any = object()
    with pytest.raises(AttributeError):
        outbox.apply_page([_status(rid, 2), broken], "cursor-2")
    assert outbox.cursor() == "cursor-1"
    assert outbox.pulled_version("report", str(rid)) == 1
    outbox.close()
    reopened = Outbox.open(path)
    assert reopened.cursor() == "cursor-1"
    assert reopened.pulled("report") == [_status(rid, 1)]


def test_changes_not_newer_than_the_local_copy_are_skipped(path: Path) -> None:
    outbox = Outbox.open(path)
    rid = uuid.uuid4()
    first = outbox.apply_page([_status(rid, 2, "triage")], "c1")
    again = outbox.apply_page([_status(rid, 2, "triage"), _status(rid, 1, "received")], "c2")
    assert (first.stored, again.stored, again.skipped) == (1, 0, 2)
    assert outbox.pulled("report") == [_status(rid, 2, "triage")]


def test_a_tombstone_removes_the_record_and_keeps_older_copies_out(path: Path) -> None:
    outbox = Outbox.open(path)
    own = _create(outbox)
    rid = own.report.id
    outbox.apply_page([_status(rid, 1)], "c1")
    tomb = Tombstone(
        version=3,
        changed_at=NOW,
        record_kind=RecordKind.REPORT,
        record_id=str(rid),
        reason=TombstoneReason.DELETED,
    )
    page = outbox.apply_page([tomb, _status(rid, 2)], "c2")
    assert (page.removed, page.skipped) == (1, 1)
    assert outbox.pulled("report") == []
    assert outbox.report(rid) is None
    # The outbox is the monitor's own work: a tombstone never drops a pending mutation.
    assert [p.mutation_id for p in outbox.pending()] == [own.mutation_id]


def test_reset_drops_pulled_data_and_cursor_but_keeps_the_outbox(path: Path) -> None:
    outbox = Outbox.open(path)
    own = _create(outbox)
    taxonomy = TaxonomyChange(
        version=1,
        changed_at=NOW,
        code="wages.withheld",
        labels={"en": "Wages withheld"},
        taxonomy_version="2",
    )
    outbox.apply_page([taxonomy, _status(own.report.id, 1)], "c9")
    outbox.reset_pulled()
    assert outbox.cursor() is None
    assert outbox.pulled("taxonomy") == []
    assert outbox.pulled_version("report", str(own.report.id)) is None
    assert [p.seq for p in outbox.pending()] == [own.seq]
    assert outbox.report(own.report.id) is not None


def test_identity_is_kept_and_wipe_erases_everything(path: Path) -> None:
    outbox = Outbox.open(path)
    enrolled = EnrollResponse(
        device_id=uuid.uuid4(),
        credential="secret-credential-value",
        monitor_id=uuid.uuid4(),
        enrolled_at=NOW,
    )
    outbox.save_identity(enrolled)
    with pytest.raises(RuntimeError):
        outbox.save_identity(enrolled)
    _create(outbox)
    outbox.apply_page([_status(uuid.uuid4(), 1)], "c1")
    outbox.close()
    reopened = Outbox.open(path)
    identity = reopened.identity()
    assert identity is not None and identity.device_id == enrolled.device_id
    reopened.wipe()
    assert reopened.identity() is None
    assert (reopened.depth(), reopened.cursor(), reopened.report_ids()) == (0, None, [])
    assert reopened.next_seq() == 1
