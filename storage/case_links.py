"""What a case is about: its reports, entities and persons, and the hooks matching calls.

A case opened from an incident follows that incident's reports. The matching engine calls
``open_case_for_incident`` when it creates an incident, ``on_incident_merged`` when it merges two
and ``on_incident_split`` when it splits (or unmerges) one, each after it has updated
``incident_members`` and in the same transaction; each is idempotent. Every link change is on the
timeline, and the case's priority is derived again from its reports unless a person set it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import h3

from cases.priority import PriorityAssessment, derive_priority
from cases.taxonomy import Taxonomy, load_taxonomy
from cases.workflow import (
    CaseStatus,
    ClosureOutcome,
    TransitionCommand,
    TransitionRefused,
    change_priority,
    transition,
)
from cases.workflow import create_case as start_case
from storage.cases import Case, CaseActor, CaseWriter, get_case, insert_case, load_sla
from storage.db import Conn
from storage.errors import NotFound, StorageError
from storage.queries import Q

__all__ = [
    "CELL_RESOLUTIONS",
    "MATCHING",
    "ReportInOtherCase",
    "create_case",
    "link_entity",
    "link_person",
    "link_reports",
    "list_links",
    "on_incident_merged",
    "on_incident_split",
    "open_case_for_incident",
    "report_cells",
    "unlink_report",
]

# The region filter accepts an H3 cell at any of these resolutions (country-sized to district).
CELL_RESOLUTIONS = range(3, 8)
MATCHING = CaseActor.system("matching")
# The follow-up of a report's change (amendment, withdrawal): its cases' derived priority.
REPORT_CHANGE = CaseActor.system("report_change")


class ReportInOtherCase(StorageError):
    """A report is already followed in another case; unlink it there first."""

    def __init__(self, report_ids: list[uuid.UUID]) -> None:
        super().__init__(
            "reports already followed in another case: " + ", ".join(map(str, report_ids))
        )
        self.report_ids = report_ids


def report_cells(lat: float, lon: float) -> list[str]:
    """The report's H3 cell at every resolution the region filter accepts."""
    finest = h3.latlng_to_cell(lat, lon, CELL_RESOLUTIONS[-1])
    return [str(h3.cell_to_parent(finest, r)) for r in CELL_RESOLUTIONS]


def _assess(rows: Iterable[Any], taxonomy: Taxonomy) -> PriorityAssessment:
    categories: list[str] = []
    severity: int | None = None
    workers: int | None = None
    for row in rows:
        categories += row["categories"]
        severity = max(severity or 0, row["severity"] or 0) or None
        workers = max(workers or 0, row["workers_affected"] or 0) or None
    return derive_priority(categories, taxonomy, report_severity=severity, workers_affected=workers)


async def _link_rows(
    conn: Conn,
    org_id: uuid.UUID,
    case_id: uuid.UUID,
    report_ids: Sequence[uuid.UUID],
    actor: CaseActor,
    *,
    steal: bool,
) -> tuple[list[uuid.UUID], dict[uuid.UUID, list[uuid.UUID]]]:
    """Link reports to the case. Returns those newly linked and, per case, those moved from it."""
    rows = await conn.fetch(Q.case_reports_to_link, org_id, list(report_ids))
    found = {r["id"]: r for r in rows}
    missing = [r for r in report_ids if r not in found]
    if missing:
        raise NotFound("report", missing[0])
    taken = [r["id"] for r in rows if r["case_id"] not in (None, case_id)]
    if taken and not steal:
        raise ReportInOtherCase(sorted(taken))
    linked: list[uuid.UUID] = []
    moved: dict[uuid.UUID, list[uuid.UUID]] = {}
    for rid in dict.fromkeys(report_ids):
        row = found[rid]
        if row["case_id"] == case_id:
            continue
        if row["case_id"] is not None:
            moved.setdefault(row["case_id"], []).append(rid)
        cells = report_cells(row["latitude"], row["longitude"])
        await conn.execute(Q.case_report_link, rid, org_id, case_id, cells, actor.label)
        linked.append(rid)
    await conn.execute(Q.case_refresh, case_id)
    return linked, moved


