"""Speed of the space-time permutation scan and the entity surge scan at production sizes, and
the cost of a whole run (every scope and role) with the run-level p-value, whose scans run more
replicas (``cases.risk.family``), against the old rule of 999 replicas per scan.

Run with ``.venv/bin/python -m bench.risk_scan`` (``--quick`` for one run each); prints the
figures and rewrites its section of ``bench/results/risk.md`` (medians over the runs, peak
memory)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import numba
import numpy as np

from bench.risk_validity import FIRST_DAY, RunWorld
from cases.risk import (
    CaseCounts,
    ScanResult,
    SpaceTimeParams,
    SurgeParams,
    scan_entity_surge,
    scan_space_time,
)
from cases.taxonomy import load_taxonomy
from storage.risk import ScanParams
from storage.risk_scan import ScanData, run_scans

T = TypeVar("T")

RESULTS = Path(__file__).parent / "results" / "risk.md"


def city(n_locations: int, rng: np.random.Generator) -> np.ndarray:
    # A 60 x 60 km square near Bangkok: with 2,000 points a 5.4 km circle holds ~48 of them.
    return np.column_stack(
        (13.5 + rng.uniform(0, 0.54, n_locations), 100.3 + rng.uniform(0, 0.555, n_locations))
    )


def timed(run: Callable[[], T], repeats: int) -> tuple[float, T]:
    start = time.perf_counter()
    out = run()
    times = [time.perf_counter() - start]
    for _ in range(repeats - 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _per_scan_replicas(replicas: int, scans: int, threshold: float) -> int:
    return replicas


def run_cost(repeats: int) -> list[str]:
    """A whole run on 100,000 reports (365 days, 2,000 places of the city, categories and entity
    links as in ``bench.risk_validity``'s run scenarios), without and with a 12-report cluster
    in one place over the last 3 days: the shipped run-level rule against the old one."""
    rng = np.random.default_rng(5)
    world = RunWorld(rng)
    world.places = city(2000, rng)
    n = 100_000
    reports, links = world.reports(rng, rng.integers(0, 2000, n), rng.integers(0, 365, n))
    extra, extra_links = world.reports(
        rng, np.full(12, 7), 362 + np.arange(12) % 3, "FL.DOC_RETENTION"
    )
    last = FIRST_DAY + dt.timedelta(days=364)
    params = ScanParams(study_days=365, analysis_date=last, replicas=999, seed=1)
    taxonomy = load_taxonomy()
    rows = []
    for name, rs, ls in (
        ("no cluster", reports, links),
        ("one 12-report cluster", reports + extra, links | extra_links),
    ):
        data = ScanData(
            reports=rs, links=ls, entities=world.entities, study_start=FIRST_DAY,
            analysis_date=last,
        )  # fmt: skip
        seconds = {}
        replicas = {}
        for rule in ("old", "run-level"):

            def run(rule: str = rule, data: ScanData = data) -> Any:
                if rule == "run-level":
                    return run_scans(data, params, taxonomy, 100.0)
                # The old rule: every scan runs the requested replicas, whatever the run's size.
                with mock.patch("storage.risk_scan.family_replicas", _per_scan_replicas):
                    return run_scans(data, params, taxonomy, 100.0)

            seconds[rule], (results, _) = timed(run, repeats)
            replicas[rule] = sum(r["replicas_run"] for r in results)
        rows.append(
            f"| whole run (12 scans), 100,000 reports, {name}, 999 replicas a scan "
            f"| {seconds['old']:.2f} s ({replicas['old']:,} replicas) "
            f"| {seconds['run-level']:.2f} s ({replicas['run-level']:,} replicas) "
            f"| {seconds['run-level'] / seconds['old']:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one run per scenario")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    rng = np.random.default_rng(2024)
    places = city(2000, rng)
    rows = []
    # Warm up the compiler once, outside the timings.
    warm = CaseCounts.of(rng.integers(0, 2000, 1000), rng.integers(0, 365, 1000))
    scan_space_time(places, warm, SpaceTimeParams(study_days=365, max_window_days=28, replicas=9))
    scan_entity_surge(
        [-1, 0],
        CaseCounts.of([1, 1], [0, 1]),
        SurgeParams(study_days=2, max_window_days=1, replicas=9),
    )
    for n_cases in (100_000, 1_000_000):
        cases = CaseCounts.of(rng.integers(0, 2000, n_cases), rng.integers(0, 365, n_cases))
        params = SpaceTimeParams(
            study_days=365, max_window_days=28, max_radius_km=5.4, replicas=999, sequential_stop=0
        )

        def space_time(c: CaseCounts = cases, p: SpaceTimeParams = params) -> ScanResult:
            return scan_space_time(places, c, p)

        seconds, result = timed(space_time, repeats)
        zones = result.zones
        rows.append(
            f"| space-time, {n_cases:,} cases, 365 d, 2,000 places, {zones / 2000:.0f} places/circle, "
            f"W=28, 999 replicas (no early stop) | {seconds:.2f} s |"
        )
        print(rows[-1], flush=True)
    n_entities = 10_000
    parent = np.where(np.arange(n_entities) < 500, -1, rng.integers(0, 500, n_entities))
    cases = CaseCounts.of(rng.integers(0, n_entities, 100_000), rng.integers(0, 365, 100_000))
    surge_params = SurgeParams(study_days=365, max_window_days=28, replicas=999, sequential_stop=0)
    seconds, _ = timed(lambda: scan_entity_surge(parent, cases, surge_params), repeats)
    rows.append(
        f"| entity surge, 10,000 entities (500 groups), 100,000 cases, W=28, 999 replicas | {seconds:.2f} s |"
    )
    print(rows[-1], flush=True)
    run_rows = run_cost(repeats)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        "# Risk scans: speed",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}, "
        f"Python {sys.version.split()[0]}, numpy {np.__version__}, numba {numba.__version__}.",
        f"Command: `.venv/bin/python -m bench.risk_scan{' --quick' if args.quick else ''}`; "
        f"median of {repeats} run(s), compile time excluded.",
        "",
        "| scenario | time |",
        "|---|---|",
        *rows,
        "",
        "Cost of a whole run with the run-level p-value (each scan of a run of S scans runs "
        "up to S x 1,000 - 1 replicas, stopping early as before) against the old rule (999 "
        "replicas a scan); product default settings (H3 resolution 7, K = 10 within 30 km, "
        "windows up to 7 days), Python work on the reports included:",
        "",
        "| run | old rule | run-level rule | ratio |",
        "|---|---|---|---|",
        *run_rows,
        "",
        f"Peak resident memory of the whole benchmark process: {peak_mb:.0f} MB.",
        "SaTScan on the 100,000-case scenario: 14.6-17.6 s (figure from the brief).",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    # Keep the statistical validity section that bench.risk_validity appends.
    existing = RESULTS.read_text() if RESULTS.exists() else ""
    marker = "\n# Risk scans: statistical validity"
    kept = marker + existing.split(marker, 1)[1] if marker in existing else ""
    RESULTS.write_text("\n".join(lines).rstrip("\n") + "\n" + kept)
    print(f"peak memory {peak_mb:.0f} MB; written {RESULTS}")


if __name__ == "__main__":
    main()
