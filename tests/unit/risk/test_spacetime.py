"""Space-time permutation scan: hand-computed statistics, candidate zones, the NYCfever
regression against SaTScan v10.3.2, and the behaviour of the Monte Carlo p-values."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest

from cases.risk import CaseCounts, SpaceTimeParams, scan_space_time
from cases.risk.permutation import poisson_llr
from cases.risk.zones import build_zones

NYCFEVER = Path(__file__).parents[2] / "data" / "nycfever"


def test_llr_matches_the_formula_by_hand() -> None:
    # c=4, mu=1, C=10: 4 ln 4 + 6 ln(6/9) = 5.545177 - 2.432790 = 3.112387
    assert poisson_llr(4.0, 1.0, 10.0) == pytest.approx(3.112387, abs=1e-6)
    assert poisson_llr(1.0, 1.0, 10.0) == 0.0  # no excess, no statistic (high rates only)
    assert poisson_llr(0.5, 1.0, 10.0) == 0.0
    # Every case in the zone: the second term vanishes, 10 ln(10/4) = 9.162907
    assert poisson_llr(10.0, 4.0, 10.0) == pytest.approx(9.162907, abs=1e-6)


def _three_places() -> tuple[np.ndarray, CaseCounts]:
    # Places one degree apart, so with a 0 km radius every zone is a single place.
    places = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    # (place, day, count); totals: places 4, 3, 2; days 3, 2, 4; C = 9
    rows = [(0, 0, 1), (0, 2, 3), (1, 0, 2), (1, 1, 1), (2, 1, 1), (2, 2, 1)]
    unit, day, count = zip(*rows, strict=True)
    return places, CaseCounts.of(unit, day, count)


def test_expected_counts_and_llr_by_hand() -> None:
    places, cases = _three_places()
    params = SpaceTimeParams(study_days=3, max_window_days=2, max_radius_km=0.0, replicas=0)
    result = scan_space_time(places, cases, params)
    assert [c.centre for c in result.clusters] == [0, 2]
    first, second = result.clusters
    # Place 0, last day: observed 3, expected C_0 * C_day2 / C = 4 * 4 / 9 = 1.777778,
    # LLR = 3 ln(3 / 1.777778) + 6 ln(6 / 7.222222) = 1.569744 - 1.112419 = 0.457325
    # (the two-day window has 3 vs 4 * 6 / 9 = 2.666667 and a smaller LLR, 0.028946).
    assert (first.start_day, first.end_day, first.observed) == (2, 2, 3)
    assert first.expected == pytest.approx(16 / 9)
    assert first.llr == pytest.approx(3 * math.log(3 / (16 / 9)) + 6 * math.log(6 / (9 - 16 / 9)))
    assert first.llr == pytest.approx(0.457325, abs=1e-6)
    # Place 2 needs two days to reach the minimum of 2 cases: expected 2 * 6 / 9 = 1.333333,
    # LLR = 2 ln 1.5 + 7 ln(7 / 7.666667) = 0.810930 - 0.636802 = 0.174128.
    assert (second.start_day, second.observed) == (1, 2)
    assert second.expected == pytest.approx(4 / 3)
    assert second.llr == pytest.approx(0.174128, abs=1e-6)
    assert first.p_value is None
    assert first.recurrence_interval_days is None


def test_min_cases_one_admits_single_case_clusters() -> None:
    places, cases = _three_places()
    params = SpaceTimeParams(
        study_days=3, max_window_days=2, max_radius_km=0.0, min_cases=1, replicas=0
    )
    result = scan_space_time(places, cases, params)
    place2 = next(c for c in result.clusters if c.centre == 2)
    # 1-day window for place 2 now allowed: 1 ln(1 / 0.888889) + 8 ln(8 / 8.111111) = 0.007436,
    # still below the 2-day window's 0.174128, so the best window is unchanged.
    assert place2.llr == pytest.approx(0.174128, abs=1e-6)


def test_zones_group_ties_and_respect_radius_and_case_cap() -> None:
    # A centre with two neighbours at exactly the same distance, and one far away.
    places = np.array([[0.0, 0.0], [0.0, 0.01], [0.0, -0.01], [0.0, 0.5]])
    cases = np.array([1.0, 1.0, 1.0, 5.0])
    zones = build_zones(places, cases, max_radius_km=10.0, max_case_fraction=0.5)
    centre = slice(int(zones.ptr[0]), int(zones.ptr[1]))
    assert sorted(zones.order[centre].tolist()) == [0, 1, 2]  # place 3 is 55 km away
    # Zones {0} and {0, 1, 2}; never {0, 1} without its tied twin.
    assert zones.zone_end[centre].tolist() == [1, 0, 1]
    # Place 3 alone holds 5 of 8 cases, over the 50% cap: it has no zone at all.
    assert zones.ptr[4] == zones.ptr[3]
    # With a 1 km radius nothing but each place itself fits (neighbours are 1.11 km apart).
    tight = build_zones(places, cases, max_radius_km=1.0, max_case_fraction=0.5)
    assert tight.zone_count == 3  # three single places within the radius and the cap


def test_duplicate_member_sets_are_evaluated_once_in_replicas() -> None:
    places = np.array([[0.0, 0.0], [0.0, 0.01]])
    zones = build_zones(places, np.array([1.0, 1.0]), 5.0, 0.5)
    assert zones.zone_count == 2  # each place alone; the pair would hold 100% of cases
    loose = build_zones(np.array([[0.0, 0.0], [0.0, 0.01], [1.0, 0.0]]), np.ones(3), 5.0, 0.5)
    # {0, 1} would hold 2 of 3 cases, over 50%: only {0}, {1}, {2}.
    assert loose.zone_count == 3
    both = build_zones(
        np.array([[0.0, 0.0], [0.0, 0.01], [1.0, 0.0], [2.0, 0.0]]), np.ones(4), 5.0, 0.5
    )
    # {0}, {0, 1}, {1}, {1, 0}, {2}, {3}: the pair appears twice and is kept once for replicas.
    assert both.zone_count == 6
    assert both.unique_zone_count == 5


def _nycfever() -> tuple[list[str], np.ndarray, CaseCounts]:
    locations = [line.split() for line in (NYCFEVER / "locations.tsv").read_text().splitlines()]
    ids = [row[0] for row in locations]
    index = {zip_code: i for i, zip_code in enumerate(ids)}
    points = np.array([[float(row[1]), float(row[2])] for row in locations])
    start = dt.date(2001, 11, 1)
    unit, day, count = [], [], []
    for line in (NYCFEVER / "cases.tsv").read_text().splitlines():
        zip_code, n, date = line.split()
        y, m, d = (int(part) for part in date.split("/"))
        unit.append(index[zip_code])
        day.append((dt.date(y, m, d) - start).days)
        count.append(int(n))
    return ids, points, CaseCounts.of(unit, day, count)


def test_nycfever_matches_satscan() -> None:
    ids, points, cases = _nycfever()
    params = SpaceTimeParams(
        study_days=24, max_window_days=7, max_radius_km=3.0, max_case_fraction=0.5,
        min_cases=2, replicas=999, sequential_stop=0, seed=20011124,
    )  # fmt: skip
    result = scan_space_time(points, cases, params)
    assert result.total_cases == 194
    top = result.clusters[:3]
    assert [ids[c.centre] for c in top] == ["11418", "11372", "10472"]
    assert [ids[m] for m in top[0].locations] == [
        "11418", "11415", "11419", "11435", "11416", "11421", "11451", "11375", "11417",
    ]  # fmt: skip
    assert [ids[m] for m in top[1].locations] == ["11372"]
    assert [ids[m] for m in top[2].locations] == ["10472"]
    assert round(top[0].radius_km, 2) == 2.90
    # Windows 11/22-11/24, 11/24-11/24, 11/23-11/24 (day 0 is 11/1).
    assert [(c.start_day, c.end_day) for c in top] == [(21, 23), (23, 23), (22, 23)]
    assert [c.observed for c in top] == [4, 2, 2]
    assert [round(c.expected, 2) for c in top] == [0.67, 0.16, 0.29]
    assert [round(c.llr, 6) for c in top] == [3.845418, 3.164201, 2.137259]
    # SaTScan printed p = 0.242, 0.575, 0.966 from a sequential run stopped after 207
    # replicas; 9,999 of our replicas put the first at about 0.205, so allow Monte Carlo error.
    p1, p2, p3 = (c.p_value for c in top)
    assert p1 is not None and 0.15 <= p1 <= 0.35
    assert p2 is not None and 0.38 <= p2 <= 0.70
    assert p3 is not None and p3 >= 0.90
    assert top[0].recurrence_interval_days == pytest.approx(1 / p1)
    assert result.replicas_run == 999 and not result.stopped_early


def test_nycfever_sequential_stop_follows_besag_clifford() -> None:
    _, points, cases = _nycfever()
    params = SpaceTimeParams(
        study_days=24, max_window_days=7, max_radius_km=3.0, replicas=999, sequential_stop=50
    )
    result = scan_space_time(points, cases, params)
    assert result.stopped_early
    # Stopped at the replica that brought the 50th exceedance: p = 50 / n exactly.
    assert result.clusters[0].p_value == pytest.approx(50 / result.replicas_run)


def test_same_seed_same_result_other_seed_other_replicas() -> None:
    _, points, cases = _nycfever()
    params = SpaceTimeParams(
        study_days=24, max_window_days=7, max_radius_km=3.0, replicas=199, sequential_stop=0
    )
    first = scan_space_time(points, cases, params)
    assert msgspec.json.encode(first) == msgspec.json.encode(scan_space_time(points, cases, params))
    other = scan_space_time(points, cases, msgspec.structs.replace(params, seed=7))
    assert [c.p_value for c in other.clusters] != [c.p_value for c in first.clusters]
    assert [c.llr for c in other.clusters] == [c.llr for c in first.clusters]


def test_min_monitors_drops_a_cluster_reported_by_one_monitor() -> None:
    places = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    rng = np.random.default_rng(3)
    # Background everywhere before the last day (day 19), from monitors 0..9 ...
    unit, day, monitor = rng.integers(0, 4, 80), rng.integers(0, 19, 80), rng.integers(0, 10, 80)
    # ... and a burst of 6 at place 0 on the last day, all from monitor 99.
    cases = CaseCounts.of(
        np.concatenate((unit, [0] * 6)),
        np.concatenate((day, [19] * 6)),
        monitor=np.concatenate((monitor, [99] * 6)),
    )
    base = SpaceTimeParams(study_days=20, max_window_days=1, max_radius_km=0.0, replicas=0)
    burst = scan_space_time(places, cases, base).clusters[0]
    assert (burst.centre, burst.start_day, burst.observed, burst.monitors) == (0, 19, 6, 1)
    strict = scan_space_time(places, cases, msgspec.structs.replace(base, min_monitors=2))
    assert strict.clusters == ()


def test_null_data_gives_roughly_uniform_p_values() -> None:
    rng = np.random.default_rng(11)
    places = rng.uniform([10.0, 100.0], [10.5, 100.5], size=(30, 2))
    p_values = []
    for _ in range(40):
        n = 300
        cases = CaseCounts.of(rng.integers(0, 30, n), rng.integers(0, 30, n))
        params = SpaceTimeParams(
            study_days=30, max_window_days=5, max_radius_km=15.0,
            replicas=99, sequential_stop=0, seed=int(rng.integers(1 << 30)),
        )  # fmt: skip
        top = scan_space_time(places, cases, params).clusters[0]
        assert top.p_value is not None
        p_values.append(top.p_value)
    p = np.array(p_values)
    # Under the null P(p <= 0.5) is about 0.5; with 40 runs, 9..31 covers it with margin.
    assert 9 <= int((p <= 0.5).sum()) <= 31
    assert int((p <= 0.05).sum()) <= 8


def test_params_validate_on_decode_and_on_construction() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"study_days": 10, "max_case_fraction": 0.9}, SpaceTimeParams)
    with pytest.raises(ValueError, match="max_window_days"):
        SpaceTimeParams(study_days=5, max_window_days=6)
    with pytest.raises(ValueError, match="day index"):
        scan_space_time(
            np.zeros((1, 2)),
            CaseCounts.of([0], [5]),
            SpaceTimeParams(study_days=5, max_window_days=2),
        )


def test_k_nearest_caps_every_circle() -> None:
    from cases.risk.zones import build_zones

    rng = np.random.default_rng(3)
    locations = np.column_stack([rng.uniform(25.0, 25.3, 40), rng.uniform(51.2, 51.5, 40)])
    cases = rng.integers(1, 5, 40).astype(np.float64)
    unlimited = build_zones(locations, cases, 50.0, 0.5)
    capped = build_zones(locations, cases, 50.0, 0.5, max_neighbours=5)
    sizes = np.diff(capped.ptr)
    assert sizes.max() <= 5
    assert sizes.min() >= 1
    assert np.diff(unlimited.ptr).max() > 5  # the cap, not the radius, made the difference
