"""Case counts as the scans take them: one row per (place or entity, day) with a count and an
optional monitor, checked and expanded to one entry per individual case (the unit the date
permutation shuffles)."""

from __future__ import annotations

import msgspec
import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["CaseCounts", "IndividualCases", "individual_cases"]


class CaseCounts(msgspec.Struct, frozen=True):
    """Columns of case records: ``unit`` is a location index (space-time scan) or an entity index
    (surge scan), ``day`` counts from the first day of the study period, ``monitor`` (optional)
    identifies who reported each record, for the minimum-distinct-monitors rule."""

    unit: NDArray[np.int64]
    day: NDArray[np.int64]
    count: NDArray[np.int64]
    monitor: NDArray[np.int64] | None = None

    @classmethod
    def of(
        cls,
        unit: ArrayLike,
        day: ArrayLike,
        count: ArrayLike | None = None,
        monitor: ArrayLike | None = None,
    ) -> CaseCounts:
        units = np.asarray(unit, dtype=np.int64).ravel()
        return cls(
            unit=units,
            day=np.asarray(day, dtype=np.int64).ravel(),
            count=(
                np.ones(len(units), dtype=np.int64)
                if count is None
                else np.asarray(count, dtype=np.int64).ravel()
            ),
            monitor=None if monitor is None else np.asarray(monitor, dtype=np.int64).ravel(),
        )


class IndividualCases:
    """One entry per case, plus the counts the permutation leaves unchanged."""

    __slots__ = ("age", "day_totals", "monitor", "total", "unit", "unit_totals")

    def __init__(
        self,
        unit: NDArray[np.int64],
        age: NDArray[np.int64],
        monitor: NDArray[np.int64],
        unit_totals: NDArray[np.float64],
        day_totals: NDArray[np.float64],
    ) -> None:
        self.unit = unit
        self.age = age
        self.monitor = monitor
        self.unit_totals = unit_totals
        self.day_totals = day_totals
        self.total = float(unit_totals.sum())


def individual_cases(records: CaseCounts, n_units: int, study_days: int) -> IndividualCases:
    """Validate the records and expand them; ``age`` is days before the analysis (last) day."""
    n = len(records.unit)
    if len(records.day) != n or len(records.count) != n:
        raise ValueError("unit, day and count must have the same length")
    if records.monitor is not None and len(records.monitor) != n:
        raise ValueError("monitor must have one entry per record")
    if n and (records.unit.min() < 0 or records.unit.max() >= n_units):
        raise ValueError(f"unit index out of range 0..{n_units - 1}")
    if n and (records.day.min() < 0 or records.day.max() >= study_days):
        raise ValueError(f"day index out of the study period 0..{study_days - 1}")
    if n and records.count.min() < 0:
        raise ValueError("counts must not be negative")
    unit = np.repeat(records.unit, records.count)
    age = np.repeat(study_days - 1 - records.day, records.count)
    monitor = (
        np.zeros(len(unit), dtype=np.int64)
        if records.monitor is None
        else np.repeat(records.monitor, records.count)
    )
    unit_totals = np.bincount(unit, minlength=n_units).astype(np.float64)
    day_totals = np.bincount(study_days - 1 - age, minlength=study_days).astype(np.float64)
    return IndividualCases(unit, age, monitor, unit_totals, day_totals)
