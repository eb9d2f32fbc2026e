"""Named SQL queries load once from storage/queries and refuse ambiguous files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.queries import Q, parse_queries, queries


def test_parse_splits_named_blocks() -> None:
    text = "-- name: one\nSELECT 1;\n\n-- name: two\n-- a comment\nSELECT 2;\n"
    parsed = parse_queries(text)
    assert parsed == {"one": "SELECT 1;", "two": "-- a comment\nSELECT 2;"}


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="defined twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_empty_query_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        parse_queries("-- name: a\n\n-- name: b\nSELECT 1;")


def test_project_queries_load_and_resolve_by_attribute() -> None:
    loaded = queries()
    assert "insert_org" in loaded
    assert Q.insert_org == loaded["insert_org"]
    assert queries() is loaded  # parsed once
    with pytest.raises(AttributeError, match="no SQL query named"):
        _ = Q.no_such_query


# Queries whose name is put together at run time (storage/case_list.py: the case list's orders).
_DYNAMIC_PREFIXES = ("case_order_",)


def test_every_named_query_is_used_somewhere() -> None:
    """A query no code names is dead SQL that still looks like part of the schema's contract."""
    root = Path(__file__).resolve().parents[3]
    source = "\n".join(
        path.read_text(encoding="utf-8")
        for package in ("server", "storage", "sync", "cases", "bench")
        for path in (root / package).rglob("*.py")
    )
    unused = [
        name
        for name in queries()
        if not name.startswith(_DYNAMIC_PREFIXES) and not re.search(rf"\b{name}\b", source)
    ]
    assert unused == []
