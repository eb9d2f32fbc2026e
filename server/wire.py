"""Sync bodies on the wire: JSON or MessagePack, identity, gzip or zstd, with bounded inflation.

The compressed size is bounded by the request size limit; the inflated size is bounded here, as it
is produced, so a small "zip bomb" is refused with 413 without ever being expanded in memory.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Any

import msgspec
import zstandard
from litestar import Request, Response

from server.problems import ProblemError
from sync.codec import WireFormat, encode, format_for_content_type

__all__ = ["MAX_INFLATED_BYTES", "read_sync_body", "sync_response"]

MAX_INFLATED_BYTES = 32 * 1024 * 1024
_COMPRESS_ABOVE = 1024
_MEDIA = {WireFormat.JSON: "application/json", WireFormat.MSGPACK: "application/msgpack"}


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, "body-too-large", "Request body too large", f"inflated body exceeds {limit} bytes"
    )


def _gunzip(body: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProblemError(400, "malformed-body", "The body is not valid gzip", str(exc)) from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return out


def _unzstd(body: bytes, limit: int) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body))
    try:
        out = reader.read(limit + 1)
    except zstandard.ZstdError as exc:
        raise ProblemError(400, "malformed-body", "The body is not valid zstd", str(exc)) from None
    if len(out) > limit:
        raise _too_large(limit)
    return out


async def read_sync_body(
    request: Request[Any, Any, Any], limit: int = MAX_INFLATED_BYTES
) -> tuple[bytes, WireFormat]:
    """The request body, inflated and with its wire format; problem details for anything else."""
    fmt = format_for_content_type(request.headers.get("content-type"))
    if fmt is None:
        raise ProblemError(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send application/json or application/msgpack",
        )
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body, fmt
    if encoding == "gzip":
        return _gunzip(body, limit), fmt
    if encoding == "zstd":
        return _unzstd(body, limit), fmt
    raise ProblemError(
        415, "unsupported-media-type", "Unsupported content encoding", "use gzip, zstd or none"
    )


def _accepts(header: str, token: str) -> bool:
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() == token and "q=0" not in params.replace(" ", ""):
            return True
    return False


def sync_response(
    request: Request[Any, Any, Any], message: msgspec.Struct, status_code: int = 200
) -> Response[bytes]:
    """Encode like the request (or as ``Accept`` asks), compressed if the client accepts it."""
    accept = request.headers.get("accept", "")
    request_fmt = format_for_content_type(request.headers.get("content-type"))
    if "application/msgpack" in accept or (
        "json" not in accept and request_fmt is WireFormat.MSGPACK
    ):
        fmt = WireFormat.MSGPACK
    else:
        fmt = WireFormat.JSON
    body = encode(message, fmt)
    headers = {"Vary": "Accept, Accept-Encoding"}
    accept_encoding = request.headers.get("accept-encoding", "")
    if len(body) > _COMPRESS_ABOVE:
        if _accepts(accept_encoding, "zstd"):
            # Level 1: on sync pages (many similar records) it is both faster and no larger
            # than the default 3 (measured on 1,000-entity pages: 0.38 vs 0.60 ms, 32 vs 35 KB).
            body = zstandard.ZstdCompressor(level=1).compress(body)
            headers["Content-Encoding"] = "zstd"
        elif _accepts(accept_encoding, "gzip"):
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
    return Response(content=body, status_code=status_code, media_type=_MEDIA[fmt], headers=headers)
