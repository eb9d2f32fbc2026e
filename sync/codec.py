"""Encoding and decoding of sync messages in JSON and MessagePack, with one decoder per message type
built once at import, and the per-mutation decode that keeps one bad mutation from failing a batch.

A pull page is encoded from the JSON text the change feed stores (``StoredPullResponse``), so the
server does not turn every change into a typed ``Change`` and back; the bytes on the wire are the
same as encoding the equivalent ``PullResponse``.
"""

from __future__ import annotations

import datetime as dt
import enum
import typing
from collections.abc import Iterable
from typing import Any, Final, TypeVar

import msgspec

from sync.attachments import UploadRequest, UploadStatus
from sync.changes import Change
from sync.messages import (
    PROTOCOL_VERSION,
    EnrollRequest,
    EnrollResponse,
    Mutation,
    MutationEnvelope,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    ResetReason,
    WipeInstruction,
)

__all__ = [
    "CONTENT_TYPES",
    "DecodedPush",
    "InvalidMutation",
    "StoredChanges",
    "StoredPullResponse",
    "WireFormat",
    "decode",
    "decode_mutation",
    "decode_one_mutation",
    "decode_push",
    "encode",
    "format_for_content_type",
]

T = TypeVar("T")


class WireFormat(enum.StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"


CONTENT_TYPES: Final = {
    WireFormat.JSON: "application/json",
    WireFormat.MSGPACK: "application/msgpack",
}
_BY_CONTENT_TYPE: Final = {
    "application/json": WireFormat.JSON,
    "application/msgpack": WireFormat.MSGPACK,
    "application/x-msgpack": WireFormat.MSGPACK,
    "application/vnd.msgpack": WireFormat.MSGPACK,
}

_MESSAGE_TYPES: Final[tuple[Any, ...]] = (
    PushRequest,
    PushResponse,
    PullRequest,
    PullResponse,
    EnrollRequest,
    EnrollResponse,
    WipeInstruction,
    MutationEnvelope,
    Mutation,
    UploadRequest,
    UploadStatus,
)
_JSON_DECODERS: Final[dict[Any, msgspec.json.Decoder[Any]]] = {
    t: msgspec.json.Decoder(t) for t in _MESSAGE_TYPES
}
_MSGPACK_DECODERS: Final[dict[Any, msgspec.msgpack.Decoder[Any]]] = {
    t: msgspec.msgpack.Decoder(t) for t in _MESSAGE_TYPES
}


class StoredChanges:
    """The changes of a pull page as the feed stores them: the JSON text of one ``Change`` each.

    JSON goes on the wire by concatenation. MessagePack carries datetimes as timestamps where JSON
    has text, so for it the page is decoded into typed changes, in one call, and encoded.
    """

    __slots__ = ("texts",)

    def __init__(self, texts: Iterable[str] = ()) -> None:
        self.texts: tuple[str, ...] = tuple(texts)

    def json_array(self) -> bytes:
        return ("[" + ",".join(self.texts) + "]").encode()

    def decoded(self) -> list[Change]:
        """The typed changes (validated like any decode); raises ``msgspec.ValidationError``."""
        changes: list[Change] = _CHANGE_LIST.decode(self.json_array())
        return changes


_CHANGE_LIST: Final = msgspec.json.Decoder(list[Change])
_NO_CHANGES: Final = StoredChanges()


class StoredPullResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``PullResponse`` with its changes still as stored: the same fields, in the same order, with
    the same defaults, so it encodes to the same bytes (tests/unit/sync/test_codec.py checks it).
    The server only encodes it; devices decode a ``PullResponse``."""

    protocol_version: str = PROTOCOL_VERSION
    changes: StoredChanges = _NO_CHANGES
    has_more: bool = False
    next_cursor: str | None = None
    reset_required: bool = False
    reset_reason: ResetReason | None = None
    server_time: dt.datetime

    def typed(self) -> PullResponse:
        """The same page as a ``PullResponse`` (for callers inside the server, and tests)."""
        return PullResponse(
            protocol_version=self.protocol_version,
            changes=tuple(self.changes.decoded()),
            has_more=self.has_more,
            next_cursor=self.next_cursor,
            reset_required=self.reset_required,
            reset_reason=self.reset_reason,
            server_time=self.server_time,
        )


def _json_hook(obj: Any) -> Any:
    if isinstance(obj, StoredChanges):
        return msgspec.Raw(obj.json_array())
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


def _msgpack_hook(obj: Any) -> Any:
    if isinstance(obj, StoredChanges):
        return obj.decoded()
    raise TypeError(f"Encoding objects of type {type(obj).__name__} is unsupported")


# The hooks only see types the encoders do not know, which used to be an error.
_JSON_ENCODER: Final = msgspec.json.Encoder(enc_hook=_json_hook)
_MSGPACK_ENCODER: Final = msgspec.msgpack.Encoder(enc_hook=_msgpack_hook)


def format_for_content_type(content_type: str | None) -> WireFormat | None:
    """The wire format for a Content-Type header (parameters ignored), or None if unsupported."""
    if content_type is None:
        return None
    media = content_type.split(";", 1)[0].strip().lower()
    return _BY_CONTENT_TYPE.get(media)


def decode(message_type: type[T], body: bytes | msgspec.Raw, fmt: WireFormat) -> T:
    """Decode and validate one message. Raises ``msgspec.ValidationError`` / ``DecodeError``."""
    decoders: dict[Any, Any] = _JSON_DECODERS if fmt is WireFormat.JSON else _MSGPACK_DECODERS
    decoder = decoders.get(message_type)
    if decoder is None:
        raise TypeError(f"{message_type!r} is not a sync message type")
    result: T = decoder.decode(body)
    return result


def encode(message: object, fmt: WireFormat) -> bytes:
    """Encode a message for the wire."""
    if fmt is WireFormat.JSON:
        return _JSON_ENCODER.encode(message)
    return _MSGPACK_ENCODER.encode(message)


class InvalidMutation(msgspec.Struct, frozen=True, kw_only=True):
    """A mutation whose envelope is readable but whose body is not; it is rejected on its own.

    ``body`` is the mutation decoded as plain data, so its hash can still prove a resend identical.
    """

    envelope: MutationEnvelope
    error: str
    unknown_kind: bool
    body: Any
    raw: bytes


class DecodedPush(msgspec.Struct, frozen=True, kw_only=True):
    request: PushRequest
    mutations: tuple[Mutation | InvalidMutation, ...]


_KNOWN_KINDS: Final = frozenset(t.__struct_config__.tag for t in typing.get_args(Mutation))


def decode_push(body: bytes, fmt: WireFormat) -> DecodedPush:
    """Decode a push body, then each mutation on its own.

    The request fails as a whole (422) only if it is malformed or a mutation lacks a readable
    ``kind``/``seq``/``mutation_id``: without those the server cannot account for it. Any other
    problem makes that one mutation an ``InvalidMutation``, which the push rules reject while still
    consuming its seq, so the device's queue keeps moving.
    """
    request = decode(PushRequest, body, fmt)
    return DecodedPush(
        request=request, mutations=tuple(decode_one_mutation(raw, fmt) for raw in request.mutations)
    )


def decode_one_mutation(raw: bytes | msgspec.Raw, fmt: WireFormat) -> Mutation | InvalidMutation:
    """One mutation, or an ``InvalidMutation`` when only its envelope is readable.

    Raises ``msgspec.ValidationError``/``DecodeError`` when even the envelope is unreadable.
    Also used to revive a held mutation from the bytes stored for it.
    """
    try:
        return decode_mutation(raw, fmt)  # the common case: one decode, envelope included
    except msgspec.ValidationError as exc:
        envelope = decode(MutationEnvelope, raw, fmt)  # raises when even this is unreadable
        generic = msgspec.json.decode(raw) if fmt is WireFormat.JSON else _msgpack_any(raw)
        return InvalidMutation(
            envelope=envelope,
            error=str(exc),
            unknown_kind=envelope.kind not in _KNOWN_KINDS,
            body=generic,
            raw=bytes(raw),
        )


def decode_mutation(body: bytes | msgspec.Raw, fmt: WireFormat) -> Mutation:
    """Decode one mutation of the tagged union (``kind`` selects the type)."""
    if fmt is WireFormat.JSON:
        result: Mutation = _JSON_DECODERS[Mutation].decode(body)
    else:
        result = _MSGPACK_DECODERS[Mutation].decode(body)
    return result


def _msgpack_any(raw: bytes | msgspec.Raw) -> Any:
    return msgspec.msgpack.decode(raw)
