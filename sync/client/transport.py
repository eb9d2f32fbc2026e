"""HTTP transport of the device client: sync messages over httpx in JSON or MessagePack, with gzip
or zstd request compression, and RFC 9457 problem documents turned into typed exceptions.

A 403 carrying ``"wipe": true`` calls the ``on_wipe`` hook before raising ``DeviceWiped``, so a
revoked device erases its data whichever endpoint told it.
"""

from __future__ import annotations

import datetime as dt
import enum
import gzip
from collections.abc import Callable
from typing import Any, Final, TypeVar

import httpx
import msgspec
import zstandard

from sync.attachments import UploadRequest, UploadStatus
from sync.codec import CONTENT_TYPES, WireFormat, decode, encode, format_for_content_type
from sync.messages import (
    EnrollRequest,
    EnrollResponse,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    WipeInstruction,
)

__all__ = [
    "BodyTooLarge",
    "Compression",
    "DeviceWiped",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "ProblemResponse",
    "SyncError",
    "SyncTransport",
    "TransportFailure",
    "Unauthenticated",
    "compress",
    "decompress",
    "problem_from_response",
]

T = TypeVar("T")
PROBLEM_JSON: Final = "application/problem+json"


class Compression(enum.StrEnum):
    IDENTITY = "identity"
    GZIP = "gzip"
    ZSTD = "zstd"


def compress(body: bytes, how: Compression) -> bytes:
    if how is Compression.GZIP:
        return gzip.compress(body, compresslevel=6)
    if how is Compression.ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(body)
    return body


def decompress(body: bytes, how: Compression) -> bytes:
    if how is Compression.GZIP:
        return gzip.decompress(body)
    if how is Compression.ZSTD:
        # Frames written by stream compressors may not record their size: read to the end.
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


class SyncError(Exception):
    """Anything that kept a sync request from getting a usable answer."""

    retryable: bool = False


class TransportFailure(SyncError):
    """The connection failed or dropped; the server may or may not have acted. Retry as is."""

    retryable = True


class ProblemResponse(SyncError):
    """The server answered with an error status and (usually) a problem document."""

    def __init__(self, status: int, problem: dict[str, Any], retry_after: float | None) -> None:
        self.status = status
        self.problem = problem
        self.type = str(problem.get("type", "about:blank"))
        self.title = str(problem.get("title", ""))
        self.detail = problem.get("detail")
        self.retry_after = retry_after
        # 5xx, 429 and 408 are the server's way of saying "later"; anything else will not change.
        self.retryable = status >= 500 or status in (408, 429)
        super().__init__(f"{status} {self.type}: {self.detail or self.title}")


class Unauthenticated(ProblemResponse):
    """401: the credential is unknown (never enrolled, or typed wrong)."""


class Forbidden(ProblemResponse):
    """403 without a wipe instruction."""


class DeviceWiped(Forbidden):
    """403 with ``"wipe": true``: the device was revoked and must erase all local data."""

    def __init__(self, status: int, problem: dict[str, Any], instruction: WipeInstruction) -> None:
        super().__init__(status, problem, None)
        self.instruction = instruction


class NotFound(ProblemResponse):
    """404."""


class BodyTooLarge(ProblemResponse):
    """413: send less per request (smaller batch)."""


class InvalidRequest(ProblemResponse):
    """400/422: the body could not be read or failed validation; resending it will not help."""


_BY_STATUS: Final[dict[int, type[ProblemResponse]]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    413: BodyTooLarge,
    422: InvalidRequest,
}


def problem_from_response(response: httpx.Response) -> ProblemResponse:
    """The typed exception for an error response (a non-JSON body still gives one)."""
    try:
        problem = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        problem = None
    if not isinstance(problem, dict):
        problem = {"title": response.reason_phrase, "detail": response.text[:500] or None}
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None
    status = response.status_code
    if status == 403 and problem.get("wipe") is True:
        instruction = WipeInstruction(
            wipe=True,
            reason=str(problem.get("reason") or "device_revoked")[:200],
            revoked_at=_parse_time(problem.get("revoked_at")),
        )
        return DeviceWiped(status, problem, instruction)
    kind = _BY_STATUS.get(status, ProblemResponse)
    return kind(status, problem, retry_after)


def _parse_time(value: object) -> dt.datetime:
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    return dt.datetime.now(dt.UTC)


class SyncTransport:
    """The sync endpoints of one server, as seen by one device.

    ``http`` is the httpx client to use (its transport may be a test double or a chaos wrapper);
    the transport owns it only if it created it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        fmt: WireFormat = WireFormat.JSON,
        compression: Compression = Compression.ZSTD,
        credential: str | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = 30.0,
        on_wipe: Callable[[WipeInstruction], None] | None = None,
    ) -> None:
        self.fmt = fmt
        self.compression = compression
        self.credential = credential
        self.on_wipe = on_wipe
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._base = base_url.rstrip("/")

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _headers(self, *, body: bool) -> dict[str, str]:
        content_type = CONTENT_TYPES[self.fmt]
        headers = {"Accept": f"{content_type}, {PROBLEM_JSON}"}
        if body:
            headers["Content-Type"] = content_type
            if self.compression is not Compression.IDENTITY:
                headers["Content-Encoding"] = self.compression.value
        if self.credential is not None:
            headers["Authorization"] = f"Bearer {self.credential}"
        return headers

    async def _send(
        self, method: str, path: str, *, content: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, self._base + path, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise TransportFailure(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.is_success:
            return response
        error = problem_from_response(response)
        if isinstance(error, DeviceWiped) and self.on_wipe is not None:
            self.on_wipe(error.instruction)
        raise error

    async def _call(self, path: str, message: object, answer: type[T]) -> T:
        body = compress(encode(message, self.fmt), self.compression)
        response = await self._send("POST", path, content=body, headers=self._headers(body=True))
        return self._decode(response, answer)

    def _decode(self, response: httpx.Response, answer: type[T]) -> T:
        fmt = format_for_content_type(response.headers.get("content-type")) or self.fmt
        try:
            return decode(answer, response.content, fmt)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A 2xx we cannot read is a server or proxy fault, not something to retry blindly.
            raise SyncError(f"unreadable {answer.__name__} from server: {exc}") from exc

    async def enroll(self, request: EnrollRequest) -> EnrollResponse:
        return await self._call("/v1/sync/enroll", request, EnrollResponse)

    async def push(self, request: PushRequest) -> PushResponse:
        return await self._call("/v1/sync/push", request, PushResponse)

    async def pull(self, request: PullRequest) -> PullResponse:
        return await self._call("/v1/sync/pull", request, PullResponse)

    async def start_upload(self, request: UploadRequest) -> UploadStatus:
        """Start or resume an upload; the answer says which parts are still ``missing``."""
        return await self._call("/v1/sync/attachments", request, UploadStatus)

    async def put_part(self, sha256: str, index: int, data: bytes) -> UploadStatus:
        # Media is already compressed (JPEG, AAC, MP4): parts go as they are.
        headers = self._headers(body=False)
        headers["Content-Type"] = "application/octet-stream"
        response = await self._send(
            "PUT", f"/v1/sync/attachments/{sha256}/parts/{index}", content=data, headers=headers
        )
        return self._decode(response, UploadStatus)

    async def upload_status(self, sha256: str) -> UploadStatus:
        response = await self._send(
            "GET", f"/v1/sync/attachments/{sha256}", content=None, headers=self._headers(body=False)
        )
        return self._decode(response, UploadStatus)
