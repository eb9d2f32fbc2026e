"""Three-way merge: one-sided changes merge, equal changes agree, divergent changes conflict."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cases.reports import DeclaredAttachment, PartyReference, WorkerIdentity
from sync.merge import merge_fields, merge_report, report_fields
from sync.messages import ReportChanges
from tests.unit.sync.samples import sample_report

SET_FIELDS = {"tags": lambda e: e}
NESTED = frozenset({"person"})
SCALARS = ["a", "b", "c"]

scalar = st.sampled_from([None, 0, 1, 2])
tags = st.lists(st.sampled_from("pqrs"), unique=True, max_size=4)
person = st.one_of(st.none(), st.fixed_dictionaries({"name": scalar, "phone": scalar}))


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    record: dict[str, Any] = {name: draw(scalar) for name in SCALARS}
    record["tags"] = draw(tags)
    record["person"] = draw(person)
    return record


@st.composite
def edits(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """A full edited copy of ``base`` (each field changed or not)."""
    edited = dict(base)
    for name, strategy in [*((n, scalar) for n in SCALARS), ("tags", tags), ("person", person)]:
        if draw(st.booleans()):
            edited[name] = draw(strategy)
    return edited


def merge(base: dict[str, Any], server: dict[str, Any], incoming: dict[str, Any]) -> Any:
    return merge_fields(base, server, incoming, set_fields=SET_FIELDS, nested=NESTED)


def only_changes(base: dict[str, Any], edited: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in edited.items() if base[k] != v}


triples = records().flatmap(lambda base: st.tuples(st.just(base), edits(base), edits(base)))


@settings(max_examples=300)
@given(triples)
def test_merge_laws(triple: tuple[dict[str, Any], dict[str, Any], dict[str, Any]]) -> None:
    base, server, edited = triple
    incoming = only_changes(base, edited)
    result = merge(base, server, incoming)
    conflicted = {c.path.split(".")[0].split("[")[0] for c in result.conflicts}
    for name in server:
        server_changed = server[name] != base[name]
        incoming_changed = name in incoming
        if not incoming_changed:
            assert result.fields[name] == server[name]
        elif not server_changed:
            assert result.fields[name] == incoming[name]
        elif server[name] == incoming[name]:
            assert result.fields[name] == server[name]
            assert name not in conflicted
        elif name in SCALARS:
            # Both changed differently: never last-writer-wins, the server value stays.
            assert name in conflicted
            assert result.fields[name] == server[name]
    for conflict in result.conflicts:
        assert conflict.server != conflict.incoming
        assert conflict.base not in (conflict.server, conflict.incoming)
    assert set(result.changed) == {k for k in result.fields if result.fields[k] != server[k]}


@settings(max_examples=300)
@given(triples)
def test_set_fields_merge_additions_and_removals(
    triple: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, server, edited = triple
    result = merge(base, server, only_changes(base, edited))
    b, s, i = set(base["tags"]), set(server["tags"]), set(edited["tags"])
    assert set(result.fields["tags"]) == (b | (s - b) | (i - b)) - (b - s) - (b - i)
    assert not [c for c in result.conflicts if c.path.startswith("tags")]


@settings(max_examples=300)
@given(triples)
def test_merge_is_symmetric_in_what_conflicts(
    triple: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, server, edited = triple
    one = merge(base, server, only_changes(base, edited))
    other = merge(base, edited, only_changes(base, server))
    assert {c.path for c in one.conflicts} == {c.path for c in other.conflicts}
    if not one.conflicts:
        assert one.fields == other.fields or _same_up_to_order(one.fields, other.fields)


def _same_up_to_order(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "tags"} == {
        k: v for k, v in b.items() if k != "tags"
    } and set(a["tags"]) == set(b["tags"])


@settings(max_examples=300)
@given(triples)
def test_replaying_an_amendment_changes_nothing_more(
    triple: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> None:
    base, server, edited = triple
    incoming = only_changes(base, edited)
    first = merge(base, server, incoming)
    second = merge(base, first.fields, incoming)
    assert second.fields == first.fields
    assert second.changed == ()
    assert second.conflicts == first.conflicts


@given(records(), records())
def test_an_edit_on_an_untouched_record_applies_whole(
    base: dict[str, Any], edited: dict[str, Any]
) -> None:
    result = merge(base, base, only_changes(base, edited))
    assert result.conflicts == ()
    assert result.fields == edited


def test_nested_records_merge_by_sub_field() -> None:
    base = {"person": {"name": "A", "phone": "1"}}
    server = {"person": {"name": "A", "phone": "2"}}
    incoming = {"person": {"name": "B", "phone": "1"}}
    result = merge(base, server, incoming)
    assert result.fields["person"] == {"name": "B", "phone": "2"}
    assert result.conflicts == ()
    clash = merge(base, server, {"person": {"name": "A", "phone": "3"}})
    assert [(c.path, c.base, c.server, c.incoming) for c in clash.conflicts] == [
        ("person.phone", "1", "2", "3")
    ]


def test_report_merge_keeps_the_server_value_of_a_conflicting_field() -> None:
    base = sample_report()
    current = msgspec.structs.replace(base, severity=5, sector="domestic work")
    changes = ReportChanges(severity=2, narrative="More detail.", sector="domestic work")
    merged, result = merge_report(base, current, changes)
    assert merged.severity == 5
    assert merged.narrative == "More detail."
    assert merged.sector == "domestic work"
    assert [c.path for c in result.conflicts] == ["severity"]
    (conflict,) = result.conflicts
    assert (conflict.base, conflict.server, conflict.incoming) == (4, 5, 2)
    assert set(result.changed) == {"narrative"}


def test_report_merge_unions_categories_and_attachments() -> None:
    base = sample_report()
    photo = DeclaredAttachment(sha256="b" * 64, size_bytes=10, media_type="image/jpeg")
    audio = DeclaredAttachment(sha256="c" * 64, size_bytes=10, media_type="audio/ogg")
    current = msgspec.structs.replace(
        base,
        categories=(*base.categories, "FL.WAGE_WITHHOLDING"),
        attachments=(*base.attachments, photo),
    )
    changes = ReportChanges(
        categories=("FR.RECRUITMENT_FEE",), attachments=(*base.attachments, audio)
    )
    merged, result = merge_report(base, current, changes)
    assert merged.categories == ("FR.RECRUITMENT_FEE", "FL.WAGE_WITHHOLDING")
    assert [a.sha256 for a in merged.attachments] == ["a" * 64, "b" * 64, "c" * 64]
    assert result.conflicts == ()


def test_report_merge_of_party_and_worker_sub_fields() -> None:
    base = sample_report()
    current = msgspec.structs.replace(
        base, worker=WorkerIdentity(name="R. Tamang", passport_number="PA7654321")
    )
    changes = ReportChanges(
        worker=WorkerIdentity(name="Ram Tamang", passport_number="PA1234567"),
        employer=PartyReference(name="Gulf Star Contracting W.L.L.", licence_number="L-77"),
    )
    merged, result = merge_report(base, current, changes)
    assert merged.worker == WorkerIdentity(name="Ram Tamang", passport_number="PA7654321")
    assert merged.employer is not None
    assert merged.employer.licence_number == "L-77"
    assert result.conflicts == ()


def test_report_merge_that_breaks_a_limit_is_refused() -> None:
    base = sample_report(categories=[f"CA.C_{chr(65 + i)}" for i in range(15)])
    current = msgspec.structs.replace(
        base, categories=(*base.categories, *(f"SV.S_{chr(65 + i)}" for i in range(5)))
    )
    changes = ReportChanges(
        categories=(*base.categories, *(f"DV.D_{chr(65 + i)}" for i in range(5)))
    )
    with pytest.raises(msgspec.ValidationError, match="categories"):
        merge_report(base, current, changes)


def test_report_fields_are_complete() -> None:
    fields = report_fields(sample_report())
    assert fields["consent"] == {"follow_up": True, "referral": False, "sharing": False}
    assert fields["employer"]["entity_id"] is None


def test_set_field_path_applies_a_resolution() -> None:
    from sync.merge import set_field_path

    fields = report_fields(sample_report())
    assert set_field_path(fields, "severity", 5)["severity"] == 5
    assert "sector" not in set_field_path({**fields, "sector": "garments"}, "sector", None)
    moved = set_field_path(fields, "location.lat", 1.5)
    assert moved["location"]["lat"] == 1.5
    assert fields["location"]["lat"] != 1.5  # the input is not modified
    code = fields["categories"][0]
    dropped = set_field_path(fields, f"categories[{code}]", None)
    assert code not in dropped["categories"]
    kept = set_field_path(fields, f"categories[{code}]", code)
    assert kept["categories"] == fields["categories"]
