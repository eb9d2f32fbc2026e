"""Rules for resumable, content-addressed attachment uploads, and whether a report's media arrived.

A blob is named by its sha256 and uploaded in fixed-size parts; after any interruption the device
asks which parts are missing and sends only those. The blob is complete when every part arrived
and the whole verifies against its name. One blob serves every report that declares it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence, Set
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from cases.reports import MAX_ATTACHMENT_BYTES, DeclaredAttachment, Sha256Hex

__all__ = [
    "MAX_PARTS",
    "MIN_PART_BYTES",
    "AttachmentStatus",
    "PartError",
    "UploadRequest",
    "UploadStatus",
    "attachment_status",
    "is_sha256_hex",
    "missing_parts",
    "part_count",
    "part_range",
    "part_size_for",
    "upload_status",
    "validate_part",
]

# Small enough to finish on a 2G link between drop-outs, large enough to keep requests few.
MIN_PART_BYTES: Final = 256 * 1024
MAX_PARTS: Final = 1024
_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")


class PartError(ValueError):
    """A part that does not fit the upload (wrong index or length)."""


def is_sha256_hex(value: str) -> bool:
    """True for a lowercase 64-character hex sha256 (the only spelling we name blobs by)."""
    return _SHA256_HEX.fullmatch(value) is not None


def part_size_for(size_bytes: int) -> int:
    """Part size for a blob: ``MIN_PART_BYTES`` doubled until the blob needs at most MAX_PARTS."""
    if not 1 <= size_bytes <= MAX_ATTACHMENT_BYTES:
        raise ValueError(f"attachment size must be 1..{MAX_ATTACHMENT_BYTES} bytes")
    part = MIN_PART_BYTES
    while -(-size_bytes // part) > MAX_PARTS:
        part *= 2
    return part


def part_count(size_bytes: int, part_size: int) -> int:
    return -(-size_bytes // part_size)


def part_range(index: int, size_bytes: int, part_size: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of part ``index`` (0-based); the last part may be short."""
    if not 0 <= index < part_count(size_bytes, part_size):
        raise PartError(f"part {index} is out of range")
    start = index * part_size
    return start, min(start + part_size, size_bytes)


def validate_part(index: int, length: int, size_bytes: int, part_size: int) -> None:
    """Raise ``PartError`` unless a part of ``length`` bytes is exactly part ``index``."""
    start, end = part_range(index, size_bytes, part_size)
    if length != end - start:
        raise PartError(f"part {index} must be {end - start} bytes, got {length}")


def missing_parts(size_bytes: int, part_size: int, received: Iterable[int]) -> tuple[int, ...]:
    """Indexes of the parts still to send, ascending (unknown indexes in ``received`` ignored)."""
    have = set(received)
    return tuple(i for i in range(part_count(size_bytes, part_size)) if i not in have)


class UploadRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Start (or ask about) the upload of one blob, before sending any part."""

    sha256: Sha256Hex
    size_bytes: Annotated[int, Meta(ge=1, le=MAX_ATTACHMENT_BYTES)]
    media_type: Annotated[str, Meta(max_length=127)]


class UploadStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to "where is my upload?": what to send next, and whether it is done."""

    sha256: str
    size_bytes: int
    part_size: int
    parts: int
    missing: tuple[int, ...]
    complete: bool
    # With object storage, presigned URLs to PUT each missing part to directly (index -> URL);
    # after sending them, ask for the status again so the server verifies and records the blob.
    part_urls: dict[int, str] = {}


def upload_status(
    sha256: str, size_bytes: int, part_size: int, received: Iterable[int], *, verified: bool
) -> UploadStatus:
    """``complete`` needs every part and the whole blob verified against ``sha256``."""
    missing = missing_parts(size_bytes, part_size, received)
    return UploadStatus(
        sha256=sha256,
        size_bytes=size_bytes,
        part_size=part_size,
        parts=part_count(size_bytes, part_size),
        missing=missing,
        complete=not missing and verified,
    )


class AttachmentStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A report's media: declared by the device versus arrived (complete and verified)."""

    declared: int
    arrived: int
    missing: tuple[str, ...]
    complete: bool


def attachment_status(
    declared: Sequence[DeclaredAttachment], arrived: Set[str]
) -> AttachmentStatus:
    """Which declared attachments have not arrived yet, in declaration order, without repeats."""
    names = list(dict.fromkeys(a.sha256 for a in declared))
    missing = tuple(n for n in names if n not in arrived)
    return AttachmentStatus(
        declared=len(names),
        arrived=len(names) - len(missing),
        missing=missing,
        complete=not missing,
    )
