"""The opaque pull cursor, and the rule that picks the next page of changes without skipping any.

Every change row carries a change number (``change_no``, a bigserial taken at write time) and the
id of the transaction that wrote it (``xid``, PostgreSQL ``pg_current_xact_id()``). Transactions
commit out of order, so a plain ``change_no`` high-water mark skips rows that commit late. The
cursor therefore also carries a transaction horizon: the oldest transaction still running when a
page was read (``pg_snapshot_xmin(pg_current_snapshot())``). Every transaction below a horizon has
finished, so the rows below it are final. A cursor ``(after, horizon)`` means "the device has every
row with ``change_no <= after`` and ``xid < horizon``". The next page is, in ``change_no`` order,
first the "band" of late rows (``change_no <= after``, ``horizon <= xid < target``), then newer
rows (``change_no > after``, ``xid < target``), where ``target`` is the new horizon. A page that
ends inside the band records how far it got (``band_after``) and keeps ``target`` fixed until the
band is done. See docs/decisions/0103-sync-protocol.md for the argument.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Final, Generic, Protocol, TypeVar
from uuid import UUID

import msgspec

from sync.messages import ResetReason

__all__ = [
    "CURSOR_VERSION",
    "CursorState",
    "InvalidCursorError",
    "PruneMark",
    "PullPage",
    "PullStart",
    "PullWindow",
    "ResetRequired",
    "Scope",
    "UnsupportedCursorVersionError",
    "decode_cursor",
    "encode_cursor",
    "pull_window",
    "scope_fingerprint",
    "select_changes",
    "start_pull",
]

CURSOR_VERSION: Final = 1
MAX_CURSOR_CHARS: Final = 512
_TAG_BYTES: Final = 32
_MIN_KEY_BYTES: Final = 16


class InvalidCursorError(ValueError):
    """The token is not a cursor this server issued (garbage, truncated, forged or re-keyed)."""


class UnsupportedCursorVersionError(InvalidCursorError):
    """An authentic cursor in a format this server no longer reads; the device must reset."""


class CursorState(msgspec.Struct, frozen=True, array_like=True):
    """What a cursor encodes. Delivered: rows with ``change_no <= after`` and ``xid < horizon``,
    plus, when ``band_after > 0``, rows with ``change_no <= band_after`` and
    ``horizon <= xid < target`` (a page stopped part-way through the late rows).

    ``scope`` fingerprints what the device may see and ``epoch`` identifies the change log
    (a new epoch after a restore from backup), so either changing forces a reset.
    """

    after: int
    horizon: int
    scope: bytes
    epoch: int
    target: int = 0
    band_after: int = 0


class Scope(msgspec.Struct, frozen=True, kw_only=True):
    """What a device may see: its monitor's own records, tasks, and the registry of its regions."""

    monitor_id: UUID
    role: str
    regions: frozenset[str] = frozenset()


def scope_fingerprint(scope: Scope) -> bytes:
    """16 bytes that change whenever the scope does (regions in any order give the same value)."""
    canonical = "\0".join([str(scope.monitor_id), scope.role, *sorted(scope.regions)])
    return hashlib.sha256(canonical.encode()).digest()[:16]


