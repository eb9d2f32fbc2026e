"""Sync messages decode the same from JSON and MessagePack, and bad input is refused precisely."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import msgspec
import pytest

from cases.reports import DeclaredAttachment
from sync.changes import (
    Change,
    EntityChange,
    RecordKind,
    ReportStatusChange,
    TaskChange,
    TaxonomyChange,
    Tombstone,
    TombstoneReason,
)
from sync.codec import (
    InvalidMutation,
    StoredChanges,
    StoredPullResponse,
    WireFormat,
    decode,
    decode_mutation,
    decode_push,
    encode,
    format_for_content_type,
)
from sync.messages import (
    AmendReport,
    CreateReport,
    MutationResult,
    MutationStatus,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    ReportChanges,
    ResetReason,
)
from tests.unit.sync.samples import NOW, report_dict

DEVICE = "1d2c3b4a-0000-4000-8000-000000000001"


def raw(body: object, fmt: WireFormat) -> bytes:
    return msgspec.json.encode(body) if fmt is WireFormat.JSON else msgspec.msgpack.encode(body)


def mutation(seq: int = 1, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "create_report",
        "seq": seq,
        "mutation_id": str(uuid.UUID(int=seq)),
        "recorded_at": "2025-03-01T09:00:00Z",
        "report": report_dict(),
    }
    body.update(overrides)
    return body


def push(*mutations: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol_version": "1",
        "device_id": DEVICE,
        "sent_at": "2025-03-01T09:05:00Z",
        "outbox_depth": len(mutations),
        "mutations": list(mutations),
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_push_round_trip(fmt: WireFormat) -> None:
    decoded = decode_push(raw(push(mutation(1), mutation(2)), fmt), fmt)
    assert [type(m) for m in decoded.mutations] == [CreateReport, CreateReport]
    assert [m.seq for m in decoded.mutations if isinstance(m, CreateReport)] == [1, 2]
    again = decode(PushRequest, encode(decoded.request, fmt), fmt)
    assert again.device_id == uuid.UUID(DEVICE)


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_unknown_fields_are_accepted(fmt: WireFormat) -> None:
    body = push(mutation(1, client_note="hi"), battery=0.4)
    decoded = decode_push(raw(body, fmt), fmt)
    assert isinstance(decoded.mutations[0], CreateReport)


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_unknown_kind_is_rejected_by_the_union(fmt: WireFormat) -> None:
    with pytest.raises(msgspec.ValidationError, match="kind"):
        decode_mutation(raw(mutation(1, kind="teleport_report"), fmt), fmt)


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_one_bad_mutation_does_not_fail_the_batch(fmt: WireFormat) -> None:
    bad_location = report_dict(location={"lat": 123.0, "lon": 0.0})
    body = push(
        mutation(1),
        mutation(2, report=bad_location),
        mutation(3, kind="teleport_report"),
        mutation(4),
    )
    decoded = decode_push(raw(body, fmt), fmt)
    kinds = [type(m).__name__ for m in decoded.mutations]
    assert kinds == ["CreateReport", "InvalidMutation", "InvalidMutation", "CreateReport"]
    second, third = decoded.mutations[1], decoded.mutations[2]
    assert isinstance(second, InvalidMutation)
    assert isinstance(third, InvalidMutation)
    assert second.envelope.seq == 2
    assert "location.lat" in second.error
    assert not second.unknown_kind
    assert third.unknown_kind


def test_msgpack_nan_coordinate_is_an_invalid_mutation() -> None:
    fmt = WireFormat.MSGPACK  # JSON cannot spell NaN; see test_reports
    body = push(mutation(1, report=report_dict(location={"lat": float("nan"), "lon": 1.0})))
    decoded = decode_push(raw(body, fmt), fmt)
    assert isinstance(decoded.mutations[0], InvalidMutation)


@pytest.mark.parametrize("fmt", list(WireFormat))
@pytest.mark.parametrize(
    "body",
    [
        push(),  # empty batch
        push(*[mutation(i) for i in range(1, 502)]),  # over the batch limit
        push(mutation(1), device_id="not-a-uuid"),
        push(mutation(1), sent_at="2025-03-01T09:05:00"),  # no time zone
        push(mutation(1), outbox_depth=-1),
        push({"kind": "create_report", "report": report_dict()}),  # no seq or mutation id
        push(mutation(0)),  # seqs start at 1
    ],
)
def test_malformed_push_fails_as_a_whole(fmt: WireFormat, body: dict[str, Any]) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_push(raw(body, fmt), fmt)


def test_oversized_narrative_is_refused() -> None:
    body = push(mutation(1, report=report_dict(narrative="x" * 20_001)))
    decoded = decode_push(raw(body, WireFormat.JSON), WireFormat.JSON)
    item = decoded.mutations[0]
    assert isinstance(item, InvalidMutation)
    assert "narrative" in item.error


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_amendment_distinguishes_unset_from_null(fmt: WireFormat) -> None:
    body = {
        "kind": "amend_report",
        "seq": 2,
        "mutation_id": str(uuid.UUID(int=2)),
        "recorded_at": "2025-03-01T09:00:00Z",
        "report_id": report_dict()["id"],
        "base_version": 1,
        "changes": {"severity": 5, "sector": None, "id": "ignored"},
    }
    amend = decode_mutation(raw(body, fmt), fmt)
    assert isinstance(amend, AmendReport)
    assert amend.changes.severity == 5
    assert amend.changes.sector is None
    assert amend.changes.narrative is msgspec.UNSET
    assert ReportChanges(severity=5, sector=None) == amend.changes


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_responses_round_trip(fmt: WireFormat) -> None:
    result = MutationResult(
        mutation_id=uuid.UUID(int=1),
        seq=1,
        status=MutationStatus.APPLIED,
        version=1,
        received_at=NOW,
    )
    response = PushResponse(results=(result,), next_expected_seq=2, received_at=NOW)
    assert decode(PushResponse, encode(response, fmt), fmt) == response
    pull = PullResponse(
        changes=(
            Tombstone(
                version=3,
                changed_at=NOW,
                record_kind=RecordKind.REPORT,
                record_id="x",
                reason=TombstoneReason.OUT_OF_SCOPE,
            ),
        ),
        next_cursor="abc",
        server_time=NOW,
    )
    assert decode(PullResponse, encode(pull, fmt), fmt) == pull


@pytest.mark.parametrize("limit", [0, 1001])
def test_pull_limit_is_bounded(limit: int) -> None:
    body = msgspec.json.encode({"device_id": DEVICE, "limit": limit})
    with pytest.raises(msgspec.ValidationError, match="limit"):
        decode(PullRequest, body, WireFormat.JSON)


def test_content_types() -> None:
    assert format_for_content_type("application/json; charset=utf-8") is WireFormat.JSON
    assert format_for_content_type("application/msgpack") is WireFormat.MSGPACK
    assert format_for_content_type("Application/X-MsgPack") is WireFormat.MSGPACK
    assert format_for_content_type("text/plain") is None
    assert format_for_content_type(None) is None


def _every_kind_of_change() -> tuple[Change, ...]:
    return (
        ReportStatusChange(
            version=2,
            report_version=1,
            changed_at=NOW,
            report_id=uuid.UUID(int=7),
            status="received",
            missing_attachments=("ab" * 32,),
        ),
        TaskChange(
            version=1,
            changed_at=NOW,
            task_id=uuid.UUID(int=8),
            prompt="Which agency took the fee? ÖÇ नेपाल",
            due_at=NOW + dt.timedelta(days=2),
            attachments=(
                DeclaredAttachment(sha256="cd" * 32, size_bytes=10, media_type="image/jpeg"),
            ),
        ),
        TaxonomyChange(
            version=3,
            changed_at=NOW,
            code="FL.DOC_RETENTION",
            labels={"en": "Passport kept", "ar": "حجز جواز السفر"},
            taxonomy_version="3",
        ),
        EntityChange(
            version=1,
            changed_at=NOW,
            entity_id=uuid.UUID(int=9),
            entity_kind="recruitment_agency",
            name="Gulf Star Manpower W.L.L.",
            aliases=("Gulf Star",),
            phones=("+97441234567",),
            country="QA",
        ),
        Tombstone(
            version=4,
            changed_at=NOW,
            record_kind=RecordKind.ENTITY,
            record_id=str(uuid.UUID(int=10)),
            reason=TombstoneReason.OUT_OF_SCOPE,
        ),
    )


def test_stored_pull_response_mirrors_pull_response() -> None:
    # Same fields, order and defaults but for the type of ``changes``: a field added to one
    # must be added to the other, or the two would encode differently.
    def shape(t: type[msgspec.Struct]) -> list[tuple[str, object]]:
        fields = msgspec.structs.fields(t)
        return [(f.name, None if f.name == "changes" else f.default) for f in fields]

    assert shape(StoredPullResponse) == shape(PullResponse)


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_stored_page_encodes_like_the_typed_page(fmt: WireFormat) -> None:
    changes = _every_kind_of_change()
    stored = StoredChanges(msgspec.json.encode(c).decode() for c in changes)
    page = StoredPullResponse(changes=stored, has_more=True, next_cursor="abc", server_time=NOW)
    typed = PullResponse(changes=changes, has_more=True, next_cursor="abc", server_time=NOW)
    assert encode(page, fmt) == encode(typed, fmt)
    assert page.typed() == typed
    assert decode(PullResponse, encode(page, fmt), fmt) == typed
    why = ResetReason.SCOPE_CHANGED
    reset = StoredPullResponse(reset_required=True, reset_reason=why, server_time=NOW)
    typed_reset = PullResponse(reset_required=True, reset_reason=why, server_time=NOW)
    assert encode(reset, fmt) == encode(typed_reset, fmt)


@pytest.mark.parametrize("fmt", list(WireFormat))
def test_stored_bodies_in_another_json_layout_decode_the_same(fmt: WireFormat) -> None:
    # Rows stored before migration 0010 have jsonb's layout: keys reordered, spaces added.
    changes = _every_kind_of_change()
    relaid = []
    for change in changes:
        fields = msgspec.json.decode(msgspec.json.encode(change))
        reordered = dict(sorted(fields.items(), key=lambda kv: (len(kv[0]), kv[0])))
        relaid.append(json.dumps(reordered, ensure_ascii=False))
    page = StoredPullResponse(changes=StoredChanges(relaid), server_time=NOW)
    assert decode(PullResponse, encode(page, fmt), fmt).changes == changes


def test_a_malformed_stored_body_is_refused_for_msgpack() -> None:
    # JSON passes stored text through (the column only holds valid JSON); MessagePack decodes it.
    page = StoredPullResponse(changes=StoredChanges(['{"kind": "nope"}']), server_time=NOW)
    with pytest.raises(msgspec.ValidationError):
        encode(page, WireFormat.MSGPACK)


def test_unknown_objects_still_cannot_be_encoded() -> None:
    for fmt in WireFormat:
        with pytest.raises(TypeError, match="unsupported"):
            encode(object(), fmt)
