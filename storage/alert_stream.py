"""Reading the live alert stream without skipping an event that commits late.

Alert events (``alert_versions``) are numbered by a sequence when they are written, not when
they commit: a scan's transaction can hold seq 10 while an analyst's acknowledgement takes 11
and commits first. A stream that sent 11 and then asked for "seq > 11" never sent 10. So each
read also takes, in the same snapshot, the events of the transactions that were still running
at the read before (their ids are in that snapshot), whatever their seq (decision 0110, "Live
stream"). Within one connection that is exact; a reconnect (``Last-Event-ID``) knows only the
oldest of them, and may send a few events twice: each carries its alert's id and version.
"""

from __future__ import annotations

from typing import Any

import msgspec

from storage.db import Conn
from storage.queries import Q

__all__ = ["StreamEvent", "StreamPosition", "read_events", "start_position"]


class StreamPosition(msgspec.Struct, frozen=True):
    """Every event up to seq `last` that was visible at the last read has been sent; events of
    transactions that were running then may still come with a lower seq: those with ids in
    `running`, or, when only `horizon` is known (after a reconnect), any from `horizon` on."""

    last: int
    horizon: int | None = None
    running: tuple[int, ...] | None = None

    def event_id(self) -> str:
        return str(self.last) if self.horizon is None else f"{self.last}.{self.horizon}"

    @classmethod
    def parse(cls, text: str) -> StreamPosition | None:
        """A ``Last-Event-ID``: ``SEQ.HORIZON``, or a bare ``SEQ`` as earlier streams sent."""
        seq, dot, horizon = text.strip().partition(".")
        if not seq.isdigit() or (dot and not horizon.isdigit()):
            return None
        return cls(int(seq), int(horizon) if dot else None)


class StreamEvent(msgspec.Struct, frozen=True):
    event: str
    data: str
    id: str  # where a reconnect resumes after this event


async def start_position(conn: Conn, org_id: Any) -> StreamPosition:
    """Now: the newest event, and the transactions still running that may add older ones."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot: Any = await conn.fetchrow(Q.alert_stream_snapshot)  # always one row
        last = await conn.fetchval(Q.last_alert_event, org_id)
    return StreamPosition(last, snapshot["xmin"], tuple(snapshot["xip"]))


async def read_events(
    conn: Conn, org_id: Any, position: StreamPosition, limit: int
) -> tuple[list[StreamEvent], StreamPosition, bool]:
    """The events after `position` (the late band first, then at most `limit` newer ones), the
    position after them, and whether more newer ones are waiting."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot: Any = await conn.fetchrow(Q.alert_stream_snapshot)  # always one row
        band: list[Any] = []
        if position.horizon is not None and position.running is None:
            band = await conn.fetch(
                Q.alert_events_late_from, org_id, position.last, str(position.horizon)
            )
        elif position.running:
            band = await conn.fetch(
                Q.alert_events_late_of, org_id, position.last, [str(x) for x in position.running]
            )
        fresh = await conn.fetch(Q.alert_events_after, org_id, position.last, limit)
    horizon: int = snapshot["xmin"]
    # A reconnect after a late event must see the rest of its band again; after a newer one,
    # whatever was running at this read.
    late_id = StreamPosition(position.last, position.horizon).event_id()
    events = [StreamEvent(r["event"], r["snapshot"], late_id) for r in band]
    events += [
        StreamEvent(r["event"], r["snapshot"], StreamPosition(r["seq"], horizon).event_id())
        for r in fresh
    ]
    last = max([position.last, *(r["seq"] for r in fresh)])
    return events, StreamPosition(last, horizon, tuple(snapshot["xip"])), len(fresh) == limit
