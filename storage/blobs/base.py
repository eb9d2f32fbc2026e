"""The blob store contract: content-addressed attachments behind one async interface.

Both backends (local files, S3/MinIO) implement `BlobStore`, share these result Structs and raise
only the domain errors below; `server/` maps the errors to problem details.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from datetime import timedelta
from types import TracebackType
from typing import Annotated, Protocol, Self

import msgspec

__all__ = [
    "MAX_PART_COUNT",
    "MIN_PART_SIZE",
    "SHA256_PATTERN",
    "BlobError",
    "BlobHashMismatch",
    "BlobInfo",
    "BlobNotFound",
    "BlobStore",
    "BlobStoreUnavailable",
    "BlobStream",
    "BlobTooLarge",
    "HashingReader",
    "PartInfo",
    "PartRejected",
    "Sha256",
    "Upload",
    "UploadIncomplete",
    "UploadNotFound",
    "check_sha256",
]

SHA256_PATTERN = "^[0-9a-f]{64}$"
_SHA256_RE = re.compile(SHA256_PATTERN)

# The S3 limits, applied to both backends so a device behaves the same whichever one serves it:
# every part but the last is at least 5 MiB, and an upload has at most 10 000 parts.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_COUNT = 10_000

Sha256 = Annotated[str, msgspec.Meta(pattern=SHA256_PATTERN, description="lowercase hex sha256")]


def check_sha256(value: str) -> str:
    """Return `value` if it is a canonical content address; a ValueError otherwise.

    Callers validate client input at decode time (`Sha256`); this is the storage layer's own
    guard, since the local backend builds file paths from the address.
    """
    if not _SHA256_RE.fullmatch(value):
        raise ValueError(f"not a lowercase hex sha256: {value!r}")
    return value


class BlobError(Exception):
    """Base of every blob store error.

    Subclasses are named for the condition (`BlobNotFound`), not with an `Error` suffix: they
    are the interface's domain vocabulary and read that way in `except` clauses.
    """


class BlobHashMismatch(BlobError):
    """The bytes received (or read back) do not hash to the declared sha256."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch: declared {expected}, received {actual}")
        self.expected = expected
        self.actual = actual


class BlobTooLarge(BlobError):
    """The blob exceeds the caller's size limit (or the store's multipart limits)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"blob larger than {limit} bytes")
        self.limit = limit


class BlobNotFound(BlobError):
    """No blob is stored under this sha256."""

    def __init__(self, sha256: str) -> None:
        super().__init__(f"no blob {sha256}")
        self.sha256 = sha256


class UploadNotFound(BlobError):
    """No multipart upload with this id is in progress (never started, completed or aborted)."""

    def __init__(self, upload_id: str) -> None:
        super().__init__(f"no upload {upload_id!r}")
        self.upload_id = upload_id


class UploadIncomplete(BlobError):
    """`complete` was called while parts are missing or have the wrong size; send them first."""

    def __init__(self, upload_id: str, missing: list[int]) -> None:
        super().__init__(f"upload {upload_id} is missing parts {missing}")
        self.upload_id = upload_id
        self.missing = missing


class PartRejected(BlobError):
    """A part's number is out of range or its size differs from what the upload plan requires."""

    def __init__(self, upload_id: str, part_number: int, reason: str) -> None:
        super().__init__(f"upload {upload_id} part {part_number}: {reason}")
        self.upload_id = upload_id
        self.part_number = part_number
        self.reason = reason


class BlobStoreUnavailable(BlobError):
    """The backing store cannot be reached or used (down, bucket missing, not writable)."""


class BlobInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A stored blob: its content address and length in bytes."""

    sha256: str
    size: int


class PartInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One received part of a multipart upload.

    `etag` is opaque (S3's ETag, or the part's sha256 on the local backend): it changes when the
    part's content changes, and that is all a client may rely on.
    """

    number: int
    size: int
    etag: str


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    """A multipart upload plan: the store fixes the part size, so the part sizes are known.

    Every part except the last has exactly `part_size` bytes; the last has the remainder.
    """

    upload_id: str
    sha256: str
    size: int
    part_size: int
    part_count: int

    @classmethod
    def plan(cls, upload_id: str, sha256: str, size: int, part_size: int) -> Upload:
        """Plan an upload of `size` bytes, or raise if it cannot fit the store's part limits."""
        check_sha256(sha256)
        if size < 1:
            raise ValueError("a multipart upload needs at least one byte; use put for empty blobs")
        part_count = math.ceil(size / part_size)
        if part_count > MAX_PART_COUNT:
            raise BlobTooLarge(part_size * MAX_PART_COUNT)
        return cls(
            upload_id=upload_id,
            sha256=sha256,
            size=size,
            part_size=part_size,
            part_count=part_count,
        )

    def part_length(self, part_number: int) -> int:
        """The exact byte length part `part_number` must have; PartRejected if out of range."""
        if not 1 <= part_number <= self.part_count:
            raise PartRejected(
                self.upload_id, part_number, f"part numbers run from 1 to {self.part_count}"
            )
        if part_number < self.part_count:
            return self.part_size
        return self.size - self.part_size * (self.part_count - 1)

    def missing_parts(self, parts: Iterable[PartInfo]) -> list[int]:
        """Part numbers not yet received with their planned size, in order."""
        good = {p.number for p in parts if p.size == self.part_length_or_none(p.number)}
        return [n for n in range(1, self.part_count + 1) if n not in good]

    def part_length_or_none(self, part_number: int) -> int | None:
        """Like `part_length`, but None for a number outside the plan."""
        try:
            return self.part_length(part_number)
        except PartRejected:
            return None


