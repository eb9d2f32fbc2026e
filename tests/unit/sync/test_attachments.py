"""Resumable content-addressed uploads: parts, what is missing, completion, report media status."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cases.reports import MAX_ATTACHMENT_BYTES, DeclaredAttachment
from sync.attachments import (
    MAX_PARTS,
    MIN_PART_BYTES,
    PartError,
    attachment_status,
    is_sha256_hex,
    missing_parts,
    part_count,
    part_range,
    part_size_for,
    upload_status,
    validate_part,
)


@given(st.integers(1, MAX_ATTACHMENT_BYTES))
def test_parts_tile_the_blob_exactly(size: int) -> None:
    part = part_size_for(size)
    assert part >= MIN_PART_BYTES
    count = part_count(size, part)
    assert 1 <= count <= MAX_PARTS
    ranges = [part_range(i, size, part) for i in range(count)]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@given(st.integers(1, 50 * MIN_PART_BYTES), st.sets(st.integers(-2, 60)))
def test_missing_parts_are_exactly_the_ones_not_received(size: int, got: set[int]) -> None:
    part = part_size_for(size)
    missing = missing_parts(size, part, got)
    assert set(missing) | (got & set(range(part_count(size, part)))) == set(
        range(part_count(size, part))
    )
    assert not set(missing) & got
    assert list(missing) == sorted(missing)


def test_completion_needs_every_part_and_verification() -> None:
    size = 3 * MIN_PART_BYTES + 1
    part = part_size_for(size)
    status = upload_status("a" * 64, size, part, [0, 2], verified=False)
    assert status.missing == (1, 3)
    assert not status.complete
    assert not upload_status("a" * 64, size, part, [0, 1, 2, 3], verified=False).complete
    assert upload_status("a" * 64, size, part, [3, 2, 1, 0], verified=True).complete


def test_part_validation() -> None:
    size = MIN_PART_BYTES + 10
    part = part_size_for(size)
    validate_part(0, MIN_PART_BYTES, size, part)
    validate_part(1, 10, size, part)
    with pytest.raises(PartError, match="must be 10 bytes"):
        validate_part(1, 11, size, part)
    with pytest.raises(PartError, match="out of range"):
        validate_part(2, 1, size, part)
    with pytest.raises(ValueError, match="size"):
        part_size_for(0)


def test_sha256_hex() -> None:
    assert is_sha256_hex("0123456789abcdef" * 4)
    assert not is_sha256_hex("0123456789ABCDEF" * 4)
    assert not is_sha256_hex("a" * 63)
    assert not is_sha256_hex("a" * 64 + "\n")


def test_report_attachment_status() -> None:
    declared = [
        DeclaredAttachment(sha256=c * 64, size_bytes=1, media_type="image/jpeg") for c in "abca"
    ]
    status = attachment_status(declared, {"b" * 64, "f" * 64})
    assert status.declared == 3
    assert status.arrived == 1
    assert status.missing == ("a" * 64, "c" * 64)
    assert not status.complete
    assert attachment_status(declared, {c * 64 for c in "abc"}).complete
    assert attachment_status([], set()).complete
