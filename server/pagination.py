"""Keyset pagination: opaque page tokens carrying the last row's sort key."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from server.problems import ProblemError

__all__ = ["Page", "decode_page_token", "encode_page_token", "page_of"]

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True):
    items: list[T]
    next_page_token: str | None = None


def encode_page_token(key: Any) -> str:
    return base64.urlsafe_b64encode(msgspec.msgpack.encode(key)).decode().rstrip("=")


def decode_page_token(token: str, kind: Any) -> Any:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        return msgspec.msgpack.decode(raw, type=kind)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ProblemError(
            400, "invalid-page-token", "The page token is not valid", "start again without it"
        ) from None


def page_of(items: list[T], limit: int, key: Callable[[T], Any]) -> Page[T]:
    """A page from rows fetched with ``limit + 1``: the extra row only says there is more, and
    the last row shown gives the token's key."""
    shown = items[:limit]
    more = len(items) > limit
    return Page(items=shown, next_page_token=encode_page_token(key(shown[-1])) if more else None)