class HashingReader:
    """Wraps a blocking `read(n)` so the bytes are hashed as they pass; at the end of the data,
    raises BlobHashMismatch if they do not hash to `sha256`. Call it from a worker thread."""

    def __init__(self, read: Callable[[int], bytes], sha256: str) -> None:
        self._read = read
        self._sha256 = sha256
        self._hasher = hashlib.sha256()

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; b"" at the (verified) end."""
        chunk = self._read(size)
        if chunk:
            self._hasher.update(chunk)
        elif (actual := self._hasher.hexdigest()) != self._sha256:
            raise BlobHashMismatch(self._sha256, actual)
        return chunk


class BlobStream:
    """A blob's bytes as an async iterator of chunks, with its `info` known before the first one.

    The stream holds an open file or connection: iterate it to the end or call `aclose()`
    (or use `async with`). The sha256 is checked as the bytes go by, so a blob corrupted at rest
    ends its stream with `BlobHashMismatch` instead of a clean end.
    """

    def __init__(
        self,
        info: BlobInfo,
        read: Callable[[], Awaitable[bytes]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.info = info
        self._read = read
        self._close = close
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        try:
            chunk = await self._read()
        except BaseException:
            await self.aclose()
            raise
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Release the file or connection; safe to call more than once."""
        if not self._closed:
            self._closed = True
            await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class BlobStore(Protocol):
    """Content-addressed, streaming, sha256-verifying storage for report attachments."""

    async def put(
        self, stream: AsyncIterable[bytes], expected_sha256: str, size_limit: int
    ) -> BlobInfo:
        """Store the stream under `expected_sha256`, all or nothing.

        The stream is always read to the end and verified, even when the blob already exists
        (then nothing is written and the existing info is returned): knowing a hash is not
        proof of holding the content. Raises BlobHashMismatch or BlobTooLarge, keeping nothing.
        """
        ...

    async def open(self, sha256: str) -> BlobStream:
        """The blob's content as a stream; BlobNotFound if absent."""
        ...

    async def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under `sha256`."""
        ...

    async def stat(self, sha256: str) -> BlobInfo | None:
        """The blob's info, or None if absent."""
        ...

    async def delete(self, sha256: str) -> bool:
        """Remove the blob (retention, redaction); False if it was not there."""
        ...

    async def start_upload(self, expected_sha256: str, size: int) -> Upload:
        """Begin a resumable multipart upload of `size` bytes; the plan says the part sizes."""
        ...

    async def get_upload(self, upload_id: str) -> Upload:
        """The plan of an upload in progress; UploadNotFound otherwise."""
        ...

    async def put_part(
        self, upload_id: str, part_number: int, stream: AsyncIterable[bytes]
    ) -> PartInfo:
        """Store one part (replacing an earlier one with the same number); PartRejected if the
        number is outside the plan or the length differs from the planned one."""
        ...

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        """Parts received so far, by number, so a client resumes by sending only the others."""
        ...

    async def assemble(self, upload_id: str) -> BlobInfo:
        """The slow half of `complete`: assemble the parts in order and verify the whole sha256,
        keeping the verified copy in the upload, which stays open.

        UploadIncomplete if parts are missing (the upload stays open). On a hash mismatch the
        upload is discarded and BlobHashMismatch raised. Once it has succeeded, calling it again
        neither reads nor hashes the bytes. A backend may already store the blob here (S3 does,
        so that the server-side copy is not left to `complete`); it may be deleted again before
        `complete`, which then stores it from the verified copy.
        """
        ...

    async def complete(self, upload_id: str) -> BlobInfo:
        """Assemble the parts in order, verify the whole sha256, store the blob, end the upload.

        After a successful `assemble` this is quick, with no reading or hashing of the bytes: it
        stores the verified copy if the blob is not (or no longer) stored, and ends the upload.
        Callers that must decide under a lock whether the bytes exist (attachments finishing an
        upload) call `assemble` before taking it and `complete` under it.
        UploadIncomplete if parts are missing (the upload stays open). On a hash mismatch the
        upload is discarded and BlobHashMismatch raised. If the blob already exists the
        assembled copy is dropped and the existing info returned.
        """
        ...

    async def abort(self, upload_id: str) -> None:
        """Discard an upload and its parts; a no-op for an unknown upload."""
        ...

    async def presign_part_url(
        self, upload_id: str, part_number: int, expires: timedelta
    ) -> str | None:
        """A URL a device may PUT the part's bytes to directly, or None if the backend has none."""
        ...

    async def check(self) -> None:
        """Return if the store is usable; BlobStoreUnavailable otherwise."""
        ...
