"""Prospective space-time permutation scan (Kulldorff et al. 2005, SaTScan's space-time
permutation model): finds circles of places whose recent days hold more reports than the
place and day totals predict, with Monte Carlo p-values from shuffling dates among cases.

For zone z and window w (the last 1..W days), the expected count is
mu = (sum of all-period cases in z) * (cases in w) / C, and the statistic is Kulldorff's
Poisson log-likelihood ratio for an excess. Each place keeps its best zone and window; these
are ranked by LLR (ties: fewer places, then lower centre index, as SaTScan) and reported
greedily without geographical overlap. Every replica shuffles dates among cases; only the M
cases that land in the last W days change any count, so a replica costs O(M + zones * W) (see
``cases.risk.permutation``). An upper bound, LLR <= C (c - mu)^2 / (mu (C - mu)), which
follows from ln x <= x - 1, skips the logarithms of candidates that cannot beat the replica's
running maximum.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import msgspec
import numba
import numpy as np
from numpy.typing import NDArray

from cases.risk.family import MAX_SCAN_REPLICAS
from cases.risk.permutation import (
    LLR_TOLERANCE,
    compiled,
    compiled_parallel,
    draw_tail_sample,
    may_exceed,
    p_value,
    poisson_llr,
    restore_pool,
    run_monte_carlo,
)
from cases.risk.records import CaseCounts, IndividualCases, individual_cases
from cases.risk.zones import CandidateZones, build_zones

__all__ = ["METHOD", "ScanResult", "SpaceTimeCluster", "SpaceTimeParams", "scan_space_time"]

METHOD = "space-time permutation scan, prospective (Kulldorff 2005)"


class SpaceTimeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Settings of one scan; the defaults are SaTScan's where it has one."""

    study_days: Annotated[int, msgspec.Meta(ge=1, le=3660)]
    max_window_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 7
    max_radius_km: Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)] = 10.0
    max_case_fraction: Annotated[float, msgspec.Meta(gt=0.0, le=0.5)] = 0.5
    min_cases: Annotated[int, msgspec.Meta(ge=1)] = 2
    min_monitors: Annotated[int, msgspec.Meta(ge=1, le=64)] = 1
    replicas: Annotated[int, msgspec.Meta(ge=0, le=MAX_SCAN_REPLICAS)] = 999
    sequential_stop: Annotated[int, msgspec.Meta(ge=0)] = 50
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0
    # K: at most this many nearest locations in a circle (None: only the radius and case caps).
    max_neighbours: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        # Meta constraints bind on decode; direct construction gets the same checks here.
        if self.max_neighbours is not None and self.max_neighbours < 1:
            raise ValueError("max_neighbours must be at least 1")
        if self.study_days < 1 or not 1 <= self.max_window_days <= self.study_days:
            raise ValueError("need 1 <= max_window_days <= study_days")
        if not 0.0 < self.max_case_fraction <= 0.5 or self.max_radius_km < 0:
            raise ValueError("max_case_fraction must be in (0, 0.5], max_radius_km >= 0")
        if min(self.min_cases, self.min_monitors) < 1 or self.min_monitors > 64:
            raise ValueError("min_cases >= 1 and 1 <= min_monitors <= 64")
        if min(self.replicas, self.sequential_stop, self.seed) < 0:
            raise ValueError("replicas, sequential_stop and seed must not be negative")


class SpaceTimeCluster(msgspec.Struct, frozen=True):
    centre: int
    locations: tuple[int, ...]
    radius_km: float
    start_day: int
    end_day: int
    observed: int
    expected: float
    ratio: float
    llr: float
    monitors: int
    p_value: float | None
    recurrence_interval_days: float | None
    """1/p in units of the run interval (days for a daily run)."""


class ScanResult(msgspec.Struct, frozen=True):
    method: str
    params: SpaceTimeParams
    total_cases: int
    zones: int
    replicas_run: int
    stopped_early: bool
    clusters: tuple[SpaceTimeCluster, ...]


@compiled
def _enough_monitors(
    start: Any,
    end: Any,
    order: Any,
    case_ptr: Any,
    case_age: Any,
    case_monitor: Any,
    w: Any,
    need: Any,
    seen: Any,
) -> Any:
    # Distinct monitors among the zone's cases in the window; stops as soon as `need` are seen.
    found = 0
    for q in range(start, end + 1):
        s = order[q]
        for e in range(case_ptr[s], case_ptr[s + 1]):
            if case_age[e] > w:
                continue
            m = case_monitor[e]
            new = True
            for t in range(found):
                if seen[t] == m:
                    new = False
                    break
            if new:
                seen[found] = m
                found += 1
                if found >= need:
                    return True
    return False