def _sign(payload: bytes, key: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def encode_cursor(state: CursorState, key: bytes) -> str:
    """base64url(version byte + msgpack(state) + HMAC-SHA256 over both), unpadded."""
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError("cursor key must be at least 16 bytes")
    payload = bytes([CURSOR_VERSION]) + msgspec.msgpack.encode(state)
    return base64.urlsafe_b64encode(payload + _sign(payload, key)).rstrip(b"=").decode("ascii")


def decode_cursor(token: str, key: bytes, *, previous_keys: Iterable[bytes] = ()) -> CursorState:
    """Verify and decode a cursor. ``previous_keys`` accepts cursors signed before a key rotation.

    Raises ``InvalidCursorError`` for anything not issued by this server, and its subclass
    ``UnsupportedCursorVersionError`` for an authentic cursor in an old format.
    """
    if len(token) > MAX_CURSOR_CHARS or not token.isascii():
        raise InvalidCursorError("cursor is not a token this server issued")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursorError("cursor is not valid base64url") from exc
    if len(raw) < 1 + _TAG_BYTES:
        raise InvalidCursorError("cursor is truncated")
    payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if not any(hmac.compare_digest(_sign(payload, k), tag) for k in (key, *previous_keys)):
        raise InvalidCursorError("cursor signature does not match")
    if payload[0] != CURSOR_VERSION:
        raise UnsupportedCursorVersionError(f"cursor version {payload[0]} is not supported")
    try:
        return msgspec.msgpack.decode(payload[1:], type=CursorState)
    except msgspec.DecodeError as exc:  # only reachable with a leaked key
        raise InvalidCursorError("cursor body is malformed") from exc


class PruneMark(msgspec.Struct, frozen=True, kw_only=True):
    """The highest ``change_no`` and ``xid`` among change rows (tombstones) pruned from the log."""

    change_no: int = 0
    xid: int = 0


class ResetRequired(msgspec.Struct, frozen=True):
    reason: ResetReason


class PullStart(msgspec.Struct, frozen=True):
    """A cursor accepted for serving: continue from ``state``."""

    state: CursorState


def start_pull(
    token: str | None,
    key: bytes,
    *,
    scope: bytes,
    epoch: int,
    pruned: PruneMark,
    previous_keys: Iterable[bytes] = (),
) -> PullStart | ResetRequired:
    """Accept a device's cursor, or say why it must reset. No cursor starts a full first sync.

    A cursor that fails verification also resets rather than fails: the device only ever gets
    data from its own scope, and a reset never wedges it (e.g. after a key was retired).
    """
    if token is None:
        return PullStart(CursorState(after=0, horizon=0, scope=scope, epoch=epoch))
    try:
        state = decode_cursor(token, key, previous_keys=previous_keys)
    except UnsupportedCursorVersionError:
        return ResetRequired(ResetReason.CURSOR_VERSION)
    except InvalidCursorError:
        return ResetRequired(ResetReason.CURSOR_INVALID)
    if state.epoch != epoch:
        return ResetRequired(ResetReason.SERVER_RESTORED)
    if not hmac.compare_digest(state.scope, scope):
        return ResetRequired(ResetReason.SCOPE_CHANGED)
    # A pruned row the device has not seen may be a deletion it will now never hear of.
    if pruned.change_no > state.after or (pruned.xid and pruned.xid >= state.horizon):
        return ResetRequired(ResetReason.CURSOR_EXPIRED)
    return PullStart(state)


class ChangePosition(Protocol):
    """Any change row: only its position in the log matters here."""

    @property
    def change_no(self) -> int: ...

    @property
    def xid(self) -> int: ...


R = TypeVar("R", bound=ChangePosition)


class PullWindow(msgspec.Struct, frozen=True, kw_only=True):
    """Parameters for the page query, read in the same snapshot as ``snapshot_xmin``::

        WHERE xid < :target
          AND (change_no > :after OR (xid >= :horizon AND change_no > :band_after))
        ORDER BY change_no LIMIT :limit + 1

    ``stale`` means the snapshot is older than the cursor (a lagging replica): serve nothing and
    keep the cursor.
    """

    after: int
    horizon: int
    target: int
    band_after: int
    stale: bool


def pull_window(state: CursorState, snapshot_xmin: int) -> PullWindow:
    # Mid-band the band must stay the same set of rows, so the target horizon stays put.
    target = state.target if state.band_after else snapshot_xmin
    floor = state.target if state.band_after else state.horizon
    return PullWindow(
        after=state.after,
        horizon=state.horizon,
        target=max(target, floor),
        band_after=state.band_after,
        stale=snapshot_xmin < floor,
    )


class PullPage(msgspec.Struct, Generic[R], frozen=True, kw_only=True):
    rows: tuple[R, ...]
    next_state: CursorState
    has_more: bool


def select_changes(
    state: CursorState, rows: Sequence[R], *, snapshot_xmin: int, limit: int
) -> PullPage[R]:
    """The next page from candidate ``rows`` (committed rows as of a snapshot whose oldest
    running transaction is ``snapshot_xmin``; extra rows are filtered out), and the cursor after it.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    w = pull_window(state, snapshot_xmin)
    if w.stale:
        return PullPage(rows=(), next_state=state, has_more=False)
    eligible = sorted(
        (
            r
            for r in rows
            if r.xid < w.target
            and (r.change_no > w.after or (r.xid >= w.horizon and r.change_no > w.band_after))
        ),
        key=lambda r: r.change_no,
    )
    page = tuple(eligible[:limit])
    has_more = len(eligible) > limit
    last = page[-1].change_no if page else 0
    if has_more and last <= state.after:
        # Stopped inside the band: remember how far, keep the band fixed.
        next_state = msgspec.structs.replace(state, target=w.target, band_after=last)
    else:
        # The band is done (and, without more, everything below the target too).
        next_state = msgspec.structs.replace(
            state, after=max(state.after, last), horizon=w.target, target=w.target, band_after=0
        )
        # A band finished under an older target: newer rows may already be final, so say so.
        has_more = has_more or (state.band_after > 0 and w.target < snapshot_xmin)
    return PullPage(rows=page, next_state=next_state, has_more=has_more)
