"""The referee of a fleet run: compares what the devices created with what the server holds, by
the staff API where it has an endpoint and by the devices' own pulls always.

Every count is exact; ``ok`` is true only when no report was lost or duplicated, nothing was
rejected, every attachment arrived intact, every true conflict was recorded once, and replayed
batches got the same answers as the first time.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from sync.changes import ReportStatusChange
from sync.client.outbox import is_final
from sync.client.simdevice import SimDevice
from sync.client.staff import StaffClient
from sync.client.transport import DeviceWiped, NotFound, SyncError
from sync.messages import MutationResult, MutationStatus

__all__ = ["FleetReport", "check_fleet"]


class FleetReport(msgspec.Struct, kw_only=True):
    devices: int = 0
    monitors: int = 0
    reports_created: int = 0
    reports_confirmed: int = 0  # created and present on the server exactly once
    reports_lost: int = 0
    reports_duplicated: int = 0
    reports_unexpected: int = 0  # on the server under our monitors, created by no device
    mutations_rejected: int = 0
    amendments: int = 0
    conflicts_expected: int = 0
    conflicts_reported: int = 0  # ``conflict`` results the devices received
    conflicts_recorded: int | None = None  # in GET /v1/sync/conflicts (None: no such endpoint)
    attachments_declared: int = 0
    attachments_intact: int = 0
    outbox_left: int = 0
    requests_dropped_before: int = 0
    requests_dropped_after: int = 0
    batches_replayed: int = 0
    replay_mismatches: int = 0
    uploads_interrupted: int = 0
    app_restarts: int = 0
    pull_resets: int = 0
    devices_wiped: int = 0
    verified_by: list[str] = msgspec.field(default_factory=list)
    problems: list[str] = msgspec.field(default_factory=list)
    ok: bool = False


def _same(a: MutationResult, b: MutationResult) -> bool:
    return (a.status, a.reason, a.version, a.received_at, a.conflict_fields) == (
        b.status,
        b.reason,
        b.version,
        b.received_at,
        b.conflict_fields,
    )


def _tally(report: FleetReport, sims: Sequence[SimDevice]) -> None:
    """Counts from the devices themselves: journals, outboxes, chaos statistics."""
    for sim in sims:
        outbox = sim.device.outbox
        journal = {r.mutation_id: r for r in outbox.results()}
        report.reports_created += len(sim.created)
        report.amendments += sim.amended
        report.outbox_left += outbox.depth()
        report.mutations_rejected += sum(
            r.status is MutationStatus.REJECTED for r in journal.values()
        )
        report.conflicts_reported += sum(
            r.status is MutationStatus.CONFLICT for r in journal.values()
        )
        report.requests_dropped_before += sim.stats.dropped_before
        report.requests_dropped_after += sim.stats.dropped_after
        report.batches_replayed += sim.stats.replayed_batches
        report.uploads_interrupted += sim.interrupted_uploads
        report.app_restarts += sim.restarts
        report.pull_resets += sim.pull_resets
        for replayed in sim.stats.replayed_results:
            if not is_final(replayed):
                continue
            first = journal.get(replayed.mutation_id)
            if first is None or not _same(first, replayed):
                report.replay_mismatches += 1


def _pulled_statuses(sim: SimDevice) -> list[ReportStatusChange]:
    changes = sim.device.outbox.pulled("report")
    return [c for c in changes if isinstance(c, ReportStatusChange)]


async def _check_reports(
    report: FleetReport, staff: StaffClient, sims: Sequence[SimDevice]
) -> None:
    by_monitor: dict[uuid.UUID, list[SimDevice]] = {}
    for sim in sims:
        by_monitor.setdefault(sim.monitor.id, []).append(sim)
    report.monitors = len(by_monitor)
    listing = True
    for monitor_id, group in by_monitor.items():
        created = [r for sim in group for r in sim.created]
        wanted = set(created)
        if len(created) != len(wanted):
            report.problems.append(f"monitor {monitor_id}: a report id was generated twice")
        # Every phone of the monitor must have pulled the status of every report of the monitor,
        # with all its media arrived.
        seen_by_all = set(wanted)
        for sim in group:
            statuses = _pulled_statuses(sim)
            seen_by_all &= {c.report_id for c in statuses}
            if incomplete := sum(1 for c in statuses if c.missing_attachments):
                report.problems.append(f"device {sim.index}: {incomplete} reports miss media")
        on_server = seen_by_all
        query = {"monitor_id": str(monitor_id), "limit": "500"}
        listed = await staff.list_all("/v1/reports", query)
        if listed is None:
            listing = False
        else:
            ids = [uuid.UUID(str(item["id"])) for item in listed]
            report.reports_duplicated += len(ids) - len(set(ids))
            report.reports_unexpected += len(set(ids) - wanted)
            on_server &= {i for i in ids if ids.count(i) == 1}
        report.reports_confirmed += len(wanted & on_server)
        report.reports_lost += len(wanted - on_server)
    report.verified_by.append("device_pulls")
    if listing:
        report.verified_by.append("staff_reports")


async def _check_attachments(report: FleetReport, sims: Sequence[SimDevice]) -> None:
    declared = {sha: sim for sim in sims for sha in sim.declared}
    report.attachments_declared = len(declared)
    for sha, sim in declared.items():
        try:
            status = await sim.device.transport.upload_status(sha)
        except SyncError as exc:
            report.problems.append(f"attachment {sha[:12]}: {exc}")
            continue
        report.attachments_intact += int(status.complete and not status.missing)


async def _check_conflicts(
    report: FleetReport, staff: StaffClient, sims: Sequence[SimDevice]
) -> None:
    # The review queue lives at /v1/conflicts; /v1/sync/conflicts was its planned name.
    items = await staff.list_all("/v1/conflicts", {"limit": "500"})
    if items is None:
        items = await staff.list_all("/v1/sync/conflicts")
    if items is None:
        return
    ours = {str(r) for sim in sims for r in sim.created}
    report.conflicts_recorded = sum(
        1 for item in items if "report_id" not in item or str(item["report_id"]) in ours
    )
    report.verified_by.append("staff_conflicts")


async def _check_wipe(report: FleetReport, staff: StaffClient, sim: SimDevice) -> None:
    """Revoke one phone: its next contact must tell it to wipe, and it must then be empty."""
    try:
        await staff.revoke_device(sim.device.identity.device_id)
    except NotFound:
        return
    try:
        await sim.device.pull()
    except DeviceWiped:
        outbox = sim.device.outbox
        if outbox.identity() is None and outbox.depth() == 0 and not outbox.report_ids():
            report.devices_wiped += 1
            return
    report.problems.append(f"device {sim.index} was revoked but not told to wipe")


async def check_fleet(
    staff: StaffClient, sims: Sequence[SimDevice], expected_conflicts: int
) -> FleetReport:
    report = FleetReport(devices=len(sims), conflicts_expected=expected_conflicts)
    _tally(report, sims)
    await _check_reports(report, staff, sims)
    await _check_attachments(report, sims)
    await _check_conflicts(report, staff, sims)
    checks = {
        "reports lost": report.reports_lost,
        "reports duplicated": report.reports_duplicated,
        "unexpected reports": report.reports_unexpected,
        "mutations rejected": report.mutations_rejected,
        "mutations left in outboxes": report.outbox_left,
        "attachments not intact": report.attachments_declared - report.attachments_intact,
        "replayed batches answered differently": report.replay_mismatches,
        "conflicts reported != expected": report.conflicts_reported - expected_conflicts,
    }
    if report.conflicts_recorded is not None:
        checks["conflicts recorded != expected"] = report.conflicts_recorded - expected_conflicts
    report.problems.extend(f"{name}: {value}" for name, value in checks.items() if value)
    if sims:
        await _check_wipe(report, staff, sims[-1])
    report.ok = not report.problems
    return report