@compiled
def _centre_best(
    centre: Any,
    ptr: Any,
    order: Any,
    zone_end: Any,
    zone_cases: Any,
    counts: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    min_monitors: Any,
    case_ptr: Any,
    case_age: Any,
    case_monitor: Any,
    floor: Any,
    acc: Any,
    seen: Any,
) -> Any:
    n_windows = counts.shape[1]
    acc[:] = 0.0
    best, best_pos, best_w = floor, -1, -1
    for p in range(ptr[centre], ptr[centre + 1]):
        s = order[p]
        for w in range(n_windows):
            acc[w] += counts[s, w]
        if zone_end[p] == 0:
            continue
        if not may_exceed(acc, zone_cases[p], window_share, total, min_cases, best):
            continue
        for w in range(n_windows):
            c = acc[w]
            if c < min_cases:
                continue
            mu = zone_cases[p] * window_share[w]
            llr = poisson_llr(c, mu, total)
            if llr <= best:
                continue
            if min_monitors > 1 and not _enough_monitors(
                ptr[centre], p, order, case_ptr, case_age, case_monitor, w, min_monitors, seen
            ):
                continue
            best, best_pos, best_w = llr, p, w
    return best, best_pos, best_w


@compiled
def _window_counts(
    loc: Any,
    age: Any,
    monitor: Any,
    n_loc: Any,
    counts: Any,
    case_ptr: Any,
    case_age: Any,
    case_monitor: Any,
) -> Any:
    # counts[s, w]: cases at s in the last w+1 days; the case lists by place serve the monitor rule.
    counts[:, :] = 0.0
    case_ptr[:] = 0
    for t in range(len(loc)):
        counts[loc[t], age[t]] += 1.0
        case_ptr[loc[t] + 1] += 1
    for s in range(n_loc):
        for w in range(1, counts.shape[1]):
            counts[s, w] += counts[s, w - 1]
        case_ptr[s + 1] += case_ptr[s]
    for t in range(len(loc)):
        # Fill each place's slot from its back, moving its end offset down to its start ...
        s = loc[t]
        case_ptr[s + 1] -= 1
        case_age[case_ptr[s + 1]] = age[t]
        case_monitor[case_ptr[s + 1]] = monitor[t]
    # ... so case_ptr[s + 1] now holds the start of place s: shift left to get CSR offsets.
    for s in range(n_loc):
        case_ptr[s] = case_ptr[s + 1]
    case_ptr[n_loc] = len(loc)


@compiled
def _observed_best(
    ptr: Any,
    order: Any,
    zone_end: Any,
    zone_cases: Any,
    counts: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    min_monitors: Any,
    case_ptr: Any,
    case_age: Any,
    case_monitor: Any,
) -> Any:
    n_loc = len(ptr) - 1
    llr = np.zeros(n_loc)
    pos = np.full(n_loc, -1, dtype=np.int64)
    win = np.full(n_loc, -1, dtype=np.int64)
    acc = np.zeros(counts.shape[1])
    seen = np.zeros(max(min_monitors, 1), dtype=np.int64)
    for i in range(n_loc):
        llr[i], pos[i], win[i] = _centre_best(
            i, ptr, order, zone_end, zone_cases, counts, window_share, total,
            min_cases, min_monitors, case_ptr, case_age, case_monitor, 0.0, acc, seen,
        )  # fmt: skip
    return llr, pos, win


@compiled_parallel
def _replica_maxima(
    seeds: Any,
    case_loc: Any,
    case_monitor: Any,
    tail_age: Any,
    n_loc: Any,
    n_windows: Any,
    ptr: Any,
    order: Any,
    zone_end: Any,
    zone_cases: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    min_monitors: Any,
    n_chunks: Any,
) -> Any:
    n_rep = len(seeds)
    tail = len(tail_age)
    out = np.zeros(n_rep)
    chunks = min(n_chunks, n_rep)
    # Chunks own their buffers; replica r depends only on seeds[r] (the pool is restored).
    for k in numba.prange(chunks):
        pool = np.arange(len(case_loc))
        swaps = np.empty(tail, dtype=np.int64)
        loc = np.empty(tail, dtype=np.int64)
        mon = np.empty(tail, dtype=np.int64)
        counts = np.zeros((n_loc, n_windows))
        case_ptr = np.zeros(n_loc + 1, dtype=np.int64)
        case_age = np.empty(tail, dtype=np.int64)
        case_mon = np.empty(tail, dtype=np.int64)
        acc = np.zeros(n_windows)
        seen = np.zeros(max(min_monitors, 1), dtype=np.int64)
        state = np.zeros(1, dtype=np.uint64)
        for r in range(k, n_rep, chunks):
            state[0] = seeds[r]
            draw_tail_sample(pool, tail, state, swaps)
            for t in range(tail):
                loc[t] = case_loc[pool[t]]
                mon[t] = case_monitor[pool[t]]
            restore_pool(pool, tail, swaps)
            _window_counts(loc, tail_age, mon, n_loc, counts, case_ptr, case_age, case_mon)
            best = 0.0
            for i in range(n_loc):
                b, _, _ = _centre_best(
                    i, ptr, order, zone_end, zone_cases, counts, window_share, total,
                    min_cases, min_monitors, case_ptr, case_age, case_mon, best, acc, seen,
                )  # fmt: skip
                best = max(best, b)
            out[r] = best
    return out


