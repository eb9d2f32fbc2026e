"""Statistical validity of the risk scans: size under the null (share of runs with p <= 0.05
must sit in the binomial interval around 5%) and power / detection delay for injected clusters.

Run with ``.venv/bin/python -m bench.risk_validity --replicas 999`` (``--quick`` for a smoke
run; without ``--replicas`` it uses 99, the fewest that can reach p = 0.01, i.e. a recurrence
interval of 100 days). Rewrites its section of ``bench/results/risk.md``.

The scans use the product's default analysis settings (``storage.risk.ScanParams``), for the
null runs and the injections alike: windows up to 7 days, at least 3 reports per cluster, and
circles of at most the 10 nearest places within 30 km. The minimum of 2 distinct monitors is
not modelled (the synthetic reports carry no monitor)."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import stats

from cases.risk import (
    CaseCounts,
    SpaceTimeParams,
    SurgeParams,
    scan_entity_surge,
    scan_space_time,
)

RESULTS = Path(__file__).parent / "results" / "risk.md"
DAYS, REPLICAS, PER_DAY = 120, 99, 25
# The product defaults (storage.risk.ScanParams); the figures before they were adopted, with
# windows up to 14 days, 2 reports and 10 km circles without K, are kept in the results file.
WINDOW, MIN_CASES, K_NEAREST, RADIUS_KM = 7, 3, 10, 30.0
TARGET_POWER = 0.8
BEFORE = (
    "Before (same data and injections, `--replicas 999`, 527 s): windows up to 14 days, at "
    "least 2 reports, circles up to 10 km with no K, analysis days counted from the start of "
    "the injection period: size 0.055 space-time, 0.050 surge; power 0.68 dense (median delay "
    "2 days), 0.79 sparse (2), 0.99 entity surge (2)."
)


def geography(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # 200 places in a 20 km town (dense) and 100 spread over 200 km (sparse), with weights
    # that make the town report most cases.
    town = np.column_stack((13.7 + rng.uniform(0, 0.18, 200), 100.5 + rng.uniform(0, 0.18, 200)))
    rural = np.column_stack((13.0 + rng.uniform(0, 1.8, 100), 99.5 + rng.uniform(0, 1.8, 100)))
    weight = np.concatenate((rng.gamma(2.0, 1.0, 200), rng.gamma(2.0, 0.3, 100)))
    return np.vstack((town, rural)), weight / weight.sum()


def background(rng: np.random.Generator, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = rng.poisson(PER_DAY * DAYS)
    return rng.choice(len(weight), n, p=weight), rng.integers(0, DAYS, n)


def params(seed: int) -> SpaceTimeParams:
    return SpaceTimeParams(
        study_days=DAYS,
        max_window_days=WINDOW,
        max_radius_km=RADIUS_KM,
        max_neighbours=K_NEAREST,
        min_cases=MIN_CASES,
        replicas=REPLICAS,
        seed=seed,
    )


def surge_params(seed: int) -> SurgeParams:
    return SurgeParams(
        study_days=DAYS, max_window_days=WINDOW, min_cases=MIN_CASES, replicas=REPLICAS, seed=seed
    )


def null_size(runs: int, rng: np.random.Generator) -> tuple[str, str]:
    places, weight = geography(rng)
    st_p, surge_p = [], []
    parent = np.where(np.arange(400) < 40, -1, rng.integers(0, 40, 400))
    for r in range(runs):
        unit, day = background(rng, weight)
        top = scan_space_time(places, CaseCounts.of(unit, day), params(r)).clusters
        st_p.append(top[0].p_value if top else 1.0)
        entity = rng.integers(0, 400, len(unit))
        surge = scan_entity_surge(
            parent,
            CaseCounts.of(entity, day),
            surge_params(r),
        ).surges
        surge_p.append(surge[0].p_value if surge else 1.0)
    low, high = stats.binom.ppf([0.025, 0.975], runs, 0.05) / runs

    def line(name: str, p: list[float | None]) -> str:
        share = float(np.mean([x is not None and x <= 0.05 for x in p]))
        verdict = "ok" if low <= share <= high else "OUT OF INTERVAL"
        return f"| {name} | {runs} | {share:.3f} | [{low:.3f}, {high:.3f}] | {verdict} |"

    return line("space-time", st_p), line("entity surge", surge_p)


def detection(runs: int, rng: np.random.Generator, area: str) -> tuple[float, float | None, int]:
    places, weight = geography(rng)
    detected, delays = 0, []
    for r in range(runs):
        unit, day = background(rng, weight)
        centre = int(rng.integers(0, 200)) if area == "dense" else int(rng.integers(200, 300))
        distance = np.hypot(*(places - places[centre]).T)
        spots = np.argsort(distance)[: int(rng.integers(1, 4))]
        length = int(rng.integers(3, 8))
        first = DAYS - length
        extra_unit = rng.choice(spots, 8)
        extra_day = first + np.sort(rng.integers(0, length, 8))
        # A daily prospective run: analysis day a sees the reports up to a. Runs before the
        # first extra report could only "detect" background noise, so they are not counted.
        onset = int(extra_day[0])
        for analysis in range(onset, DAYS):
            keep_bg, keep_x = day <= analysis, extra_day <= analysis
            shift = DAYS - 1 - analysis  # the scan's study period ends on the analysis day
            u = np.concatenate((unit[keep_bg], extra_unit[keep_x]))
            d = np.concatenate((day[keep_bg], extra_day[keep_x])) + shift
            keep = d < DAYS
            cases = CaseCounts.of(u[keep], d[keep])
            clusters = scan_space_time(places, cases, params(r * 100 + analysis)).clusters
            hit = any(
                c.recurrence_interval_days is not None
                and c.recurrence_interval_days >= 100
                and set(c.locations) & set(spots.tolist())
                for c in clusters
            )
            if hit:
                detected += 1
                delays.append(analysis - onset)
                break
    median = statistics.median(delays) if delays else None
    return detected / runs, median, runs


def surge_detection(runs: int, rng: np.random.Generator) -> tuple[float, float | None, int]:
    parent = np.where(np.arange(400) < 40, -1, rng.integers(0, 40, 400))
    detected, delays = 0, []
    for r in range(runs):
        n = rng.poisson(PER_DAY * DAYS)
        unit, day = rng.integers(0, 400, n), rng.integers(0, DAYS, n)
        target = int(rng.integers(40, 400))
        length = int(rng.integers(3, 8))
        first = DAYS - length
        extra_day = first + np.sort(rng.integers(0, length, 8))
        onset = int(extra_day[0])
        for analysis in range(onset, DAYS):
            keep_bg, keep_x = day <= analysis, extra_day <= analysis
            shift = DAYS - 1 - analysis
            u = np.concatenate((unit[keep_bg], np.full(int(keep_x.sum()), target)))
            d = np.concatenate((day[keep_bg], extra_day[keep_x])) + shift
            keep = d < DAYS
            surges = scan_entity_surge(
                parent,
                CaseCounts.of(u[keep], d[keep]),
                surge_params(r),
            ).surges
            hit = any(
                s.recurrence_interval_days is not None
                and s.recurrence_interval_days >= 100
                and s.node in (target, int(parent[target]))
                for s in surges
            )
            if hit:
                detected += 1
                delays.append(analysis - onset)
                break
    median = statistics.median(delays) if delays else None
    return detected / runs, median, runs


def main(argv: list[str] | None = None) -> None:
    global REPLICAS  # one knob, read by the scenario functions above
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20 runs per scenario")
    parser.add_argument(
        "--replicas", type=int, default=REPLICAS, help="Monte Carlo replicas per scan"
    )
    args = parser.parse_args(argv)
    REPLICAS = args.replicas
    runs = 20 if args.quick else 200
    rng = np.random.default_rng(7)
    start = time.perf_counter()
    size_rows = null_size(runs, rng)
    power_rows, missed = [], []
    for area in ("dense", "sparse"):
        power, delay, n = detection(runs, rng, area)
        shown = "-" if delay is None else f"{delay:.0f}"
        verdict = "met" if power >= TARGET_POWER else f"NOT MET (target {TARGET_POWER})"
        if power < TARGET_POWER:
            missed.append(f"space-time, {area} area ({power:.2f})")
        power_rows.append(f"| space-time, {area} area | {n} | {power:.2f} | {shown} | {verdict} |")
        print(power_rows[-1], flush=True)
    power, delay, n = surge_detection(runs, rng)
    shown = "-" if delay is None else f"{delay:.0f}"
    verdict = "met" if power >= TARGET_POWER else f"NOT MET (target {TARGET_POWER})"
    power_rows.append(
        f"| entity surge, one agency of 400 | {n} | {power:.2f} | {shown} | {verdict} |"
    )
    print(power_rows[-1], flush=True)
    elapsed = time.perf_counter() - start
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "",
        "# Risk scans: statistical validity",
        "",
        f"Command: `.venv/bin/python -m bench.risk_validity{' --quick' if args.quick else ''}"
        f" --replicas {REPLICAS}` "
        f"({elapsed:.0f} s). {REPLICAS} replicas per scan, sequential stop after 50 exceedances; "
        f"{DAYS} days, about {PER_DAY} reports a day over 300 places (200 in a 20 km town, "
        f"100 over 200 km). Product default settings: windows up to {WINDOW} days, at least "
        f"{MIN_CASES} reports per cluster, circles of at most the {K_NEAREST} nearest places within "
        f"{RADIUS_KM:.0f} km. Load average at the end: {load}.",
        "",
        "Size under the null (share of runs with p <= 0.05, 95% binomial interval):",
        "",
        "| scan | runs | share p <= 0.05 | interval | verdict |",
        "|---|---|---|---|---|",
        *size_rows,
        "",
        "Injected clusters: 8 extra reports over 3-7 days ending on the last day, in 1-3 "
        "neighbouring places; detected when a reported cluster touching them has a recurrence "
        "interval >= 100 days in the daily prospective run; delay in days from the first extra "
        "report:",
        "",
        "| scenario | injections | power | median delay (days) | target power >= 0.8 |",
        "|---|---|---|---|---|",
        *power_rows,
        "",
        BEFORE,
        "",
        *(
            [
                f"Target not met: {', '.join(missed)}. The diagnosis (no touching cluster is lost "
                "by the scan or its reporting; the missed injections never reach the critical LLR "
                "of the RI-100 test, which no circle or window setting lowers enough) is in "
                "docs/decisions/0101-space-time-scan.md, 'Power study'.",
                "",
            ]
            if missed
            else []
        ),
    ]
    print("\n".join(lines))
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    marker = "\n# Risk scans: statistical validity"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(existing.split(marker)[0].rstrip("\n") + "\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
