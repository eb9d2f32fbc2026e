"""Speed benchmark of the matching engine: clustering 100,000 incident reports from scratch, and
matching one new report (or worker) against an index of 1,000,000.

Run: .venv/bin/python -m bench.matching_speed [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence

from bench.matching_data import incident_dataset, person_dataset
from bench.matching_quality import write_section
from cases.matching import Matcher, incident_job, person_job

__all__ = ["main"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _incremental_ms(
    matcher: Matcher[object, object], index: object, queries: Sequence[object]
) -> list[float]:
    timings = []
    for record in queries:
        started = time.perf_counter()
        matcher.match_one(record, index)  # type: ignore[arg-type]
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10x smaller (smoke run)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    scratch_size = 10_000 if args.quick else 100_000
    index_size = 100_000 if args.quick else 1_000_000
    lines: list[str] = []

    train, _ = incident_dataset(seed=41, incidents=3000)
    incidents = Matcher(incident_job()).fit(train, seed=1)

    # From scratch: block, score and cluster a whole batch.
    batch, _ = incident_dataset(seed=42, incidents=int(scratch_size / 1.4))
    batch = batch[:scratch_size]
    runs = []
    clusters: list[tuple[str, ...]] = []
    for _ in range(args.runs):
        started = time.perf_counter()
        clusters = incidents.cluster(batch)
        runs.append(time.perf_counter() - started)
    print(f"scratch {len(batch)} reports: {runs} s, {len(clusters)} clusters", flush=True)
    lines.append(
        f"| incident dedup from scratch | {len(batch):,} reports | median {statistics.median(runs):.1f} s "
        f"(runs: {', '.join(f'{r:.1f}' for r in runs)}) | < 60 s |"
    )

    # Incremental: one new report against a large index.
    existing, _ = incident_dataset(seed=43, incidents=int(index_size / 1.4) + 2000)
    queries, existing = existing[:300], existing[300 : 300 + index_size]
    started = time.perf_counter()
    index = incidents.build_index(existing)
    build = time.perf_counter() - started
    medians = []
    p95s = []
    for _ in range(args.runs):
        timings = sorted(_incremental_ms(incidents, index, queries))  # type: ignore[arg-type]
        medians.append(statistics.median(timings))
        p95s.append(timings[int(len(timings) * 0.95)])
    print(f"incident incremental vs {len(existing)}: medians {medians} ms, p95 {p95s}", flush=True)
    lines.append(
        f"| incident match_one vs index | {len(existing):,} reports | median {statistics.median(medians):.2f} ms, "
        f"p95 {statistics.median(p95s):.2f} ms (index built in {build:.0f} s) | < 20 ms |"
    )
    del index, existing

    people, _ = person_dataset(seed=44, workers=int(index_size / 1.6))
    person_train, _ = person_dataset(seed=45, workers=3000)
    persons = Matcher(person_job()).fit(person_train, seed=1)
    queries_p, people = people[:300], people[300 : 300 + index_size]
    started = time.perf_counter()
    person_index = persons.build_index(people)
    build = time.perf_counter() - started
    medians, p95s = [], []
    for _ in range(args.runs):
        timings = sorted(_incremental_ms(persons, person_index, queries_p))  # type: ignore[arg-type]
        medians.append(statistics.median(timings))
        p95s.append(timings[int(len(timings) * 0.95)])
    print(f"person incremental vs {len(people)}: medians {medians} ms, p95 {p95s}", flush=True)
    lines.append(
        f"| person match_one vs index | {len(people):,} workers' records | median "
        f"{statistics.median(medians):.2f} ms, p95 {statistics.median(p95s):.2f} ms "
        f"(index built in {build:.0f} s) | < 20 ms |"
    )

    command = "python -m bench.matching_speed" + (" --quick" if args.quick else "")
    body = f"""## Speed

Command: `{command}` ({args.runs} runs, medians), machine: {_cpu()}, {os.cpu_count()} CPUs,
Python {sys.version.split()[0]}, single process. Peak memory (ru_maxrss) of the whole run:
{_peak_rss_mb():,.0f} MB. Incremental timings cover prepare + candidate lookup + scoring of one
new record (no queueing); the index is in memory.

| measure | size | result | target |
|---|---|---|---|
{chr(10).join(lines)}
"""
    print(body)
    if not args.no_write:
        write_section("speed", body)


if __name__ == "__main__":
    main()
