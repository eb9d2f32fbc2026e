"""Content-addressed blob store on the local filesystem: the default when no S3 endpoint is set.

Layout under the root: `sha256/aa/bb/<sha256>` (blobs), `tmp/` (puts in progress) and
`uploads/<id>/` (a multipart upload's manifest, parts and, once assembled, its verified bytes).
Every write goes to a temporary file in the same filesystem, is fsynced, then renamed into place,
so a blob is whole or absent.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterable, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

import anyio
import anyio.to_thread
import msgspec

from storage.blobs.base import (
    MIN_PART_SIZE,
    BlobError,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStoreUnavailable,
    BlobStream,
    BlobTooLarge,
    HashingReader,
    PartInfo,
    PartRejected,
    Upload,
    UploadIncomplete,
    UploadNotFound,
    check_sha256,
)

__all__ = ["DEFAULT_PART_SIZE", "LocalBlobStore"]

DEFAULT_PART_SIZE = 8 * 1024 * 1024
_CHUNK_SIZE = 256 * 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_PART_FILE = re.compile(r"(\d{5})\.([0-9a-f]{64})\.part")
_MANIFEST = "manifest.json"
_VERIFIED = "verified"  # the assembled parts, once their sha256 checked out

P = ParamSpec("P")
T = TypeVar("T")


class _Spooled(msgspec.Struct, frozen=True):
    path: Path
    sha256: str
    size: int


class LocalBlobStore:
    """Blobs as files under `root`; file I/O runs in worker threads, never on the event loop."""

    def __init__(self, root: Path, *, part_size: int = DEFAULT_PART_SIZE) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE}")
        self._root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._uploads = root / "uploads"
        self._part_size = part_size

    @staticmethod
    async def _run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        # anyio waits for the thread even when cancelled, so cleanup never races a write.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    def _blob_path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self._blobs / sha256[:2] / sha256[2:4] / sha256

    # -- whole blobs ----------------------------------------------------------------------------

    async def put(
        self, stream: AsyncIterable[bytes], expected_sha256: str, size_limit: int
    ) -> BlobInfo:
        """See `BlobStore.put`."""
        existing = await self.stat(expected_sha256)
        if existing is not None:
            actual, _ = await self._hash_only(stream, size_limit)
            if actual != expected_sha256:
                raise BlobHashMismatch(expected_sha256, actual)
            return existing
        await self._run(self._tmp.mkdir, parents=True, exist_ok=True)
        spooled = await self._spool(stream, self._tmp, size_limit, BlobTooLarge(size_limit))
        try:
            if spooled.sha256 != expected_sha256:
                raise BlobHashMismatch(expected_sha256, spooled.sha256)
            await self._run(_install, spooled.path, self._blob_path(expected_sha256))
        finally:
            await _shielded(self._run(spooled.path.unlink, missing_ok=True))
        return BlobInfo(sha256=expected_sha256, size=spooled.size)

    async def open(self, sha256: str) -> BlobStream:
        """See `BlobStore.open`."""
        path = self._blob_path(sha256)
        try:
            file = await self._run(path.open, "rb")
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None
        try:
            size = (await self._run(os.fstat, file.fileno())).st_size
        except BaseException:
            await _shielded(self._run(file.close))
            raise
        reader = HashingReader(file.read, sha256)

        async def close() -> None:
            await self._run(file.close)

        return BlobStream(
            BlobInfo(sha256=sha256, size=size),
            functools.partial(self._run, reader.read, _CHUNK_SIZE),
            close,
        )

    async def exists(self, sha256: str) -> bool:
        """See `BlobStore.exists`."""
        return await self.stat(sha256) is not None

    async def stat(self, sha256: str) -> BlobInfo | None:
        """See `BlobStore.stat`."""
        path = self._blob_path(sha256)
        try:
            result = await self._run(path.stat)
        except FileNotFoundError:
            return None
        return BlobInfo(sha256=sha256, size=result.st_size)

    async def delete(self, sha256: str) -> bool:
        """See `BlobStore.delete`."""
        path = self._blob_path(sha256)
        try:
            await self._run(path.unlink)
        except FileNotFoundError:
            return False
        return True

    # -- resumable multipart uploads ------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        # Upload ids come from clients: only our own format may become a path.
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise UploadNotFound(upload_id)
        return self._uploads / upload_id

    async def start_upload(self, expected_sha256: str, size: int) -> Upload:
        """See `BlobStore.start_upload`."""
        upload = Upload.plan(secrets.token_hex(16), expected_sha256, size, self._part_size)
        await self._run(_write_manifest, self._upload_dir(upload.upload_id), upload)
        return upload

    async def get_upload(self, upload_id: str) -> Upload:
        """See `BlobStore.get_upload`."""
        directory = self._upload_dir(upload_id)
        try:
            raw = await self._run((directory / _MANIFEST).read_bytes)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None
        return msgspec.json.decode(raw, type=Upload)

    async def put_part(
        self, upload_id: str, part_number: int, stream: AsyncIterable[bytes]
    ) -> PartInfo:
        """See `BlobStore.put_part`."""
        upload = await self.get_upload(upload_id)
        length = upload.part_length(part_number)
        directory = self._upload_dir(upload_id)
        too_long = PartRejected(upload_id, part_number, f"longer than {length} bytes")
        try:
            spooled = await self._spool(stream, directory, length, too_long)
        except FileNotFoundError:
            raise UploadNotFound(upload_id) from None  # aborted while we were receiving
        try:
            if spooled.size != length:
                raise PartRejected(upload_id, part_number, f"{spooled.size} bytes, not {length}")
            await self._run(_install_part, directory, part_number, spooled)
        finally:
            await _shielded(self._run(spooled.path.unlink, missing_ok=True))
        return PartInfo(number=part_number, size=spooled.size, etag=spooled.sha256)

    async def list_parts(self, upload_id: str) -> list[PartInfo]:
        """See `BlobStore.list_parts`."""
        await self.get_upload(upload_id)
        return await self._run(_scan_parts, self._upload_dir(upload_id))

    async def assemble(self, upload_id: str) -> BlobInfo:
        """See `BlobStore.assemble`: the parts become `uploads/<id>/verified`, renamed into place
        only once the hash checks out; the blob is stored by `complete`, a rename."""
        upload = await self.get_upload(upload_id)
        directory = self._upload_dir(upload_id)
        if not await self._run((directory / _VERIFIED).exists):
            await self._verify_parts(upload, directory)
        return BlobInfo(sha256=upload.sha256, size=upload.size)

    async def _verify_parts(self, upload: Upload, directory: Path) -> None:
        parts = await self._run(_scan_parts, directory)
        if missing := upload.missing_parts(parts):
            raise UploadIncomplete(upload.upload_id, missing)
        fd, name = await self._run(tempfile.mkstemp, dir=directory, prefix="assemble-")
        assembled = Path(name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    await self._run(_append_part, out, directory / _part_name(part), hasher.update)
                await self._run(_sync, out)
            if (actual := hasher.hexdigest()) != upload.sha256:
                await self.abort(upload.upload_id)
                raise BlobHashMismatch(upload.sha256, actual)
            await self._run(_install, assembled, directory / _VERIFIED)
        finally:
            await _shielded(self._run(assembled.unlink, missing_ok=True))

    async def complete(self, upload_id: str) -> BlobInfo:
        """See `BlobStore.complete`."""
        info = await self.assemble(upload_id)
        if not await self.exists(info.sha256):
            verified = self._upload_dir(upload_id) / _VERIFIED
            await self._run(_install, verified, self._blob_path(info.sha256))
        await self.abort(upload_id)
        return info

    async def abort(self, upload_id: str) -> None:
        """See `BlobStore.abort`."""
        if _UPLOAD_ID.fullmatch(upload_id):
            await _shielded(self._run(shutil.rmtree, self._uploads / upload_id, ignore_errors=True))

    async def presign_part_url(
        self, upload_id: str, part_number: int, expires: timedelta
    ) -> str | None:
        """Files have no URL of their own: parts come through the API."""
        (await self.get_upload(upload_id)).part_length(part_number)
        return None

    async def check(self) -> None:
        """See `BlobStore.check`: the root must be writable."""
        try:
            await self._run(_probe_writable, self._tmp)
        except OSError as exc:
            raise BlobStoreUnavailable(f"blob directory {self._root} not writable: {exc}") from exc

    # -- streaming helpers ----------------------------------------------------------------------

    async def _spool(
        self, stream: AsyncIterable[bytes], directory: Path, limit: int, too_long: BlobError
    ) -> _Spooled:
        """Write the stream to a fresh temp file in `directory`, hashing it; fsynced on return.

        Raises `too_long` (and removes the file) as soon as more than `limit` bytes arrive.
        """
        fd, name = await self._run(tempfile.mkstemp, dir=directory, prefix="incoming-")
        path = Path(name)
        hasher = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        raise too_long
                    await self._run(_write_hashed, out, chunk, hasher.update)
                await self._run(_sync, out)
        except BaseException:
            await _shielded(self._run(path.unlink, missing_ok=True))
            raise
        return _Spooled(path, hasher.hexdigest(), size)

    async def _hash_only(self, stream: AsyncIterable[bytes], limit: int) -> tuple[str, int]:
        hasher = hashlib.sha256()
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise BlobTooLarge(limit)
            await self._run(hasher.update, chunk)
        return hasher.hexdigest(), size


async def _shielded(cleanup: Awaitable[object]) -> None:
    # Cleanup must finish even when the request that started it is being cancelled.
    with anyio.CancelScope(shield=True):
        await cleanup


def _write_hashed(out: BinaryIO, chunk: bytes, hash_update: Callable[[bytes], None]) -> None:
    out.write(chunk)
    hash_update(chunk)


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _install(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Same content under the same name, so a concurrent writer of this blob is harmless.
    os.replace(source, target)
    _fsync_dir(target.parent)


def _part_name(part: PartInfo) -> str:
    return f"{part.number:05d}.{part.etag}.part"


def _install_part(directory: Path, number: int, spooled: _Spooled) -> None:
    name = _part_name(PartInfo(number=number, size=spooled.size, etag=spooled.sha256))
    os.replace(spooled.path, directory / name)
    for other in directory.glob(f"{number:05d}.*.part"):
        if other.name != name:
            other.unlink(missing_ok=True)
    _fsync_dir(directory)


def _scan_parts(directory: Path) -> list[PartInfo]:
    newest: dict[int, tuple[int, PartInfo]] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not (match := _PART_FILE.fullmatch(entry.name)):
            continue
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue  # replaced by a resend while we were listing
        number = int(match[1])
        part = PartInfo(number=number, size=st.st_size, etag=match[2])
        # Two files for one number only exist between a resend's rename and its cleanup.
        if number not in newest or st.st_mtime_ns > newest[number][0]:
            newest[number] = (st.st_mtime_ns, part)
    return [newest[n][1] for n in sorted(newest)]


def _append_part(out: BinaryIO, part: Path, hash_update: Callable[[bytes], None]) -> None:
    with part.open("rb") as source:
        while chunk := source.read(_CHUNK_SIZE):
            out.write(chunk)
            hash_update(chunk)


def _write_manifest(directory: Path, upload: Upload) -> None:
    directory.mkdir(parents=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="manifest-")
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(upload))
        _sync(out)
    os.replace(name, directory / _MANIFEST)
    _fsync_dir(directory)


def _probe_writable(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix="probe-")
    os.close(fd)
    os.unlink(name)
