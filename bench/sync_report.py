"""The sync benchmark's figures (every run kept, medians reported) and ``bench/results/sync.md``."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import asyncpg
import msgspec

__all__ = ["Figures", "Sizes", "write_results"]

RESULTS = Path(__file__).parent / "results" / "sync.md"


class Sizes(msgspec.Struct, frozen=True):
    repeats: int
    batches: int  # batches of 500 per device and round
    small_registry: int
    large_registry: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(repeats=3, batches=3, small_registry=10_000, large_registry=100_000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(repeats=3, batches=1, small_registry=2_000, large_registry=10_000)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


class Figures:
    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes
        self.runs: dict[str, list[float]] = {}
        self.info: dict[str, str] = {"load_at_start": _load()}

    def add(self, name: str, value: float) -> None:
        self.runs.setdefault(name, []).append(value)

    def has(self, name: str) -> bool:
        return name in self.runs

    def median(self, name: str) -> float:
        return statistics.median(self.runs[name])

    def cell(self, name: str, unit: str = "/s", digits: int = 0) -> str:
        """Median, then every run in order."""
        if name not in self.runs:
            return "n/a"
        runs = ", ".join(f"{v:,.{digits}f}" for v in self.runs[name])
        return f"**{self.median(name):,.{digits}f}{unit}** ({runs})"

    async def describe_database(self, conn: asyncpg.Connection) -> None:
        version = await conn.fetchval("SHOW server_version")
        settings = []
        for name in ("shared_buffers", "fsync", "synchronous_commit", "wal_level"):
            settings.append(f"{name}={await conn.fetchval(f'SHOW {name}')}")
        self.info["postgres"] = f"PostgreSQL {version} ({', '.join(settings)})"


def _machine() -> str:
    cpu = "unknown CPU"
    memory = "?"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    nproc = len(os.sched_getaffinity(0))
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else "not installed"
    )
    return (
        f"{cpu}, nproc {nproc}, {memory} RAM, {platform.system()} {platform.machine()}, "
        f"Python {sys.version.split()[0]}, Node {node_version}"
    )


def _yes(ok: bool) -> str:
    return "met" if ok else "**not met**"


def write_results(f: Figures, *, quick: bool) -> Path:
    s = f.sizes
    per_round = 8 * s.batches * 500
    pouch = f.has("pouch_push")
    lines = [
        "# Sync benchmarks",
        "",
        f"Command: `.venv/bin/python -m bench.sync_bench{' --quick' if quick else ''}` "
        f"({f.info.get('wall_seconds', '?')} s in all). Medians of {s.repeats} runs in **bold**, "
        "then each run in order; ratios are taken run by run (the two sides measured back to "
        "back) and their median is shown.",
        "",
        f"Machine: {_machine()}. {f.info.get('postgres', '')}, embedded in a temp dir (or "
        "`FAIRWATCH_BENCH_DATABASE_URL`). "
        f"Load average at the start: {f.info['load_at_start']}; other work was running on this "
        "2-core machine, and the client, the app, PostgreSQL and pouchdb-server share its "
        "cores, so absolute rates are noisy; the same-run ratios are the figures to compare.",
        "",
        "Set-up: the app runs as `python -m server serve --role api` (one uvicorn process, log "
        "level WARNING, pool of 12 connections) on a loopback port; devices are httpx clients in "
        "the benchmark process. The organisation and its admin are created with the "
        "repositories (there is no API for them); monitors, enrollment codes and devices go "
        "through the API.",
        "",
        "## Push",
        "",
        f"{per_round:,} `create_report` mutations per run: 8 devices (one monitor each) push "
        f"{s.batches} batch(es) of 500 each, the 8 devices at once, JSON bodies, no compression. "
        "Reports are like `tests/api/sync_support.report()`: location with a place, categories, "
        "narrative, employer, consent, and a worker identity.",
        "",
        "| measure | rate (reports/s) |",
        "|---|---|",
        f"| Fairwatch push | {f.cell('push')} |",
        f"| bare COPY of the same `reports` rows into `LIKE reports INCLUDING ALL` | "
        f"{f.cell('copy_reports')} |",
        f"| bare COPY of everything the push wrote per report (rows of `reports`, "
        f"`sync_mutations`, `sync_changes`) | {f.cell('copy_write_set')} |",
        f"| pouchdb-server `_bulk_docs` (same documents, batches, concurrency) | "
        f"{f.cell('pouch_push') if pouch else 'not run: ' + f.info.get('pouchdb_missing', '?')} |",
        "",
        f"- Push / bare COPY of the report rows: {f.cell('push_vs_copy', '', 3)}; target >= 0.35: "
        f"{_yes(f.median('push_vs_copy') >= 0.35)}.",
    ]
    if pouch:
        lines.append(
            f"- Fairwatch push / pouchdb-server push: {f.cell('push_vs_pouch', 'x', 2)}; target "
            f">= 5x: {_yes(f.median('push_vs_pouch') >= 5)}."
        )
    lines += [
        "",
        "The COPY baselines reuse the rows the push just stored (read back, untimed) and load "
        "them from 8 connections at once in batches of 500, one transaction per batch, like "
        "the push; server-assigned `change_no` and `xid` are left to their defaults.",
        "",
        "What each side does per request: **Fairwatch** decodes and validates every mutation, "
        "locks the device's ledger row, looks up stored results (exactly-once), hashes each "
        "mutation's canonical body, locks the batch's report ids, seals every worker identity "
        "and place with the org's data key (AES-GCM), and writes the reports, their feed rows "
        "(`report_status`), one matching job per 50 reports and every mutation's final result "
        "with one binary COPY per table in one savepoint; then updates the device's ledger and "
        "clock estimate and commits (fsync) before answering. **pouchdb-server** (PouchDB "
        f"{f.info.get('pouchdb', '?')}, leveldb adapter) checks each `_id`'s revision tree, "
        "makes a new revision (`1-<md5>`), and writes the document, its revision tree and "
        "its change sequence to LevelDB (no fsync per write); no validation, no encryption, "
        "no exactly-once ledger.",
        "",
        "## Pull",
        "",
        f"A device whose region (one H3 cell) holds {s.small_registry:,} registry entities pulls "
        f"all of them from no cursor, pages of 1,000 ({f.median('pull_changes'):,.0f} changes, "
        "with the taxonomy). The entities are loaded with COPY into `entities`, "
        "`entity_licences` and `sync_changes` (one feed row per region key, as "
        "`RegistryRepository._publish` writes).",
        "",
        "| measure | rate (changes/s) | bytes per change on the wire |",
        "|---|---|---|",
        f"| Fairwatch pull, msgpack + zstd (as a phone) | {f.cell('pull_msgpack')} | "
        f"{f.median('pull_msgpack_bytes'):.0f} |",
        f"| Fairwatch pull, JSON uncompressed | {f.cell('pull_json')} | "
        f"{f.median('pull_json_bytes'):.0f} |",
        f"| bare keyset-paged SELECT of the same feed rows (asyncpg, each audience from its "
        f"index range) | {f.cell('bare_select')} | - |",
    ]
    if pouch:
        lines.append(
            f"| pouchdb-server `_changes?include_docs=true`, `limit` 1,000 + `since`, same "
            f"entity documents, JSON | {f.cell('pouch_pull')} | "
            f"{f.median('pouch_pull_bytes'):.0f} |"
        )
    lines += [
        "",
        f"- Pull (msgpack + zstd) / bare SELECT: {f.cell('pull_vs_select', '', 3)}.",
    ]
    if pouch:
        lines.append(
            f"- Fairwatch pull (JSON) / pouchdb-server pull (JSON): "
            f"{f.cell('pull_vs_pouch', 'x', 2)}; target >= 5x: "
            f"{_yes(f.median('pull_vs_pouch') >= 5)}."
        )
    lines += [
        "",
        "Per page, Fairwatch opens a REPEATABLE READ snapshot, verifies the signed cursor, "
        "reads the feed rows of the device's audiences (each audience from its own index range) "
        "and the band of late commits, applies the late-commit rule, and passes the stored JSON "
        "bodies through: joined into the JSON page, or decoded once per page and encoded as "
        "msgpack (then compressed); it records the pull on the device with an asynchronous "
        "commit. pouchdb-server reads its by-sequence index and each document. The bare SELECT "
        "reads the same rows the same way as the app, without snapshot, cursor, late-commit rule "
        "or HTTP. Before issue 3 point 11 it used `audience = ANY(...) ORDER BY change_no`, whose "
        "plan walked the other regions' rows (45,152/s in the results before): Pull / bare "
        "SELECT is not comparable with figures from before that change.",
        "",
        "## First full sync of a large region",
        "",
        "Time until the device has pulled and decoded everything (msgpack + zstd, pages of "
        "1,000), and the peak resident memory of the app process during that sync "
        f"({f.info.get('rss_method', '?')}; PostgreSQL's memory is not included).",
        "",
        "| entities in the region | time | server RSS before | server RSS peak |",
        "|---|---|---|---|",
    ]
    for label, n in (("small", s.small_registry), ("large", s.large_registry)):
        lines.append(
            f"| {n:,} ({f.median(f'first_sync_{label}_changes'):,.0f} changes) | "
            f"{f.cell(f'first_sync_{label}', ' s', 2)} | {f.median(f'rss_base_{label}'):.0f} MB "
            f"| {f.cell(f'rss_peak_{label}', ' MB')} |"
        )
    growth = f.median("rss_peak_large") - f.median("rss_peak_small")
    lines += [
        "",
        f"- {s.large_registry:,} entities in under 5 s: {_yes(f.median('first_sync_large') < 5)}. "
        f"Time grows {f.median('first_sync_large') / f.median('first_sync_small'):.0f}x for "
        f"{s.large_registry / s.small_registry:.0f}x the entities.",
        f"- Peak RSS, {s.large_registry:,} vs {s.small_registry:,} entities: {growth:+.0f} MB "
        "(a page at a time, so it should not grow with the number of entities).",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    return RESULTS
