"""The fleet simulator: many enrolled devices recording, amending, pushing, pulling and uploading
against a real server, optionally through seeded chaos, then a check that nothing was lost,
duplicated or silently merged.

``run_fleet`` drives the phases; ``sync.client.fleet_check`` judges the outcome. ``main(argv)`` is
what ``fairwatch simulate`` delegates to.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import h3
import msgspec

from sync.changes import TaxonomyChange
from sync.client.content import CITIES, attachment_bytes, make_report
from sync.client.fleet_check import FleetReport, check_fleet
from sync.client.simdevice import Monitor, SimDevice, open_sim_device
from sync.client.staff import StaffClient
from sync.messages import ReportChanges

__all__ = ["FleetReport", "main", "run_fleet"]

_log = logging.getLogger("fairwatch.fleet")


async def _each(
    sims: Sequence[SimDevice], step: Callable[[SimDevice], Awaitable[None]], limit: int
) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(sim: SimDevice) -> None:
        async with gate:
            await step(sim)

    await asyncio.gather(*(run(s) for s in sims))


def _plan_monitors(devices: int) -> list[int]:
    """Devices per monitor: a third of the devices share a monitor in pairs (one monitor, two
    phones: the source of truly concurrent edits); the rest have a phone each."""
    pairs = max(1, devices // 6) if devices >= 2 else 0
    return [2] * pairs + [1] * (devices - 2 * pairs)


async def _setup(
    staff: StaffClient, base_url: str, devices: int, chaos: bool, seed: int, workdir: Path
) -> list[SimDevice]:
    sims: list[SimDevice] = []
    for m, size in enumerate(_plan_monitors(devices)):
        city = CITIES[m % len(CITIES)]
        home = h3.latlng_to_cell(city.lat, city.lon, 5)
        cells = sorted(h3.grid_disk(home, 2))
        monitor_id = await staff.create_monitor(
            f"Monitor {m + 1:03d} ({city.name})", cells, [city.country]
        )
        monitor = Monitor(index=m, id=monitor_id, city=city)
        for _ in range(size):
            code = await staff.enrollment_code(monitor_id)
            sim = open_sim_device(len(sims), monitor, base_url, workdir, chaos=chaos, seed=seed)
            await sim.device.enroll(code, device_model=f"Simulated phone {sim.index}")
            sims.append(sim)
    return sims


def _record(sim: SimDevice, count: int, categories: list[str], attachment_every: int) -> None:
    for _ in range(count):
        report = make_report(sim.rng, sim.monitor.city, categories, sim.device.clock())
        # A fixed share, spread over the devices, so every run has media to upload.
        if attachment_every and (len(sim.created) + 7 * sim.index) % attachment_every == 0:
            data, media_type = attachment_bytes(sim.rng, sim.max_attachment_bytes)
            declared = sim.device.attach(data, media_type)
            report = msgspec.structs.replace(report, attachments=(declared,))
            sim.declared.add(declared.sha256)
        sim.device.record_report(report)
        sim.created.append(report.id)


def _has_media(sim: SimDevice, report_id: uuid.UUID) -> bool:
    local = sim.device.outbox.report(report_id)
    return local is not None and bool(local.report.attachments)


def _amend(sims: Sequence[SimDevice]) -> int:
    """Queue amendments, offline. A pair's two phones both edit some of the same reports from the
    same base version: severity on both sides (a true conflict) or different fields (merged)."""
    expected_conflicts = 0
    by_monitor: dict[int, list[SimDevice]] = {}
    for sim in sims:
        by_monitor.setdefault(sim.monitor.index, []).append(sim)
    for group in by_monitor.values():
        first = group[0]
        known = [r for r in first.created if first.device.known_version(r) == 1]
        chosen = first.rng.sample(known, max(1, len(known) // 5)) if known else []
        # Always edit a report with media too: an amendment must not lose its attachments.
        with_media = [r for r in known if _has_media(first, r) and r not in chosen]
        chosen += with_media[:1]
        for n, report_id in enumerate(chosen):
            local = first.device.outbox.report(report_id)
            assert local is not None
            if len(group) == 1:
                note = local.report.narrative + " Update: two more workers confirmed this."
                first.device.amend_report(report_id, ReportChanges(narrative=note))
                first.amended += 1
                continue
            second = group[1]
            if second.device.known_version(report_id) != 1:
                continue  # the sibling has not pulled it yet: no shared base to edit from
            if n % 2 == 0:
                old = local.report.severity
                mine, theirs = [s for s in range(1, 6) if s != old][:2]
                first.device.amend_report(report_id, ReportChanges(severity=mine))
                second.device.amend_report(report_id, ReportChanges(severity=theirs))
                expected_conflicts += 1
            else:
                first.device.amend_report(report_id, ReportChanges(sector="hospitality"))
                more = local.report.workers_affected + 3
                second.device.amend_report(report_id, ReportChanges(workers_affected=more))
            first.amended += 1
            second.amended += 1
    return expected_conflicts


async def run_fleet(
    base_url: str,
    admin_email: str,
    admin_password: str,
    devices: int,
    reports: int,
    chaos: bool,
    seed: int,
    workdir: Path,
    *,
    concurrency: int = 24,
    attachment_every: int = 40,
    max_attachment_bytes: int = 1536 * 1024,
) -> FleetReport:
    """Simulate ``devices`` phones recording ``reports`` reports in all, then check the server."""
    staff = StaffClient(base_url)
    await staff.login(admin_email, admin_password)
    sims = await _setup(staff, base_url, devices, chaos, seed, workdir)
    for sim in sims:
        sim.max_attachment_bytes = max_attachment_bytes
    try:
        await _each(sims, lambda s: s.pull(), concurrency)
        taxonomy = sims[0].device.outbox.pulled("taxonomy")
        categories = sorted(
            c.code for c in taxonomy if isinstance(c, TaxonomyChange) and not c.retired
        )
        if not categories:
            raise RuntimeError("the first pull brought no taxonomy: cannot write reports")
        share = [
            reports // len(sims) + (1 if i < reports % len(sims) else 0) for i in range(len(sims))
        ]

        async def wave(sim: SimDevice, count: int, *, interrupt: bool) -> None:
            _record(sim, count, categories, attachment_every)
            await sim.sync(interrupt_uploads=interrupt)

        # Two waves of offline work, each followed by a sync; chaos restarts some apps in between.
        await _each(sims, lambda s: wave(s, share[s.index] // 2, interrupt=chaos), concurrency)
        if chaos:
            await _each([s for s in sims if s.index % 4 == 1], lambda s: s.restart(), concurrency)
        rest = [share[s.index] - share[s.index] // 2 for s in sims]
        await _each(sims, lambda s: wave(s, rest[s.index], interrupt=chaos), concurrency)
        await _each(sims, lambda s: s.pull(), concurrency)

        expected_conflicts = _amend(sims)
        await _each(sims, lambda s: s.sync(interrupt_uploads=False), concurrency)
        await _each(sims, lambda s: s.flush(), concurrency)
        # Once every phone is done, pull again: while others were still writing, a pull may not
        # yet serve rows of transactions younger than its snapshot's xmin (never skipped, only
        # delivered on a later pull), and the check below wants each phone's final view.
        await _each(sims, lambda s: s.pull(), concurrency)
        return await check_fleet(staff, sims, expected_conflicts)
    finally:
        for sim in sims:
            await sim.close()
        await staff.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """``fairwatch simulate`` arguments; prints the FleetReport as JSON and exits 1 unless ok."""
    parser = argparse.ArgumentParser(prog="fairwatch simulate", description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--reports", type=int, default=20_000)
    parser.add_argument("--chaos", action="store_true", help="drop, replay and reorder requests")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--email", required=True, help="an org_admin or case_manager account")
    parser.add_argument("--password", required=True)
    parser.add_argument("--workdir", type=Path, default=None, help="device files (default: temp)")
    parser.add_argument("--concurrency", type=int, default=24)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # One line per HTTP request from 200 phones would bury the fleet's own report.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fairwatch-fleet-"))
    started = dt.datetime.now(dt.UTC)
    report = asyncio.run(
        run_fleet(
            args.base_url,
            args.email,
            args.password,
            args.devices,
            args.reports,
            args.chaos,
            args.seed,
            workdir,
            concurrency=args.concurrency,
        )
    )
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    print(msgspec.json.format(msgspec.json.encode(report)).decode())
    print(f"{'OK' if report.ok else 'FAILED'} in {elapsed:.1f} s; device files in {workdir}")
    return 0 if report.ok else 1
