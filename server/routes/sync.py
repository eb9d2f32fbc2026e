"""The device side of the sync protocol: enroll, push, pull and resumable attachment uploads.

Bodies are JSON or MessagePack, optionally gzip or zstd; see docs/sync-protocol.md. Everything a
push accepts is committed before the answer is sent, so a response lost on a bad network only
means the device resends and receives the same results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Request, Response, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath

from server.auth import DEVICE_TOKEN_PREFIX, DeviceCaller, requires_device
from server.passwords import hash_token, new_token
from server.problems import FieldError, ProblemError
from server.resources import Db, resources_of
from server.wire import read_sync_body, sync_response
from storage.attachments import receive_part, start_or_resume_upload, upload_status_for
from storage.devices import DeviceRepository
from storage.feed import note_pull, read_pull_page
from storage.push import execute_push
from sync.attachments import UploadRequest
from sync.codec import decode, decode_push
from sync.messages import EnrollRequest, EnrollResponse, PullRequest

__all__ = ["attachment_status", "enroll", "pull", "push", "put_attachment_part", "start_attachment"]

_PUBLIC: dict[str, Any] = {"public": True, "exclude_from_auth": True}
_PIECE = 256 * 1024


def _invalid(exc: msgspec.MsgspecError) -> ProblemError:
    message = str(exc)
    if isinstance(exc, msgspec.ValidationError):
        path = message.rsplit(" - at `", 1)[1].rstrip("`") if " - at `" in message else ""
        return ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            message,
            errors=[FieldError(path.removeprefix("$.") or "body", message, "body")],
        )
    return ProblemError(400, "malformed-body", "The body cannot be decoded", message)


def normalise_code(code: str) -> str:
    """Codes are typed by hand: ignore case, spaces and dashes."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


@post(
    "/v1/sync/enroll",
    opt=_PUBLIC,
    tags=["sync"],
    summary="Exchange a one-time enrollment code for a device credential",
)
async def enroll(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    body, fmt = await read_sync_body(request)
    try:
        message = decode(EnrollRequest, body, fmt)
    except msgspec.MsgspecError as exc:
        raise _invalid(exc) from None
    res = resources_of(state)
    credential = f"{DEVICE_TOKEN_PREFIX}{new_token()}"
    async with res.pool.acquire() as conn:
        enrolled = await DeviceRepository(conn).enroll(
            hash_token(normalise_code(message.code)),
            hash_token(credential),
            message.device_model,
            message.os_version,
            message.app_version,
        )
    if enrolled is None:
        # Unknown, used and expired codes look alike: nothing to learn by guessing.
        raise ProblemError(
            401,
            "invalid-enrollment-code",
            "The enrollment code is not valid",
            "ask your organisation for a new code; each code works once and expires",
        )
    device_id, _, monitor_id, enrolled_at = enrolled
    answer = EnrollResponse(
        device_id=device_id, credential=credential, monitor_id=monitor_id, enrolled_at=enrolled_at
    )
    return sync_response(request, answer, 201)


@post(
    "/v1/sync/push",
    guards=[requires_device()],
    tags=["sync"],
    summary="Send a batch of outbox mutations; one result per mutation",
)
async def push(
    request: Request[Any, Any, Any], state: State, device: DeviceCaller
) -> Response[bytes]:
    received_at = dt.datetime.now(dt.UTC)
    body, fmt = await read_sync_body(request)
    try:
        decoded = decode_push(body, fmt)
    except msgspec.MsgspecError as exc:
        raise _invalid(exc) from None
    if decoded.request.device_id != device.id:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            "device_id does not match the credential",
            errors=[FieldError("device_id", "does not match the credential", "body")],
        )
    res = resources_of(state)
    known = {c.code for c in res.taxonomy.active_categories()}
    async with res.pool.acquire() as conn:
        answer = await execute_push(
            conn,
            device,
            decoded,
            fmt,
            keyring=res.keyring,
            known_categories=known,
            retired_categories={c.code for c in res.taxonomy.categories if c.retired},
            received_at=received_at,
        )
    return sync_response(request, answer)


@post(
    "/v1/sync/pull",
    guards=[requires_device()],
    tags=["sync"],
    summary="The next page of changes after a cursor",
)
async def pull(
    request: Request[Any, Any, Any], state: State, device: DeviceCaller, db: Db
) -> Response[bytes]:
    body, fmt = await read_sync_body(request)
    try:
        message = decode(PullRequest, body, fmt)
    except msgspec.MsgspecError as exc:
        raise _invalid(exc) from None
    res = resources_of(state)
    answer = await read_pull_page(
        db,
        org_id=device.org_id,
        monitor_id=device.monitor_id,
        regions=device.regions,
        request=message,
        cursor_key=res.cursor_key,
    )
    # Observability only: the start and the end of a sync say enough, not every page between.
    if message.cursor is None or not answer.has_more:
        await note_pull(db, device.id)
    return sync_response(request, answer)


@post(
    "/v1/sync/attachments",
    guards=[requires_device()],
    tags=["sync"],
    summary="Start or resume the upload of one attachment",
)
async def start_attachment(
    request: Request[Any, Any, Any], state: State, device: DeviceCaller, db: Db
) -> Response[bytes]:
    body, fmt = await read_sync_body(request)
    try:
        message = decode(UploadRequest, body, fmt)
    except msgspec.MsgspecError as exc:
        raise _invalid(exc) from None
    res = resources_of(state)
    status = await start_or_resume_upload(db, res.blobs, device, message)
    return sync_response(request, status)


@get(
    "/v1/sync/attachments/{sha256:str}",
    guards=[requires_device()],
    tags=["sync"],
    summary="Where an attachment upload stands: missing parts, or complete",
)
async def attachment_status(
    request: Request[Any, Any, Any],
    state: State,
    device: DeviceCaller,
    db: Db,
    sha256: FromPath[str],
) -> Response[bytes]:
    _check_sha(sha256)
    status = await upload_status_for(db, resources_of(state).blobs, device, sha256)
    return sync_response(request, status)


@put(
    "/v1/sync/attachments/{sha256:str}/parts/{index:int}",
    guards=[requires_device()],
    tags=["sync"],
    summary="Send one part of an attachment (raw bytes)",
    request_max_body_size=64 * 1024 * 1024,
)
async def put_attachment_part(
    request: Request[Any, Any, Any],
    state: State,
    device: DeviceCaller,
    sha256: FromPath[str],
    index: FromPath[int],
) -> Response[bytes]:
    # No `db: Db` here: it would hold a pooled connection while the part streams in, which
    # over a phone's network can take minutes (`receive_part` takes one for each short step).
    _check_sha(sha256)

    async def chunks() -> AsyncIterator[bytes]:
        # Small pieces: the blob store writes from worker threads, and an idle worker keeps a
        # reference to the last buffer it wrote, so a big chunk would linger once per thread.
        async for chunk in request.stream():
            for start in range(0, len(chunk), _PIECE):
                yield chunk[start : start + _PIECE]

    res = resources_of(state)
    status = await receive_part(res.pool.acquire, res.blobs, device, sha256, index, chunks())
    return sync_response(request, status)


def _check_sha(sha256: str) -> None:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            "sha256 must be 64 lowercase hex characters",
            errors=[FieldError("sha256", "must be 64 lowercase hex characters", "path")],
        )