async def create_case(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    actor: CaseActor,
    report_ids: Sequence[uuid.UUID],
    title: str = "",
    taxonomy: Taxonomy | None = None,
    incident_id: uuid.UUID | None = None,
    now: dt.datetime | None = None,
) -> Case | None:
    """A new case following ``report_ids`` (None if the incident already has its case)."""
    taxonomy = taxonomy or load_taxonomy()
    now = now or dt.datetime.now(dt.UTC)
    async with conn.transaction():
        facts = await conn.fetch(Q.case_report_facts, org_id, list(report_ids))
        assessment = _assess(facts, taxonomy)
        started = start_case(
            str(uuid.uuid4()),
            assessment.priority,
            actor.workflow,
            now,
            sla=await load_sla(conn, org_id),
        )
        case_id = await insert_case(
            conn,
            org_id=org_id,
            incident_id=incident_id,
            title=title,
            state=started.case,
            reasons=assessment.reasons,
            priority_manual=False,
            event=started.event,
            actor=actor,
            detail={"reports": [str(r) for r in report_ids]},
        )
        if case_id is None:
            return None
        _, moved = await _link_rows(
            conn, org_id, case_id, report_ids, actor, steal=incident_id is not None
        )
        await _record_moves(conn, org_id, case_id, moved, actor)
        return await get_case(conn, org_id, case_id)


async def _record_moves(
    conn: Conn,
    org_id: uuid.UUID,
    into: uuid.UUID,
    moved: dict[uuid.UUID, list[uuid.UUID]],
    actor: CaseActor,
) -> None:
    for source, reports in moved.items():
        await conn.execute(Q.case_refresh, source)
        writer = await CaseWriter.lock(conn, org_id, source, None)
        await writer.record(
            "reports_moved_out", actor, {"to_case": str(into), "reports": [str(r) for r in reports]}
        )


async def _rederive(conn: Conn, writer: CaseWriter, actor: CaseActor, taxonomy: Taxonomy) -> None:
    """Derive the priority again from the case's reports, unless a person chose it."""
    case = writer.case
    if case.priority_manual or case.status is CaseStatus.CLOSED:
        return
    assessment = _assess(await conn.fetch(Q.case_member_facts, case.id), taxonomy)
    try:
        changed = change_priority(
            case.state,
            assessment.priority,
            actor.workflow,
            dt.datetime.now(dt.UTC),
            reason="derived from the case's reports",
            sla=await load_sla(conn, case.org_id),
        )
    except TransitionRefused:
        return  # unchanged
    await writer.apply(changed.case, changed.event, actor, reasons=assessment.reasons)


async def follow_report_change(
    conn: Conn, org_id: uuid.UUID, report_id: uuid.UUID, taxonomy: Taxonomy | None = None
) -> None:
    """A report changed (amended, withdrawn): the case holding it takes the report's current
    place into its region cells (computed here, so not by the summary trigger; a withdrawn
    report's place leaves them) and derives its priority again, unless a person chose it or
    the case is closed. A severity raised to 5 on a phone raises the case, a report moved to
    another district is found by that district's filter, and a withdrawn report no longer
    holds the case up."""
    taxonomy = taxonomy or load_taxonomy()
    for row in await conn.fetch(Q.cases_of_report, org_id, report_id):
        writer = await CaseWriter.lock(conn, org_id, row["case_id"], None)
        cells = [] if row["withdrawn"] else report_cells(row["latitude"], row["longitude"])
        await conn.execute(Q.case_report_cells, org_id, report_id, cells)
        await conn.execute(Q.case_refresh, row["case_id"])
        await _rederive(conn, writer, REPORT_CHANGE, taxonomy)


async def link_reports(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    report_ids: Sequence[uuid.UUID],
    taxonomy: Taxonomy | None = None,
) -> Case:
    """Follow more reports in a case (refused for reports another case already follows)."""
    case = writer.case
    linked, _ = await _link_rows(conn, case.org_id, case.id, report_ids, actor, steal=False)
    await writer.record("reports_linked", actor, {"reports": [str(r) for r in linked]})
    await _rederive(conn, writer, actor, taxonomy or load_taxonomy())
    return writer.case


async def unlink_report(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    report_id: uuid.UUID,
    taxonomy: Taxonomy | None = None,
) -> Case:
    case = writer.case
    if await conn.fetchval(Q.case_report_unlink, case.org_id, case.id, report_id) is None:
        raise NotFound("case report", report_id)
    await conn.execute(Q.case_refresh, case.id)
    await writer.record("report_unlinked", actor, {"report": str(report_id)})
    await _rederive(conn, writer, actor, taxonomy or load_taxonomy())
    return writer.case


