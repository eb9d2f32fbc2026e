"""``fairwatch scan-files``: run the space-time permutation scan on SaTScan-format input files.

Anyone holding a public dataset with known answers (SaTScan's samples, a health department's
published runs) can check Fairwatch's scan core against it without a database: a case file
(``location count date`` per line) and a coordinates file (``location latitude longitude``), the
same layout SaTScan reads, whitespace- or comma-separated. The scan is prospective: windows end on
the last day of the study period. Distances are on the sphere, as SaTScan's latitude/longitude
mode; Cartesian coordinates are not supported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import msgspec
import numpy as np

from cases.risk import CaseCounts, ScanResult, SpaceTimeParams, scan_space_time

__all__ = ["main", "read_cases", "read_coordinates"]

_SPLIT = re.compile(r"[\s,]+")


class InputError(ValueError):
    """A line of an input file that cannot be used; the message names the file and line."""


def _rows(text: str, source: str, width: int) -> list[tuple[int, list[str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = [f for f in _SPLIT.split(line.strip()) if f]
        if not fields or fields[0].startswith(("#", "//")):
            continue
        if len(fields) < width:
            raise InputError(f"{source}:{number}: expected {width} fields, found {len(fields)}")
        rows.append((number, fields))
    return rows


def _date(text: str, where: str) -> dt.date:
    parts = re.split(r"[/-]", text)
    try:
        year, month, day = (int(p) for p in parts)
        return dt.date(year, month, day)
    except ValueError:
        raise InputError(f"{where}: {text!r} is not a date (YYYY/MM/DD)") from None


def read_coordinates(text: str, source: str = "coordinates") -> tuple[list[str], np.ndarray]:
    """Location ids in file order and an (n, 2) array of latitude, longitude in degrees."""
    ids: list[str] = []
    points: list[tuple[float, float]] = []
    seen: set[str] = set()
    for number, fields in _rows(text, source, 3):
        where = f"{source}:{number}"
        try:
            lat, lon = float(fields[1]), float(fields[2])
        except ValueError:
            raise InputError(f"{where}: latitude and longitude must be numbers") from None
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise InputError(f"{where}: ({lat}, {lon}) is not a latitude/longitude")
        if fields[0] in seen:
            raise InputError(f"{where}: location {fields[0]!r} appears twice")
        seen.add(fields[0])
        ids.append(fields[0])
        points.append((lat, lon))
    if not ids:
        raise InputError(f"{source}: no locations")
    return ids, np.array(points, dtype=np.float64)


def read_cases(
    text: str, ids: Sequence[str], start: dt.date, end: dt.date, source: str = "cases"
) -> CaseCounts:
    """Counts per (location, day of the study period); a case outside the period is an error."""
    index = {location: i for i, location in enumerate(ids)}
    unit, day, count = [], [], []
    for number, fields in _rows(text, source, 3):
        where = f"{source}:{number}"
        if fields[0] not in index:
            raise InputError(f"{where}: location {fields[0]!r} is not in the coordinates file")
        try:
            n = int(fields[1])
        except ValueError:
            raise InputError(f"{where}: the count {fields[1]!r} is not a whole number") from None
        if n < 0:
            raise InputError(f"{where}: negative count {n}")
        date = _date(fields[2], where)
        if not start <= date <= end:
            raise InputError(f"{where}: {date} is outside the study period {start} to {end}")
        unit.append(index[fields[0]])
        day.append((date - start).days)
        count.append(n)
    return CaseCounts.of(unit, day, count)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fairwatch scan-files",
        description="Prospective space-time permutation scan of SaTScan-format case and "
        "coordinates files (latitude/longitude).",
    )
    p.add_argument("--cases", type=Path, required=True, help="location count date, per line")
    p.add_argument("--coordinates", type=Path, required=True, help="location lat lon, per line")
    p.add_argument("--start", required=True, help="first day of the study period, YYYY/MM/DD")
    p.add_argument("--end", required=True, help="last day (the analysis day), YYYY/MM/DD")
    p.add_argument("--max-window-days", type=int, default=7)
    p.add_argument("--max-radius-km", type=float, default=10.0)
    p.add_argument("--max-case-fraction", type=float, default=0.5)
    p.add_argument("--max-neighbours", type=int, default=None, help="K nearest locations")
    p.add_argument("--min-cases", type=int, default=2)
    p.add_argument("--replicas", type=int, default=999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-sequential-stop",
        action="store_true",
        help="run every replica (default: stop early once the p-value is clearly large)",
    )
    p.add_argument("--top", type=int, default=10, help="clusters to print (default 10)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _table(result: ScanResult, ids: Sequence[str], start: dt.date, top: int) -> str:
    lines = [
        f"{result.total_cases} cases, {result.zones} zones, {result.replicas_run} replicas"
        + (" (stopped early)" if result.stopped_early else ""),
        "| # | centre | locations | radius km | window | observed | expected | O/E | LLR | p "
        "| RI (days) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rank, c in enumerate(result.clusters[:top], start=1):
        first = start + dt.timedelta(days=c.start_day)
        last = start + dt.timedelta(days=c.end_day)
        p = "-" if c.p_value is None else f"{c.p_value:.3f}"
        ri = "-" if c.recurrence_interval_days is None else f"{c.recurrence_interval_days:.1f}"
        members = ", ".join(ids[m] for m in c.locations)
        lines.append(
            f"| {rank} | {ids[c.centre]} | {members} | {c.radius_km:.2f} | {first}..{last} "
            f"| {c.observed} | {c.expected:.2f} | {c.ratio:.2f} | {c.llr:.6f} | {p} | {ri} |"
        )
    return "\n".join(lines)


def _json(result: ScanResult, ids: Sequence[str], start: dt.date) -> str:
    out = msgspec.to_builtins(result)
    for cluster in out["clusters"]:
        cluster["centre"] = ids[cluster["centre"]]
        cluster["locations"] = [ids[m] for m in cluster["locations"]]
        cluster["start_date"] = str(start + dt.timedelta(days=cluster["start_day"]))
        cluster["end_date"] = str(start + dt.timedelta(days=cluster["end_day"]))
    return json.dumps(out, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        start, end = _date(args.start, "--start"), _date(args.end, "--end")
        if end < start:
            raise InputError("--end is before --start")
        ids, points = read_coordinates(
            args.coordinates.read_text(encoding="utf-8-sig"), str(args.coordinates)
        )
        cases = read_cases(
            args.cases.read_text(encoding="utf-8-sig"), ids, start, end, str(args.cases)
        )
        params = SpaceTimeParams(
            study_days=(end - start).days + 1,
            max_window_days=args.max_window_days,
            max_radius_km=args.max_radius_km,
            max_case_fraction=args.max_case_fraction,
            min_cases=args.min_cases,
            replicas=args.replicas,
            seed=args.seed,
            max_neighbours=args.max_neighbours,
        )
        if args.no_sequential_stop:
            params = msgspec.structs.replace(params, sequential_stop=0)
    except (InputError, OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"fairwatch scan-files: {exc}", file=sys.stderr)
        return 2
    result = scan_space_time(points, cases, params)
    print(_json(result, ids, start) if args.json else _table(result, ids, start, args.top))
    return 0
