"""The case team downloads a report's attachments: the evidence monitors' phones uploaded.

The bytes stream from the blob store to the client (never whole in memory), always as a download
(``Content-Disposition: attachment``, ``nosniff``, a sandboxing CSP) so that hostile content can
never render in the dashboard's origin, and never cached by shared proxies. Every download is
audited. Byte ranges are not served: the blob store streams a blob from its start only, verifying
its sha256 on the way, so a ``Range`` header is ignored and the whole file is sent
(``Accept-Ranges: none``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from litestar import Response, get
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import FromPath, HeaderParameter
from litestar.response import Stream

from cases.accounts import Role
from cases.classification import FIELD_CLASSES, ROLE_CLASSES, FieldClass
from server.auth import Caller, Principal, audit_staff, requires
from server.problems import FieldError, ProblemError
from server.resources import Db, resources_of
from storage.attachments import DeclaredMedia, declared_media
from storage.blobs import BlobNotFound, BlobStoreUnavailable, BlobStream
from storage.blobs.base import check_sha256
from storage.db import Conn

__all__ = ["ROUTES", "download_attachment"]

# Whoever sees a report's attachment list may fetch its files; sensitive ones need more below.
_MAY_SEE_ATTACHMENTS = tuple(r for r in Role if FIELD_CLASSES["attachments"] in ROLE_CLASSES[r])

# Media types sent as declared, with the file extension offered; anything else (HTML, SVG, XML,
# scripts, unknown types) goes out as application/octet-stream. The download disposition already
# keeps browsers from rendering, this keeps the declared type from steering them at all.
_SAFE_TYPES: Final[dict[str, str]] = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "image/heic": ".heic",
    "image/heif": ".heif",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/aac": ".aac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/wav": ".wav",
    "audio/webm": ".weba",
    "audio/amr": ".amr",
    "audio/3gpp": ".3gp",
    "video/mp4": ".mp4",
    "video/3gpp": ".3gp",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
    "application/pdf": ".pdf",
}
_OPAQUE = "application/octet-stream"


def _check(sha256: str) -> None:
    try:
        check_sha256(sha256)
    except ValueError:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            "sha256 must be 64 lowercase hex characters",
            errors=[FieldError("sha256", "must be 64 lowercase hex characters", "path")],
        ) from None


def _not_found() -> ProblemError:
    # The same answer for another organisation's report or hash as for a missing one.
    return ProblemError(404, "not-found", "Not found", "attachment not found")


def _erased() -> ProblemError:
    return ProblemError(
        410,
        "attachment-erased",
        "The attachment was erased",
        "it was erased with its redacted report under the organisation's retention policy",
    )


def _check_state(principal: Principal, media: DeclaredMedia | None) -> DeclaredMedia:
    if media is None:
        raise _not_found()
    if media.sensitive and FieldClass.SENSITIVE not in ROLE_CLASSES[principal.role]:
        raise ProblemError(
            403,
            "forbidden",
            "Not allowed for your role",
            "this attachment is marked sensitive; your role may not see sensitive fields",
        )
    if media.erased:
        raise _erased()
    if not media.arrived:
        raise ProblemError(
            409,
            "attachment-not-yet-uploaded",
            "The attachment is not yet uploaded",
            "the monitor's device has not finished uploading it; try again later",
        )
    return media


def _matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison, as RFC 9110 asks for If-None-Match; ``*`` matches any stored file."""
    tags = (t.strip() for t in if_none_match.split(","))
    return any(t == "*" or t.removeprefix("W/") == etag for t in tags)


def _headers(etag: str) -> dict[str, str]:
    # Sensitive evidence: no shared cache may keep it, and no browser may guess its type.
    return {"ETag": etag, "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


@get(
    "/v1/reports/{report_id:uuid}/attachments/{sha256:str}",
    guards=[requires(*_MAY_SEE_ATTACHMENTS)],
    tags=["reports"],
    summary="Download one attachment of a report (streamed; sensitive ones for roles that see "
    "sensitive fields; audited)",
    media_type=_OPAQUE,
)
async def download_attachment(
    principal: Caller,
    db: Db,
    state: State,
    report_id: FromPath[uuid.UUID],
    sha256: FromPath[str],
    if_none_match: Annotated[
        str | None, HeaderParameter(name="If-None-Match", max_length=2000, required=False)
    ] = None,
) -> Response[Any]:
    _check(sha256)
    media = _check_state(principal, await declared_media(db, principal.org_id, report_id, sha256))
    etag = f'"{sha256}"'
    headers = _headers(etag)
    if if_none_match is not None and _matches(if_none_match, etag):
        return Response(content=b"", status_code=304, headers=headers)
    stream = await _open(db, state, principal, report_id, sha256)
    try:
        async with db.transaction():
            await audit_staff(
                db, principal, "report.attachment_download", "report", report_id, sha256=sha256
            )
    except BaseException:
        await stream.aclose()
        raise
    media_type = media.media_type if media.media_type in _SAFE_TYPES else _OPAQUE
    filename = sha256 + _SAFE_TYPES.get(media.media_type, ".bin")
    return Stream(
        _verified(stream),
        headers={
            **headers,
            # A header, not `media_type`: the route's declared type (for the OpenAPI document)
            # would take precedence over the response's.
            "Content-Type": media_type,
            "Content-Length": str(stream.info.size),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Accept-Ranges": "none",
        },
        # The stream closes itself at its end or on a read error; this also releases the file or
        # connection when the client goes away mid-download (closing twice is harmless).
        background=BackgroundTask(stream.aclose),
    )


async def _verified(stream: BlobStream) -> AsyncIterator[bytes]:
    """The stream's chunks, each held back until the next one is read, so the last goes out only
    once the store has verified the whole sha256: a blob corrupted at rest ends its download short
    of the announced ``Content-Length`` (the client sees a broken transfer, never a complete file).
    """
    held = None
    async for chunk in stream:
        if held is not None:
            yield held
        held = chunk
    if held is not None:
        yield held


async def _open(
    db: Conn, state: State, principal: Principal, report_id: uuid.UUID, sha256: str
) -> BlobStream:
    try:
        return await resources_of(state).blobs.open(sha256)
    except BlobNotFound:
        # Erased between the lookup and now (retention deletes the bytes after marking them)?
        again = await declared_media(db, principal.org_id, report_id, sha256)
        if again is None:
            raise _not_found() from None
        if again.erased:
            raise _erased() from None
        raise _unavailable("the blob store does not have this attachment's bytes") from None
    except BlobStoreUnavailable:
        raise _unavailable("the blob store is unreachable, retry later") from None


def _unavailable(detail: str) -> ProblemError:
    return ProblemError(
        503, "unavailable", "Service unavailable", detail, headers={"Retry-After": "5"}
    )


ROUTES = [download_attachment]
