"""Device clock skew estimation and plausibility flags for the times a monitor records.

Phones' clocks are often wrong (no network time for days, manual changes). We keep the device's
times as recorded and derive an offset (server minus device) from each push; flags point reviewers
at impossible times. Nothing here rewrites a time the monitor gave.
"""

from __future__ import annotations

import datetime as dt
import enum
import statistics
from collections.abc import Sequence
from typing import Final

import msgspec

from cases.reports import Report, TimePrecision

__all__ = [
    "DEFAULT_TOLERANCE",
    "OCCURRED_FLAGS",
    "SANE_EPOCH",
    "SKEW_WINDOW",
    "ClockEstimate",
    "TimeFlag",
    "estimate_clock_offset",
    "occurred_time_flags",
    "offset_sample",
    "report_time_flags",
]

SKEW_WINDOW: Final = 9
# Covers a push's unknown transit time (minutes on a bad 2G link) plus ordinary clock drift.
DEFAULT_TOLERANCE: Final = dt.timedelta(minutes=10)
LARGE_SKEW: Final = dt.timedelta(minutes=10)
SANE_EPOCH: Final = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)

_PERIOD: Final = {
    TimePrecision.EXACT: dt.timedelta(0),
    TimePrecision.DAY: dt.timedelta(days=1),
    TimePrecision.WEEK: dt.timedelta(days=7),
    TimePrecision.MONTH: dt.timedelta(days=31),
}


class TimeFlag(enum.StrEnum):
    OCCURRED_IN_FUTURE = "occurred_in_future"
    RECORDED_IN_FUTURE = "recorded_in_future"
    OCCURRED_AFTER_RECORDED = "occurred_after_recorded"
    RECORDED_BEFORE_ENROLLMENT = "recorded_before_enrollment"
    BEFORE_EPOCH = "before_epoch"
    CLOCK_SKEW_LARGE = "clock_skew_large"
    CLOCK_SKEW_UNKNOWN = "clock_skew_unknown"


class ClockEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """Add ``offset`` to a device time to get server time. ``spread`` is the samples' range."""

    offset: dt.timedelta
    samples: int
    spread: dt.timedelta


def offset_sample(sent_at: dt.datetime, received_at: dt.datetime) -> dt.timedelta:
    """One push's offset: server receive time minus device send time.

    The request's transit time is unknown (no round trip, unlike NTP), so a sample overstates the
    offset by the transit time; the median over recent pushes damps the slow ones.
    """
    return received_at - sent_at


def estimate_clock_offset(
    samples: Sequence[dt.timedelta], *, window: int = SKEW_WINDOW
) -> ClockEstimate | None:
    """The median of the last ``window`` samples (oldest first), or None without samples."""
    recent = list(samples[-window:])
    if not recent:
        return None
    seconds = [s.total_seconds() for s in recent]
    return ClockEstimate(
        offset=dt.timedelta(seconds=statistics.median(seconds)),
        samples=len(recent),
        spread=dt.timedelta(seconds=max(seconds) - min(seconds)),
    )


def report_time_flags(
    *,
    occurred_at: dt.datetime,
    precision: TimePrecision,
    recorded_at: dt.datetime,
    received_at: dt.datetime,
    enrolled_at: dt.datetime,
    clock: ClockEstimate | None,
    tolerance: dt.timedelta = DEFAULT_TOLERANCE,
    epoch: dt.datetime = SANE_EPOCH,
) -> frozenset[TimeFlag]:
    """Flags for a report's incident time and recording time, judged in server time.

    Device times are corrected by the clock estimate before comparison with server times
    (receive, enrollment). ``occurred_at`` with a coarse precision may be anywhere in its period,
    so an incident "this month" is given the month's length of leeway. An incident may well
    predate enrollment (a monitor reports past abuse); only the recording time may not.
    """
    flags: set[TimeFlag] = set()
    offset = clock.offset if clock is not None else dt.timedelta(0)
    if clock is None:
        flags.add(TimeFlag.CLOCK_SKEW_UNKNOWN)
    elif abs(clock.offset) > LARGE_SKEW:
        flags.add(TimeFlag.CLOCK_SKEW_LARGE)
    occurred = occurred_at + offset
    recorded = recorded_at + offset
    leeway = tolerance + _PERIOD[precision]
    if occurred > received_at + leeway:
        flags.add(TimeFlag.OCCURRED_IN_FUTURE)
    if recorded > received_at + tolerance:
        flags.add(TimeFlag.RECORDED_IN_FUTURE)
    # Both device times share one clock, so their order needs no correction.
    if occurred_at > recorded_at + leeway:
        flags.add(TimeFlag.OCCURRED_AFTER_RECORDED)
    if recorded < enrolled_at - tolerance:
        flags.add(TimeFlag.RECORDED_BEFORE_ENROLLMENT)
    if occurred_at < epoch:
        flags.add(TimeFlag.BEFORE_EPOCH)
    return frozenset(flags)


# The flags that judge the incident time: an amendment that changes it is judged again. The
# others judge the report's first recording (its device clock, its enrollment) and stay.
OCCURRED_FLAGS: Final = frozenset(
    {TimeFlag.OCCURRED_IN_FUTURE, TimeFlag.OCCURRED_AFTER_RECORDED, TimeFlag.BEFORE_EPOCH}
)


def occurred_time_flags(
    before: Report,
    after: Report,
    *,
    recorded_at: dt.datetime,
    received_at: dt.datetime,
    enrolled_at: dt.datetime,
    clock: ClockEstimate | None,
) -> list[str] | None:
    """The incident-time flags of an amended report, judged against the amendment's own
    recording and arrival, or None when the amendment leaves the incident time as it was (its
    flags stand: a later edit of another field does not make an impossible time plausible)."""
    if (after.occurred_at, after.occurred_precision) == (
        before.occurred_at,
        before.occurred_precision,
    ):
        return None
    flags = report_time_flags(
        occurred_at=after.occurred_at,
        precision=after.occurred_precision,
        recorded_at=recorded_at,
        received_at=received_at,
        enrolled_at=enrolled_at,
        clock=clock,
    )
    return sorted(f.value for f in flags & OCCURRED_FLAGS)
