"""Clock offsets from pushes, and flags (never corrections) for implausible report times."""

from __future__ import annotations

import datetime as dt

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from cases.reports import TimePrecision
from sync.clock import (
    ClockEstimate,
    TimeFlag,
    estimate_clock_offset,
    occurred_time_flags,
    offset_sample,
    report_time_flags,
)
from tests.unit.sync.samples import NOW, sample_report

ENROLLED = NOW - dt.timedelta(days=30)
MIN = dt.timedelta(minutes=1)


def exact_clock(offset: dt.timedelta = dt.timedelta(0)) -> ClockEstimate:
    return ClockEstimate(offset=offset, samples=5, spread=dt.timedelta(0))


def flags(
    occurred: dt.datetime,
    recorded: dt.datetime,
    *,
    clock: ClockEstimate | None = None,
    precision: TimePrecision = TimePrecision.EXACT,
) -> frozenset[TimeFlag]:
    return report_time_flags(
        occurred_at=occurred,
        precision=precision,
        recorded_at=recorded,
        received_at=NOW,
        enrolled_at=ENROLLED,
        clock=clock if clock is not None else exact_clock(),
    )


def test_offset_sample_is_server_minus_device() -> None:
    device_two_hours_slow = NOW - dt.timedelta(hours=2)
    assert offset_sample(device_two_hours_slow, NOW) == dt.timedelta(hours=2)


def test_median_ignores_one_slow_upload() -> None:
    samples = [dt.timedelta(seconds=s) for s in (60, 61, 59, 3600, 60)]
    estimate = estimate_clock_offset(samples)
    assert estimate is not None
    assert estimate.offset == dt.timedelta(seconds=60)
    assert estimate.spread == dt.timedelta(seconds=3541)
    assert estimate_clock_offset([]) is None


def test_only_the_recent_window_counts() -> None:
    samples = [dt.timedelta(hours=5)] * 20 + [dt.timedelta(seconds=1)] * 9
    estimate = estimate_clock_offset(samples, window=9)
    assert estimate is not None
    assert estimate.offset == dt.timedelta(seconds=1)
    assert estimate.samples == 9


@given(st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=30))
def test_estimate_lies_within_the_samples(seconds: list[int]) -> None:
    estimate = estimate_clock_offset([dt.timedelta(seconds=s) for s in seconds])
    assert estimate is not None
    recent = seconds[-9:]
    assert min(recent) <= estimate.offset.total_seconds() <= max(recent)


def test_plausible_times_raise_no_flag() -> None:
    assert flags(NOW - dt.timedelta(days=400), NOW - 5 * MIN) == frozenset()


def test_future_incident_is_flagged_after_skew_correction() -> None:
    assert TimeFlag.OCCURRED_IN_FUTURE in flags(NOW + dt.timedelta(hours=3), NOW)
    # The phone runs three hours fast: the same device times are fine once corrected.
    fast = exact_clock(-dt.timedelta(hours=3))
    three_hours_fast = NOW + dt.timedelta(hours=3)
    corrected = flags(three_hours_fast - MIN, three_hours_fast, clock=fast)
    assert TimeFlag.OCCURRED_IN_FUTURE not in corrected
    assert TimeFlag.RECORDED_IN_FUTURE not in corrected
    assert TimeFlag.CLOCK_SKEW_LARGE in corrected


def test_coarse_precision_gets_its_period_as_leeway() -> None:
    later_this_week = NOW + dt.timedelta(days=3)
    assert TimeFlag.OCCURRED_IN_FUTURE in flags(later_this_week, NOW)
    assert flags(later_this_week, NOW, precision=TimePrecision.WEEK) == frozenset()


def test_recorded_before_enrollment_is_flagged_but_an_old_incident_is_not() -> None:
    before = ENROLLED - dt.timedelta(days=2)
    assert TimeFlag.RECORDED_BEFORE_ENROLLMENT in flags(before, before)
    assert TimeFlag.RECORDED_BEFORE_ENROLLMENT not in flags(before, NOW)


def test_incident_after_its_recording_and_before_epoch() -> None:
    assert TimeFlag.OCCURRED_AFTER_RECORDED in flags(NOW - MIN, NOW - dt.timedelta(hours=1))
    ancient = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert TimeFlag.BEFORE_EPOCH in flags(ancient, NOW)


def test_unknown_skew_is_said_not_assumed() -> None:
    result = report_time_flags(
        occurred_at=NOW - MIN,
        precision=TimePrecision.EXACT,
        recorded_at=NOW,
        received_at=NOW,
        enrolled_at=ENROLLED,
        clock=None,
    )
    assert result == frozenset({TimeFlag.CLOCK_SKEW_UNKNOWN})


def test_an_amended_incident_time_is_judged_again_and_only_that() -> None:
    """The incident-time flags of an amendment: judged against the amendment's own recording
    and arrival when the time changed; None (keep the stored flags) when it did not. Flags
    about the first recording (device clock, enrollment) are never part of them."""
    before = sample_report(occurred_at=NOW - dt.timedelta(days=2))
    judged = {"recorded_at": NOW, "received_at": NOW, "enrolled_at": ENROLLED}
    assert occurred_time_flags(before, before, clock=None, **judged) is None
    other_field = msgspec.structs.replace(before, severity=1)
    assert occurred_time_flags(before, other_field, clock=exact_clock(), **judged) is None

    future = msgspec.structs.replace(before, occurred_at=NOW + dt.timedelta(days=30))
    assert occurred_time_flags(before, future, clock=None, **judged) == [
        "occurred_after_recorded",
        "occurred_in_future",
    ]  # and not clock_skew_unknown, a flag of the recording
    ancient = msgspec.structs.replace(before, occurred_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    assert occurred_time_flags(before, ancient, clock=exact_clock(), **judged) == ["before_epoch"]
    assert occurred_time_flags(future, before, clock=exact_clock(), **judged) == []
    # A coarser precision alone is a change of the claim: judged again, with its leeway.
    month = msgspec.structs.replace(
        future, occurred_at=NOW + dt.timedelta(days=20), occurred_precision=TimePrecision.MONTH
    )
    assert occurred_time_flags(future, month, clock=exact_clock(), **judged) == []