def scan_space_time(
    locations: NDArray[np.float64], cases: CaseCounts, params: SpaceTimeParams
) -> ScanResult:
    """Scan ``cases`` over ``locations`` (an (n, 2) array of latitude, longitude in degrees);
    the analysis day is the last day of the study period."""
    points = np.asarray(locations, dtype=np.float64).reshape(-1, 2)
    n_loc, n_win = len(points), params.max_window_days
    data = individual_cases(cases, n_loc, params.study_days)
    zones = build_zones(
        points,
        data.unit_totals,
        params.max_radius_km,
        params.max_case_fraction,
        params.max_neighbours,
    )
    # Cases in the last w+1 days, for w = 0..W-1: invariant under the date shuffle.
    window_cases = np.cumsum(data.day_totals[::-1][:n_win])
    window_share = window_cases / max(data.total, 1.0)
    if data.total == 0:
        return _result(params, data, zones, (), 0, stopped_early=False)
    in_tail = data.age < n_win
    tail_loc, tail_age, tail_mon = data.unit[in_tail], data.age[in_tail], data.monitor[in_tail]
    counts = np.zeros((n_loc, n_win))
    case_ptr = np.zeros(n_loc + 1, dtype=np.int64)
    case_age = np.empty(len(tail_age), dtype=np.int64)
    case_mon = np.empty(len(tail_age), dtype=np.int64)
    _window_counts(tail_loc, tail_age, tail_mon, n_loc, counts, case_ptr, case_age, case_mon)
    kernel_args = (zones.ptr, zones.order)
    llr, pos, win = _observed_best(
        *kernel_args, zones.zone_end, zones.zone_cases, counts, window_share, data.total,
        params.min_cases, params.min_monitors, case_ptr, case_age, case_mon,
    )  # fmt: skip
    ranked = _rank_centres(llr, pos, zones)
    if not ranked:
        return _result(params, data, zones, (), 0, stopped_early=False)
    tail_order = np.sort(tail_age)
    chunks = 4 * numba.get_num_threads()

    def batch(seeds: NDArray[np.uint64]) -> NDArray[np.float64]:
        return _replica_maxima(  # type: ignore[no-any-return]
            seeds, data.unit, data.monitor, tail_order, n_loc, n_win, *kernel_args,
            zones.unique_end, zones.zone_cases, window_share, data.total,
            params.min_cases, params.min_monitors, chunks,
        )  # fmt: skip

    run = None
    if params.replicas > 0:
        run = run_monte_carlo(
            batch, float(llr[ranked[0]]), params.replicas, params.sequential_stop, params.seed,
            batch_size=max(64, 4 * chunks),
        )  # fmt: skip
    clusters = []
    taken = np.zeros(n_loc, dtype=bool)
    for centre in ranked:
        members = zones.members(centre, int(pos[centre]))
        if taken[members].any():
            continue
        taken[members] = True
        w = int(win[centre])
        observed = int(counts[members, w].sum())
        expected = float(data.unit_totals[members].sum() * window_cases[w] / data.total)
        p = None if run is None else p_value(float(llr[centre]), run)
        clusters.append(
            SpaceTimeCluster(
                centre=int(centre),
                locations=tuple(int(m) for m in members),
                radius_km=float(zones.distance_km[pos[centre]]),
                start_day=params.study_days - 1 - w,
                end_day=params.study_days - 1,
                observed=observed,
                expected=expected,
                ratio=observed / expected,
                llr=float(llr[centre]),
                monitors=_distinct_monitors(cases, members, params.study_days - 1 - w),
                p_value=p,
                recurrence_interval_days=None if p is None else 1.0 / p,
            )
        )
    replicas = 0 if run is None else run.replicas
    stopped = False if run is None else run.stopped_early
    return _result(params, data, zones, tuple(clusters), replicas, stopped_early=stopped)


def _rank_centres(
    llr: NDArray[np.float64], pos: NDArray[np.int64], zones: CandidateZones
) -> list[int]:
    # SaTScan's order: LLR descending; equal LLRs rank the zone with fewer places first, then
    # the lower centre index.
    sizes = pos - zones.ptr[:-1] + 1

    def compare(a: int, b: int) -> int:
        if abs(llr[a] - llr[b]) >= LLR_TOLERANCE:
            return -1 if llr[a] > llr[b] else 1
        if sizes[a] != sizes[b]:
            return -1 if sizes[a] < sizes[b] else 1
        return a - b

    found = [int(i) for i in np.nonzero((pos >= 0) & (llr > 0))[0]]
    return sorted(found, key=functools.cmp_to_key(compare))


def _distinct_monitors(cases: CaseCounts, members: NDArray[np.int64], first_day: int) -> int:
    if cases.monitor is None:
        return 0
    rows = np.isin(cases.unit, members) & (cases.day >= first_day) & (cases.count > 0)
    return len(np.unique(cases.monitor[rows]))


def _result(
    params: SpaceTimeParams,
    data: IndividualCases,
    zones: CandidateZones,
    clusters: tuple[SpaceTimeCluster, ...],
    replicas: int,
    *,
    stopped_early: bool,
) -> ScanResult:
    return ScanResult(
        method=METHOD,
        params=params,
        total_cases=int(data.total),
        zones=zones.zone_count,
        replicas_run=replicas,
        stopped_early=stopped_early,
        clusters=clusters,
    )
