"""Sync throughput against the real app over loopback HTTP, with same-run baselines: a bare COPY
of the rows a push stores, pouchdb-server on the same documents, and a bare SELECT of the feed.

Run: ``.venv/bin/python -m bench.sync_bench [--quick] [--profile-server PATH]``; prints the
figures and writes ``bench/results/sync.md`` (medians of >= 3 runs, ratios from the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import msgspec

from bench.sync_fleet import (
    Device,
    create_fleet,
    create_mutations,
    enroll_device,
    new_monitor,
    pull_everything,
    push_batches,
    push_body,
    report,
)
from bench.sync_memory import PeakRss
from bench.sync_pouch import bulk_docs_body, create_database, pull_changes, push_bulk_docs
from bench.sync_report import Figures, Sizes, write_results
from bench.sync_seed import bare_feed_select, copy_rows, seed_entities
from bench.sync_stack import Process, bench_database, fairwatch_app, pouchdb_server
from storage.db import connect

__all__ = ["main"]

BATCH = 500
DEVICES = 8
PAGE = 1000
DOHA = "85536bc3fffffff"  # the pushing monitors' region
SMALL = ("KW", "852c93affffffff", 29.3759, 47.9774)  # Kuwait City
LARGE = ("SA", "8553736bfffffff", 24.7136, 46.6753)  # Riyadh
# What a push of new reports writes per report (matching jobs are one per 50 reports; a report's
# first version lives in its `reports` row, report_versions only gets versions an amendment
# replaced; until migration 0009 the push wrote a report_versions row too).
_WRITE_SET = ("reports", "sync_mutations", "sync_changes")


async def _copy_tables(conn: asyncpg.Connection) -> None:
    for table in _WRITE_SET:
        await conn.execute(f"CREATE TABLE bench_copy_{table} (LIKE {table} INCLUDING ALL)")


async def _written_rows(
    conn: asyncpg.Connection, report_ids: list[uuid.UUID], mutation_ids: list[uuid.UUID]
) -> dict[str, tuple[list[str], list[tuple[object, ...]]]]:
    """What the push stored for these reports, table by table, in the order of ``report_ids``."""
    ids = [str(i) for i in report_ids]
    # (query, its key column, the keys in report order); change_no and xid are the server's
    # to assign, so they are left to their defaults.
    queries: dict[str, tuple[str, str, Sequence[object]]] = {
        "reports": ("SELECT * FROM reports WHERE id = ANY($1::uuid[])", "id", report_ids),
        "sync_mutations": (
            "SELECT * FROM sync_mutations WHERE mutation_id = ANY($1::uuid[])",
            "mutation_id",
            mutation_ids,
        ),
        "sync_changes": (
            "SELECT org_id, audience, record_kind, record_id, version, body, changed_at "
            "FROM sync_changes WHERE record_kind = 'report' AND record_id = ANY($1::text[])",
            "record_id",
            ids,
        ),
    }
    out = {}
    for table, (sql, key, keys) in queries.items():
        rows = await conn.fetch(sql, list(keys))
        by_key = {r[key]: tuple(r.values()) for r in rows}
        if len(by_key) != len(keys):
            raise RuntimeError(f"{table}: {len(by_key)} rows for {len(keys)} reports")
        out[table] = (list(rows[0].keys()), [by_key[k] for k in keys])
    return out


async def _push_round(
    client: httpx.AsyncClient,
    pouch: httpx.AsyncClient | None,
    conns: Sequence[asyncpg.Connection],
    devices: list[Device],
    batches: int,
    rng: random.Random,
    figures: Figures,
) -> None:
    """One repetition: Fairwatch push, then COPY of what it stored, then pouchdb-server."""
    work, pouch_work, report_ids, mutation_ids = [], [], [], []
    for device in devices:
        bodies, docs = [], []
        for _ in range(batches):
            mutations = create_mutations(device, [report(rng) for _ in range(BATCH)])
            report_ids += [uuid.UUID(m["report"]["id"]) for m in mutations]
            mutation_ids += [uuid.UUID(m["mutation_id"]) for m in mutations]
            bodies.append(push_body(device, mutations))
            docs.append(bulk_docs_body(mutations))
        work.append((device, bodies))
        pouch_work.append(docs)
    n = len(report_ids)
    seconds = await push_batches(client, work)
    figures.add("push", n / seconds)
    print(f"fairwatch push: {n} reports in {seconds:.2f} s = {n / seconds:,.0f}/s", flush=True)

    written = await _written_rows(conns[0], report_ids, mutation_ids)
    for conn in conns[:1]:
        await conn.execute("TRUNCATE " + ", ".join(f"bench_copy_{t}" for t in _WRITE_SET))
    cols, rows = written["reports"]
    copy_s = await copy_rows(conns, "bench_copy_reports", cols, rows, BATCH)
    figures.add("copy_reports", n / copy_s)
    figures.add("push_vs_copy", copy_s / seconds)
    all_s = 0.0
    for table in _WRITE_SET:
        await conns[0].execute(f"TRUNCATE bench_copy_{table}")
        cols, rows = written[table]
        all_s += await copy_rows(conns, f"bench_copy_{table}", cols, rows, BATCH)
    figures.add("copy_write_set", n / all_s)
    print(f"bare COPY: reports {n / copy_s:,.0f}/s, whole write set {n / all_s:,.0f}/s", flush=True)

    if pouch is not None:
        pouch_s = await push_bulk_docs(pouch, "reports", pouch_work)
        figures.add("pouch_push", n / pouch_s)
        figures.add("push_vs_pouch", pouch_s / seconds)
        print(f"pouchdb-server _bulk_docs: {n / pouch_s:,.0f}/s", flush=True)


async def _load_pouch_registry(
    conn: asyncpg.Connection, pouch: httpx.AsyncClient, org_id: uuid.UUID, cell: str
) -> int:
    """The same entity documents the Fairwatch feed holds for ``cell``, into db ``registry``."""
    rows = await conn.fetch(
        "SELECT record_id, body::text AS body FROM sync_changes "
        "WHERE org_id = $1 AND audience = $2 ORDER BY change_no",
        org_id,
        f"region:{cell}",
    )
    docs = [{"_id": r["record_id"], **msgspec.json.decode(r["body"])} for r in rows]
    await create_database(pouch, "registry")
    for i in range(0, len(docs), BATCH):
        body = msgspec.json.encode({"docs": docs[i : i + BATCH]})
        await push_bulk_docs(pouch, "registry", [[body]])
    return len(docs)


class _Stage(msgspec.Struct):
    """Everything the measurements drive, set up once."""

    app: Process
    client: httpx.AsyncClient
    pouch: httpx.AsyncClient | None
    conns: list[asyncpg.Connection]
    org_id: uuid.UUID
    pushers: list[Device]
    regional: dict[str, Device]


async def _measure_push(stage: _Stage, sizes: Sizes, figures: Figures) -> None:
    rng = random.Random(2025)
    if stage.pouch is not None:
        await create_database(stage.pouch, "reports")
    for rep in range(sizes.repeats):
        print(f"-- push round {rep + 1}/{sizes.repeats}", flush=True)
        await _push_round(
            stage.client, stage.pouch, stage.conns, stage.pushers, sizes.batches, rng, figures
        )


async def _measure_pull(stage: _Stage, sizes: Sizes, figures: Figures) -> None:
    small = stage.regional["small"]
    if stage.pouch is not None:
        loaded = await _load_pouch_registry(stage.conns[0], stage.pouch, stage.org_id, SMALL[1])
        print(f"pouchdb-server registry: {loaded:,} documents", flush=True)
    audiences = ["all", f"monitor:{small.monitor_id}", "org", f"region:{SMALL[1]}"]
    for rep in range(sizes.repeats):
        print(f"-- pull round {rep + 1}/{sizes.repeats}", flush=True)
        as_json = await pull_everything(stage.client, small, limit=PAGE, msgpack=False)
        json_rate = as_json.changes / as_json.seconds
        figures.add("pull_json", json_rate)
        figures.add("pull_json_bytes", as_json.wire_bytes / as_json.changes)
        if stage.pouch is not None:
            pouch_s, pouch_n, pouch_bytes = await pull_changes(stage.pouch, "registry", limit=PAGE)
            figures.add("pouch_pull", pouch_n / pouch_s)
            figures.add("pull_vs_pouch", json_rate / (pouch_n / pouch_s))
            figures.add("pouch_pull_bytes", pouch_bytes / pouch_n)
            print(f"pouchdb-server _changes: {pouch_n / pouch_s:,.0f}/s", flush=True)
        packed = await pull_everything(stage.client, small, limit=PAGE, msgpack=True)
        packed_rate = packed.changes / packed.seconds
        figures.add("pull_msgpack", packed_rate)
        figures.add("pull_msgpack_bytes", packed.wire_bytes / packed.changes)
        figures.add("pull_changes", packed.changes)
        bare_s, bare_n = await bare_feed_select(stage.conns[0], stage.org_id, audiences, PAGE)
        figures.add("bare_select", bare_n / bare_s)
        figures.add("pull_vs_select", packed_rate / (bare_n / bare_s))
        print(
            f"pull {packed.changes:,}: json {json_rate:,.0f}/s, msgpack+zstd {packed_rate:,.0f}/s,"
            f" bare SELECT {bare_n / bare_s:,.0f}/s",
            flush=True,
        )


async def _measure_first_sync(stage: _Stage, sizes: Sizes, figures: Figures) -> None:
    peak = PeakRss(stage.app.pid)
    figures.info["rss_method"] = peak.method
    for rep in range(sizes.repeats):
        print(f"-- first full sync {rep + 1}/{sizes.repeats}", flush=True)
        for label in ("small", "large"):
            with peak.measure() as memory:
                run = await pull_everything(
                    stage.client, stage.regional[label], limit=PAGE, msgpack=True
                )
            figures.add(f"first_sync_{label}", run.seconds)
            figures.add(f"first_sync_{label}_changes", run.changes)
            figures.add(f"rss_base_{label}", memory.base_mb)
            figures.add(f"rss_peak_{label}", memory.peak_mb)
            print(
                f"first sync {label}: {run.changes:,} changes in {run.seconds:.2f} s, "
                f"server RSS {memory.base_mb:.0f} -> peak {memory.peak_mb:.0f} MB",
                flush=True,
            )


@contextlib.asynccontextmanager
async def _pouch_client(tmp: Path, figures: Figures) -> AsyncIterator[httpx.AsyncClient | None]:
    """A client of a running pouchdb-server, or None (with the reason noted) if it cannot run."""
    try:
        async with (
            pouchdb_server(tmp) as proc,
            httpx.AsyncClient(base_url=proc.base_url, timeout=600) as pouch,
        ):
            figures.info["pouchdb"] = (await pouch.get("/")).json().get("version", "?")
            yield pouch
    except (FileNotFoundError, RuntimeError) as exc:
        if "pouchdb" in figures.info:
            raise
        figures.info["pouchdb_missing"] = str(exc).splitlines()[0]
        print(f"pouchdb-server unavailable: {exc}", flush=True)
        yield None


async def _run(args: argparse.Namespace, tmp: Path) -> Figures:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    figures = Figures(sizes)
    async with bench_database(tmp) as dsn, fairwatch_app(dsn, tmp, args.profile_server) as app:
        conns = [await connect(dsn) for _ in range(DEVICES)]
        limits = httpx.Limits(max_connections=2 * DEVICES)
        try:
            async with httpx.AsyncClient(
                base_url=app.base_url, timeout=600, limits=limits
            ) as client:
                fleet = await create_fleet(client, dsn, DEVICES, DOHA)
                regional: dict[str, Device] = {}
                for label, n, (country, cell, lat, lon) in (
                    ("small", sizes.small_registry, SMALL),
                    ("large", sizes.large_registry, LARGE),
                ):
                    seconds = await seed_entities(
                        conns[0], fleet.org_id, n, country=country, cell=cell, lat=lat, lon=lon
                    )
                    print(f"seeded {n:,} entities in one cell in {seconds:.1f} s", flush=True)
                    monitor = await new_monitor(
                        client, fleet.staff_token, f"Monitor {country}", [cell]
                    )
                    regional[label] = await enroll_device(client, fleet.staff_token, monitor)
                await figures.describe_database(conns[0])
                await _copy_tables(conns[0])
                async with _pouch_client(tmp, figures) as pouch:
                    stage = _Stage(app, client, pouch, conns, fleet.org_id, fleet.devices, regional)
                    await _measure_push(stage, sizes, figures)
                    await _measure_pull(stage, sizes, figures)
                    await _measure_first_sync(stage, sizes, figures)
        finally:
            for conn in conns:
                await conn.close()
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--profile-server", type=Path, default=None, help="run the app under cProfile into PATH"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fairwatch-sync-bench-") as tmp:
        figures = asyncio.run(_run(args, Path(tmp)))
    figures.info["wall_seconds"] = f"{time.monotonic() - started:.0f}"
    path = write_results(figures, quick=args.quick)
    print(f"written {path}")


if __name__ == "__main__":
    main()