async def link_entity(
    conn: Conn, writer: CaseWriter, actor: CaseActor, entity_id: uuid.UUID, role: str
) -> Case:
    case = writer.case
    if not await conn.fetchval(Q.case_entity_exists, case.org_id, entity_id):
        raise NotFound("entity", entity_id)
    if await conn.fetchval(Q.case_entity_link, case.org_id, case.id, entity_id, role, actor.label):
        await writer.record("entity_linked", actor, {"entity": str(entity_id), "role": role})
    return writer.case


async def link_person(
    conn: Conn, writer: CaseWriter, actor: CaseActor, person_id: uuid.UUID
) -> Case:
    case = writer.case
    if not await conn.fetchval(Q.case_person_exists, case.org_id, person_id):
        raise NotFound("person", person_id)
    if await conn.fetchval(Q.case_person_link, case.org_id, case.id, person_id, actor.label):
        await writer.record("person_linked", actor, {"person": str(person_id)})
    return writer.case


async def list_links(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[dict[str, Any]]:
    """Reports, entities and persons of a case; ``source`` says whether staff or matching linked."""
    await get_case(conn, org_id, case_id)
    return [dict(r) for r in await conn.fetch(Q.case_links, org_id, case_id)]


async def open_case_for_incident(
    conn: Conn, *, org_id: uuid.UUID, incident_id: uuid.UUID, taxonomy: Taxonomy | None = None
) -> uuid.UUID | None:
    """The case following ``incident_id``, opened if there is none yet. Idempotent.

    The incident's reports are brought into the case, except those a person put in a case:
    matching never takes a report out of a case a person linked it to (only a person unlinks
    it). If one case a person made holds all of them, that case becomes the incident's case
    instead; if every report is held that way but in cases following other incidents, no case
    is opened (an empty one would only clutter the queue) and None is returned.
    """
    taxonomy = taxonomy or load_taxonomy()
    async with conn.transaction():
        if not await conn.fetchval(Q.case_incident_exists, org_id, incident_id):
            raise NotFound("incident", incident_id)
        members = await conn.fetch(Q.case_incident_reports, org_id, incident_id)
        existing = await conn.fetchval(Q.case_by_incident, org_id, incident_id)
        if existing is None:
            manual = {m["case_id"] for m in members if m["case_id"] is not None}
            if members and len(manual) == 1 and all(m["case_incident"] is None for m in members):
                adopted = manual.pop()
                if all(m["case_id"] == adopted for m in members):
                    await conn.execute(Q.case_set_incident, org_id, adopted, incident_id, None)
                    writer = await CaseWriter.lock(conn, org_id, adopted, None)
                    await writer.record(
                        "incident_attached", MATCHING, {"incident": str(incident_id)}
                    )
                    return uuid.UUID(str(adopted))
        takeable = [
            m["report_id"]
            for m in members
            if m["case_id"] is None
            or (m["case_incident"] not in (None, incident_id) and not m["linked_by_person"])
        ]
        if existing is None and members and not takeable:
            return None
        if existing is None:
            created = await create_case(
                conn,
                org_id=org_id,
                actor=MATCHING,
                report_ids=takeable,
                taxonomy=taxonomy,
                incident_id=incident_id,
            )
            if created is not None:
                return created.id
            # Another transaction opened it first (the unique index made us wait for it).
            existing = await conn.fetchval(Q.case_by_incident, org_id, incident_id)
        case_id = uuid.UUID(str(existing))
        takeable = [r for r in takeable if r not in await _members(conn, case_id)]
        if takeable:
            writer = await CaseWriter.lock(conn, org_id, case_id, None)
            linked, moved = await _link_rows(conn, org_id, case_id, takeable, MATCHING, steal=True)
            await writer.record("reports_linked", MATCHING, {"reports": [str(r) for r in linked]})
            await _record_moves(conn, org_id, case_id, moved, MATCHING)
            await _rederive(conn, writer, MATCHING, taxonomy)
        return case_id


async def _members(conn: Conn, case_id: uuid.UUID) -> set[uuid.UUID]:
    return {r["report_id"] for r in await conn.fetch(Q.case_report_ids, case_id)}


async def on_incident_merged(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    kept_incident: uuid.UUID,
    merged_incident: uuid.UUID,
    taxonomy: Taxonomy | None = None,
) -> uuid.UUID | None:
    """Matching merged ``merged_incident`` into ``kept_incident``: one case follows both.

    The merged incident's case hands its reports (and hand-made entity and person links) to the
    kept incident's case and points to it; if nobody has triaged it yet it is closed as a
    duplicate, otherwise a person decides what to do with it. Returns the kept case. If no case
    follows the kept incident (people hold all its reports in their own cases), the merged
    incident's case follows it instead.
    """
    taxonomy = taxonomy or load_taxonomy()
    async with conn.transaction():
        merged_case = await conn.fetchval(Q.case_by_incident, org_id, merged_incident)
        handed = await _members(conn, merged_case) if merged_case is not None else set()
        kept_case = await open_case_for_incident(
            conn, org_id=org_id, incident_id=kept_incident, taxonomy=taxonomy
        )
        if kept_case is None:
            if merged_case is not None:
                await conn.execute(Q.case_set_incident, org_id, merged_case, kept_incident, None)
                writer = await CaseWriter.lock(conn, org_id, merged_case, None)
                await writer.record("incident_attached", MATCHING, {"incident": str(kept_incident)})
            return uuid.UUID(str(merged_case)) if merged_case is not None else None
        kept = await CaseWriter.lock(conn, org_id, kept_case, None)
        moved = sorted(handed)
        if merged_case is not None and merged_case != kept_case:
            remaining = sorted(await _members(conn, merged_case))
            if remaining:
                await _link_rows(conn, org_id, kept_case, remaining, MATCHING, steal=True)
            await conn.execute(Q.case_copy_links, org_id, merged_case, kept_case, MATCHING.label)
            await conn.execute(Q.case_refresh, merged_case)
            await conn.execute(Q.case_set_incident, org_id, merged_case, None, kept_case)
            await _retire_merged(conn, org_id, merged_case, kept.case)
        await kept.record(
            "merged_from_matching",
            MATCHING,
            {
                "merged_incident": str(merged_incident),
                "merged_case": str(merged_case) if merged_case else None,
                "reports": [str(r) for r in moved],
            },
        )
        await _rederive(conn, kept, MATCHING, taxonomy)
        return kept_case


async def _retire_merged(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID, into: Case) -> None:
    writer = await CaseWriter.lock(conn, org_id, case_id, None)
    await writer.record(
        "merged_from_matching", MATCHING, {"into_case": str(into.id), "into_number": into.number}
    )
    if writer.case.status is CaseStatus.NEW:
        closed = transition(
            writer.case.state,
            TransitionCommand(
                to=CaseStatus.CLOSED,
                outcome=ClosureOutcome.DUPLICATE,
                reason=f"merged into case {into.number} by matching",
            ),
            MATCHING.workflow,
            dt.datetime.now(dt.UTC),
        )
        await writer.apply(closed.case, closed.event, MATCHING)


async def on_incident_split(
    conn: Conn,
    *,
    org_id: uuid.UUID,
    source_incident: uuid.UUID,
    new_incidents: Sequence[uuid.UUID],
    taxonomy: Taxonomy | None = None,
) -> list[uuid.UUID | None]:
    """Matching split reports of ``source_incident`` off into ``new_incidents`` (or undid a merge).

    Each new incident gets its case (opened if needed) and takes its reports from the source's
    case, except those a person linked there; both sides record the split. Returns the cases of
    ``new_incidents``, in order (None where no case follows one: see `open_case_for_incident`).
    """
    taxonomy = taxonomy or load_taxonomy()
    async with conn.transaction():
        source_case = await conn.fetchval(Q.case_by_incident, org_id, source_incident)
        before = await _members(conn, source_case) if source_case is not None else set()
        cases: list[uuid.UUID | None] = []
        for incident in new_incidents:
            new_case = await open_case_for_incident(
                conn, org_id=org_id, incident_id=incident, taxonomy=taxonomy
            )
            cases.append(new_case)
            if new_case is None:
                continue
            writer = await CaseWriter.lock(conn, org_id, new_case, None)
            taken = sorted(before & await _members(conn, new_case))
            await writer.record(
                "split_by_matching",
                MATCHING,
                {
                    "from_incident": str(source_incident),
                    "from_case": str(source_case) if source_case else None,
                    "reports": [str(r) for r in taken],
                },
            )
        if source_case is not None:
            writer = await CaseWriter.lock(conn, org_id, source_case, None)
            await writer.record(
                "split_by_matching",
                MATCHING,
                {
                    "new_incidents": [str(i) for i in new_incidents],
                    "new_cases": [str(c) if c else None for c in cases],
                    "reports": [str(r) for r in sorted(before - await _members(conn, source_case))],
                },
            )
            await _rederive(conn, writer, MATCHING, taxonomy)
        return cases
