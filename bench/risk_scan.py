"""Speed of the space-time permutation scan and the entity surge scan at production sizes.

Run with ``.venv/bin/python -m bench.risk_scan`` (``--quick`` for one run each); prints the
figures and writes ``bench/results/risk.md`` (medians over the runs, peak memory)."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numba
import numpy as np

from cases.risk import (
    CaseCounts,
    ScanResult,
    SpaceTimeParams,
    SurgeParams,
    scan_entity_surge,
    scan_space_time,
)

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
        f"Peak resident memory of the whole benchmark process: {peak_mb:.0f} MB.",
        "SaTScan on the 100,000-case scenario: 14.6-17.6 s (figure from the brief).",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"peak memory {peak_mb:.0f} MB; written {RESULTS}")


if __name__ == "__main__":
    main()
