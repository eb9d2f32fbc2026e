"""Case list benchmark: 1,000,000 reports and 200,000 cases in a fresh embedded PostgreSQL.

Seeds one organisation with COPY (reports, cases with five reports each, entity links, staff),
builds the case summaries the way ``case_refresh_summary`` does (set-based), then runs the real
list and count queries of ``storage.case_list`` for typical filters and reports medians and the
plan each one used. Target: under 100 ms median per list request (list + counts).

    .venv/bin/python -m bench.cases_list                 # full size, writes bench/results/cases.md
    .venv/bin/python -m bench.cases_list --cases 20000   # a quick run (reports = 5 x cases)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import h3

from cases.priority import Priority
from cases.taxonomy import load_taxonomy
from cases.workflow import DEFAULT_SLA, CaseStatus
from storage.case_links import report_cells
from storage.case_list import CaseFilter, CaseSort, counts_sql, list_sql
from storage.db import with_database
from storage.embedded import start_embedded_postgres
from storage.migrate import apply_migrations

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results" / "cases.md"
REPORTS_PER_CASE = 5
RUNS = 21
PAGE = 51  # the API asks for limit + 1 to know whether there is a next page
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
STATUS_WEIGHTS = {
    "new": 10,
    "triage": 10,
    "open": 30,
    "referred": 8,
    "follow_up": 10,
    "resolved": 5,
    "closed": 24,
    "reopened": 3,
}
PRIORITY_WEIGHTS = {"critical": 5, "high": 25, "normal": 50, "low": 20}
# Narrative vocabulary: common words, and a few rarer ones a case manager would search for.
COMMON = [
    "wages",
    "unpaid",
    "months",
    "salary",
    "employer",
    "agent",
    "fees",
    "dormitory",
    "work",
    "hours",
    "overtime",
]
RARE = {"passport": 0.03, "confiscated": 0.01, "beaten": 0.004, "locked": 0.02}
CENTRES = [(25.28, 51.52), (27.70, 85.32), (3.14, 101.69), (24.47, 54.37), (14.60, 120.98)]


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _narrative(rng: random.Random) -> str:
    words = rng.sample(COMMON, 6)
    words += [w for w, p in RARE.items() if rng.random() < p]
    return " ".join(words)


async def seed(conn: asyncpg.Connection, n_cases: int) -> dict[str, Any]:
    """Load the data set; returns ids the queries filter on and the time taken."""
    rng = random.Random(20240611)
    started = time.perf_counter()
    org = await conn.fetchval(
        "INSERT INTO orgs (slug, name) VALUES ('bench', 'Bench') RETURNING id"
    )
    other = await conn.fetchval("INSERT INTO orgs (slug, name) VALUES ('other', 'O') RETURNING id")
    staff = [uuid.uuid4() for _ in range(20)]
    await conn.copy_records_to_table(
        "staff_users",
        records=[
            (u, org, f"u{i}@bench.org", "U", "case_manager", "x") for i, u in enumerate(staff)
        ],
        columns=["id", "org_id", "email", "display_name", "role", "password_hash"],
    )
    monitors = [uuid.uuid4() for _ in range(200)]
    devices = [uuid.uuid4() for _ in monitors]
    await conn.copy_records_to_table(
        "monitors",
        records=[(m, org, "M") for m in monitors],
        columns=["id", "org_id", "display_name"],
    )
    await conn.copy_records_to_table(
        "devices",
        records=[(d, org, m, uuid.uuid4().bytes) for d, m in zip(devices, monitors, strict=True)],
        columns=["id", "org_id", "monitor_id", "credential_hash"],
    )
    entities = [uuid.uuid4() for _ in range(5000)]
    await conn.copy_records_to_table(
        "entities",
        records=[(e, org, "employer", f"Employer {i}") for i, e in enumerate(entities)],
        columns=["id", "org_id", "kind", "legal_name"],
    )
    codes = [c.code for c in load_taxonomy().active_categories()]
    reports: list[tuple[Any, ...]] = []
    links: list[tuple[Any, ...]] = []
    members: list[tuple[Any, ...]] = []
    cases: list[tuple[Any, ...]] = []
    for number in range(1, n_cases + 1):
        case_id = uuid.uuid4()
        centre = rng.choice(CENTRES)
        lat, lon = centre[0] + rng.gauss(0, 0.3), centre[1] + rng.gauss(0, 0.3)
        created = NOW - dt.timedelta(seconds=rng.randrange(2 * 365 * 86400))
        categories: set[str] = set()
        entity = rng.choice(entities)
        for _ in range(REPORTS_PER_CASE):
            rid = uuid.uuid4()
            cats = rng.sample(codes, rng.randint(1, 3))
            categories.update(cats)
            m = rng.randrange(len(monitors))
            occurred = created - dt.timedelta(days=rng.randrange(30))
            content = json.dumps(
                {
                    "id": str(rid),
                    "categories": cats,
                    "severity": rng.randint(1, 5),
                    "narrative": _narrative(rng),
                }
            )
            reports.append(
                (
                    rid,
                    org,
                    monitors[m],
                    devices[m],
                    1,
                    content,
                    occurred,
                    lat,
                    lon,
                    cats,
                    occurred,
                    created,
                )
            )
            members.append((rid, org, case_id, report_cells(lat, lon), "bench"))
            if rng.random() < 0.3:
                links.append((rid, "employer", org, entity))
        status = _weighted(rng, STATUS_WEIGHTS)
        priority = Priority(_weighted(rng, PRIORITY_WEIGHTS))
        due = created + DEFAULT_SLA.duration(priority)
        cases.append(
            (
                case_id,
                org,
                number,
                status,
                priority.value,
                priority.rank,
                rng.choice(staff) if status not in ("new", "triage") else None,
                created,
                due,
                "not_actionable" if status == "closed" else None,
                "system:bench",
                created,
                created + dt.timedelta(hours=rng.randrange(2000)),
                sorted(categories),
                sorted({c for r in members[-REPORTS_PER_CASE:] for c in r[3]}),
                REPORTS_PER_CASE,
                created - dt.timedelta(days=30),
                created,
                lat,
                lon,
            )
        )
    await conn.copy_records_to_table(
        "reports",
        records=reports,
        columns=[
            "id",
            "org_id",
            "monitor_id",
            "device_id",
            "version",
            "content",
            "occurred_at",
            "latitude",
            "longitude",
            "categories",
            "recorded_at",
            "received_at",
        ],
    )
    await conn.copy_records_to_table(
        "cases",
        records=cases,
        columns=[
            "id",
            "org_id",
            "number",
            "status",
            "priority",
            "priority_rank",
            "assignee_id",
            "sla_started_at",
            "due_at",
            "outcome",
            "created_by",
            "created_at",
            "updated_at",
            "categories",
            "cells",
            "report_count",
            "occurred_from",
            "occurred_to",
            "latitude",
            "longitude",
        ],
    )
    await conn.copy_records_to_table(
        "case_reports",
        records=members,
        columns=["report_id", "org_id", "case_id", "cells", "linked_by"],
    )
    await conn.copy_records_to_table(
        "entity_links", records=links, columns=["report_id", "role", "org_id", "entity_id"]
    )
    # The search column, built set-based exactly as case_refresh_summary builds it per case.
    await conn.execute(
        """UPDATE cases c SET search = to_tsvector('simple', coalesce(c.title, '') || ' ' || s.n)
           FROM (SELECT cr.case_id, string_agg(r.content ->> 'narrative', ' ') AS n
                 FROM case_reports cr JOIN reports r ON r.id = cr.report_id
                 GROUP BY cr.case_id) s
           WHERE c.id = s.case_id"""
    )
    await conn.execute("VACUUM ANALYZE")
    top_entity = await conn.fetchval(
        "SELECT entity_id FROM entity_links GROUP BY entity_id ORDER BY count(*) DESC LIMIT 1"
    )
    del other
    return {
        "org": org,
        "assignee": staff[0],
        "entity": top_entity,
        "cell": str(h3.latlng_to_cell(*CENTRES[1], 5)),
        "seconds": time.perf_counter() - started,
        "reports": len(reports),
        "cases": len(cases),
    }


def scenarios(ids: dict[str, Any]) -> list[tuple[str, CaseFilter, CaseSort]]:
    active = tuple(CaseStatus(s) for s in ("open", "referred", "follow_up"))
    return [
        ("all cases, newest first", CaseFilter(), CaseSort.CREATED),
        ("state open, soonest due", CaseFilter(status=(CaseStatus.OPEN,)), CaseSort.DUE),
        (
            "my active cases, most urgent",
            CaseFilter(status=active, assignee_id=ids["assignee"]),
            CaseSort.PRIORITY,
        ),
        ("overdue, soonest due", CaseFilter(overdue=True), CaseSort.DUE),
        (
            "category FL.DOC_RETENTION",
            CaseFilter(categories=("FL.DOC_RETENTION",)),
            CaseSort.CREATED,
        ),
        ("region: H3 cell res 5", CaseFilter(cell=ids["cell"]), CaseSort.CREATED),
        ("entity (most reported employer)", CaseFilter(entity_id=ids["entity"]), CaseSort.CREATED),
        ("search 'passport'", CaseFilter(text="passport"), CaseSort.CREATED),
        (
            "search 'beaten' + state open",
            CaseFilter(text="beaten", status=(CaseStatus.OPEN,)),
            CaseSort.CREATED,
        ),
        (
            "last 30 days, state new",
            CaseFilter(status=(CaseStatus.NEW,), created_from=NOW - dt.timedelta(days=30)),
            CaseSort.CREATED,
        ),
        ("priority sort, all", CaseFilter(), CaseSort.PRIORITY),
    ]


async def _median_ms(conn: asyncpg.Connection, sql: str, args: list[Any]) -> tuple[float, int]:
    timings = []
    rows = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        rows = len(await conn.fetch(sql, *args))
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings), rows


def _plan_summary(plan: dict[str, Any]) -> str:
    found: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if "Index Name" in node:
            kind += f" {node['Index Name']}"
        if kind not in found and kind not in ("Limit", "Result"):
            found.append(kind)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return "; ".join(found[:5])


async def measure(conn: asyncpg.Connection, ids: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, f, sort in scenarios(ids):
        sql, args = list_sql(ids["org"], f, sort, None, PAGE)
        list_ms, rows = await _median_ms(conn, sql, args)
        page2_after = None
        if rows == PAGE:
            last = (await conn.fetch(sql, *args))[-2]
            page2_after = {
                CaseSort.CREATED: (last["created_at"], last["id"]),
                CaseSort.DUE: (last["due_at"], last["id"]),
                CaseSort.PRIORITY: (last["priority_rank"], last["due_at"], last["id"]),
                CaseSort.UPDATED: (last["updated_at"], last["id"]),
            }[sort]
        page2_ms = None
        if page2_after is not None:
            sql2, args2 = list_sql(ids["org"], f, sort, page2_after, PAGE)
            page2_ms, _ = await _median_ms(conn, sql2, args2)
        csql, cargs = counts_sql(ids["org"], f)
        counts_ms, _ = await _median_ms(conn, csql, cargs)
        plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))[0]
        cplan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + csql, *cargs))[0]
        out.append(
            {
                "name": name,
                "rows": min(rows, PAGE - 1),
                "list_ms": list_ms,
                "page2_ms": page2_ms,
                "counts_ms": counts_ms,
                "total_ms": list_ms + counts_ms,
                "plan": _plan_summary(plan),
                "counts_plan": _plan_summary(cplan),
            }
        )
        print(f"{name:38s} list {list_ms:7.2f} ms  counts {counts_ms:7.2f} ms  rows {rows}")
    return out


def write_results(seeded: dict[str, Any], results: list[dict[str, Any]], command: str) -> None:
    over = [r for r in results if r["total_ms"] >= 100]
    lines = [
        "# Case list benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, embedded PostgreSQL; "
        f"{RUNS} runs per query, median. Run at {NOW.isoformat()}.",
        "",
        f"Data: {seeded['reports']:,} reports, {seeded['cases']:,} cases (5 reports each, 30% of "
        f"reports linked to one of 5,000 employers), seeded with COPY in {seeded['seconds']:.0f} s.",
        "",
        "Each request of `GET /v1/cases` runs one page query (limit 51) and one count-per-state "
        "query; *total* is both, the figure the 100 ms target applies to. *page 2* is the next "
        "keyset page. Sort orders: created (newest first), due, priority (then due).",
        "",
        "| filter | rows | list ms | page 2 ms | counts ms | total ms | list plan | counts plan |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        page2 = "-" if r["page2_ms"] is None else f"{r['page2_ms']:.2f}"
        lines.append(
            f"| {r['name']} | {r['rows']} | {r['list_ms']:.2f} | {page2} | {r['counts_ms']:.2f} "
            f"| **{r['total_ms']:.2f}** | {r['plan']} | {r['counts_plan']} |"
        )
    totals = [r["total_ms"] for r in results]
    lines += [
        "",
        f"Median of the per-filter totals: {statistics.median(totals):.2f} ms; worst: "
        f"{max(totals):.2f} ms ({len(over)} of {len(results)} filters at or over 100 ms).",
        "",
        "What made it so (migration 0006): one btree per sort order with `id` as tie-breaker; GIN "
        "on `categories`, `cells` and `search`; the overdue index carries `status` so its counts "
        "are index-only; and `toast_tuple_target = 256` with `search` and `cells` stored "
        "out of line, which keeps the heap narrow. Before that last change the counts of the "
        "category and overdue filters took 156 ms and 137 ms (bitmap heap scans over a heap "
        "larger than shared_buffers); the lists themselves were already under 20 ms.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


async def run(n_cases: int, dsn: str | None, command: str) -> None:
    server = None
    if dsn is None:
        server = start_embedded_postgres(
            Path(tempfile.mkdtemp(prefix="fairwatch-bench-cases-")) / "pgdata", delete_on_stop=True
        )
        dsn = server.dsn("postgres")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("DROP DATABASE IF EXISTS bench_cases")
            await conn.execute("CREATE DATABASE bench_cases")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(dsn, "bench_cases"))
        try:
            await apply_migrations(conn)
            seeded = await seed(conn, n_cases)
            print(
                f"seeded {seeded['reports']:,} reports, {seeded['cases']:,} cases "
                f"in {seeded['seconds']:.0f} s"
            )
            results = await measure(conn, seeded)
        finally:
            await conn.close()
        write_results(seeded, results, command)
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200_000)
    parser.add_argument("--dsn", help="a PostgreSQL server to use instead of the embedded one")
    args = parser.parse_args(argv)
    command = "python -m bench.cases_list " + " ".join(sys.argv[1:] if argv is None else argv)
    asyncio.run(run(args.cases, args.dsn, command.strip()))


if __name__ == "__main__":
    main()
