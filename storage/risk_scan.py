"""From loaded reports to scan findings: one space-time scan per scope (all categories, then
each high-priority group) and one entity surge scan per role and scope, with the member reports
of every cluster. Every finding carries its scan's own p-value and the run-level, family-wise
one (Bonferroni over the run's scans, ``cases.risk.family``) that alerts use. Pure computation
(no database): the run executor calls it in a thread."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Literal

import h3
import msgspec
import numpy as np

from cases.classification import ANALYST_CELL_RESOLUTION
from cases.risk import (
    CaseCounts,
    SpaceTimeParams,
    SurgeParams,
    family_p_value,
    family_replicas,
    recurrence_interval,
    scan_entity_surge,
    scan_space_time,
)
from cases.taxonomy import Taxonomy
from storage.risk import ScanParams

__all__ = [
    "MAX_CLUSTERS_STORED",
    "EntityNode",
    "Finding",
    "ScanData",
    "ScanReport",
    "ScanScope",
    "analyst_cells",
    "effective_radius_km",
    "group_by_entity",
    "run_scans",
    "scopes_for",
]

MAX_CLUSTERS_STORED = 500
"""Clusters kept per scan in a run's results (ranked by LLR); the rest are counted only."""

Role = Literal["employer", "recruiter"]
ROLES: tuple[Role, ...] = ("employer", "recruiter")


class ScanReport(msgspec.Struct, frozen=True):
    id: uuid.UUID
    monitor_id: uuid.UUID
    device_id: uuid.UUID
    latitude: float
    longitude: float
    categories: tuple[str, ...]
    day: date
    received_at: datetime
    accuracy_m: float | None
    country: str | None


class EntityNode(msgspec.Struct, frozen=True):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    name: str
    kind: str


class ScanData(msgspec.Struct, frozen=True):
    """Everything a run reads, loaded in one transaction snapshot."""

    reports: list[ScanReport]
    links: dict[uuid.UUID, dict[str, uuid.UUID]]  # report id -> role -> entity id
    entities: dict[uuid.UUID, EntityNode]  # linked entities and all their ancestors
    study_start: date
    analysis_date: date


class ScanScope(msgspec.Struct, frozen=True):
    key: str  # 'all', 'group:<code>' or 'categories:<codes>'
    categories: frozenset[str] | None  # None: every category


class Finding(msgspec.Struct, kw_only=True):
    """One cluster, with what the alert step needs; ``members`` index ``ScanData.reports``.

    ``p_value`` and ``recurrence_interval_days`` are the run-level (family-wise) figures over the
    ``scans_in_run`` scans of the run, which the alert threshold applies to; ``scan_p_value`` and
    ``scan_recurrence_interval_days`` are the scan's own."""

    kind: Literal["space_time", "entity_surge"]
    scope: ScanScope
    window_start: date
    window_end: date
    observed: int
    expected: float
    ratio: float
    llr: float
    p_value: float | None
    recurrence_interval_days: float | None
    replicas: int
    members: list[int]
    monitors: int
    method: str
    cells: list[str] = []
    centre_cell: str | None = None
    radius_km: float | None = None
    role: Role | None = None
    entity_id: uuid.UUID | None = None
    entity_path: list[uuid.UUID] = []
    scan_p_value: float | None = None
    scan_recurrence_interval_days: float | None = None
    scans_in_run: int = 1


def effective_radius_km(params: ScanParams) -> float:
    """The radius cap: ``max_radius_km``, tightened to K rings of H3 neighbours if K is set."""
    if params.max_rings is None:
        return params.max_radius_km
    spacing = math.sqrt(3.0) * float(h3.average_hexagon_edge_length(params.h3_resolution, "km"))
    # A little slack: cell-centre spacing varies a few percent across the globe.
    return min(params.max_radius_km, params.max_rings * spacing * 1.05)


def analyst_cells(cells: Iterable[str]) -> list[str]:
    """Cells no finer than analysts may see (``cases.classification``), deduplicated, sorted."""
    out = set()
    for cell in cells:
        res = h3.get_resolution(cell)
        out.add(
            cell
            if res <= ANALYST_CELL_RESOLUTION
            else h3.cell_to_parent(cell, ANALYST_CELL_RESOLUTION)
        )
    return sorted(out)


def scopes_for(params: ScanParams, taxonomy: Taxonomy) -> list[ScanScope]:
    if params.categories:
        codes = sorted({_canonical(taxonomy, c) for c in params.categories})
        return [ScanScope("categories:" + ",".join(codes), frozenset(codes))]
    scopes = [ScanScope("all", None)]
    for group in taxonomy.priority_groups:
        scopes.append(ScanScope(f"group:{group.code}", frozenset(group.categories)))
    return scopes


def _canonical(taxonomy: Taxonomy, code: str) -> str:
    return taxonomy.canonical_code(code) if code in taxonomy else code


def canonical_categories(taxonomy: Taxonomy, report: ScanReport) -> set[str]:
    return {_canonical(taxonomy, c) for c in report.categories}


def run_scans(
    data: ScanData, params: ScanParams, taxonomy: Taxonomy, threshold_days: float
) -> tuple[list[dict[str, Any]], list[Finding]]:
    """Every scan of the run: results as stored and returned, and all findings.

    The family counts the scans that can find a cluster at all (at least ``min_reports``
    reports); each of them runs ``family_replicas`` replicas, so that a run-level recurrence
    interval of ``threshold_days`` stays reachable."""
    cats = [canonical_categories(taxonomy, r) for r in data.reports]
    # (scope, role or None for the space-time scan, the reports it scans)
    planned: list[tuple[ScanScope, Role | None, list[int]]] = []
    for scope in scopes_for(params, taxonomy):
        chosen = [i for i, c in enumerate(cats) if scope.categories is None or c & scope.categories]
        planned.append((scope, None, chosen))
        if params.entity_scan:
            planned.extend((scope, r, [i for i, _ in _linked(data, chosen, r)]) for r in ROLES)
    scans = sum(1 for _, _, chosen in planned if len(chosen) >= params.min_reports)
    replicas = family_replicas(params.replicas, scans, threshold_days)
    results: list[dict[str, Any]] = []
    findings: list[Finding] = []
    for scope, role, chosen in planned:
        if role is None:
            found, summary = _space_time(data, chosen, scope, params, replicas)
        else:
            linked = [(i, data.links[data.reports[i].id][role]) for i in chosen]
            found, summary = _surge(data, linked, scope, role, params, replicas)
        for f in found:
            _adjust(f, scans)
        summary.update(scans_in_run=scans, replicas=replicas if summary["method"] else 0)
        findings.extend(found)
        results.append(_summary(summary, found, data, threshold_days))
    return results, findings


def _adjust(f: Finding, scans: int) -> None:
    f.scan_p_value = f.p_value
    f.scan_recurrence_interval_days = f.recurrence_interval_days
    f.scans_in_run = scans
    f.p_value = family_p_value(f.scan_p_value, scans)
    f.recurrence_interval_days = recurrence_interval(f.p_value)


def _day_index(data: ScanData, day: date) -> int:
    return (day - data.study_start).days


def _date(data: ScanData, index: int) -> date:
    return data.study_start + timedelta(days=index)


def _space_time(
    data: ScanData, chosen: Sequence[int], scope: ScanScope, params: ScanParams, replicas: int
) -> tuple[list[Finding], dict[str, Any]]:
    study_days = (data.analysis_date - data.study_start).days + 1
    cell_of = [
        h3.latlng_to_cell(data.reports[i].latitude, data.reports[i].longitude, params.h3_resolution)
        for i in chosen
    ]
    cells = sorted(set(cell_of))
    loc_index = {c: k for k, c in enumerate(cells)}
    monitors: dict[uuid.UUID, int] = {}
    unit = np.array([loc_index[c] for c in cell_of], dtype=np.int64)
    day = np.array([_day_index(data, data.reports[i].day) for i in chosen], dtype=np.int64)
    monitor = np.array(
        [monitors.setdefault(data.reports[i].monitor_id, len(monitors)) for i in chosen],
        dtype=np.int64,
    )
    summary: dict[str, Any] = {
        "kind": "space_time",
        "scope": scope.key,
        "role": None,
        "total_reports": len(chosen),
        "locations": len(cells),
        "cell_resolution": params.h3_resolution,
        "max_radius_km": effective_radius_km(params),
    }
    if len(chosen) < params.min_reports:
        summary.update(method=None, zones=0, replicas_run=0, stopped_early=False)
        return [], summary
    locations = np.array([h3.cell_to_latlng(c) for c in cells], dtype=np.float64).reshape(-1, 2)
    result = scan_space_time(
        locations,
        CaseCounts.of(unit, day, None, monitor),
        SpaceTimeParams(
            study_days=study_days,
            max_window_days=min(params.max_window_days, study_days),
            max_radius_km=effective_radius_km(params),
            min_cases=params.min_reports,
            min_monitors=params.min_monitors,
            replicas=replicas,
            seed=params.seed or 0,
            max_neighbours=params.k_nearest,
        ),
    )
    summary.update(
        method=result.method,
        zones=result.zones,
        replicas_run=result.replicas_run,
        stopped_early=result.stopped_early,
    )
    found = []
    for cluster in result.clusters:
        in_cluster = (
            np.isin(unit, cluster.locations) & (day >= cluster.start_day) & (day <= cluster.end_day)
        )
        members = [chosen[k] for k in np.flatnonzero(in_cluster).tolist()]
        found.append(
            Finding(
                kind="space_time",
                scope=scope,
                window_start=_date(data, cluster.start_day),
                window_end=_date(data, cluster.end_day),
                observed=cluster.observed,
                expected=cluster.expected,
                ratio=cluster.ratio,
                llr=cluster.llr,
                p_value=cluster.p_value,
                recurrence_interval_days=cluster.recurrence_interval_days,
                replicas=result.replicas_run,
                members=members,
                monitors=cluster.monitors,
                method=result.method,
                cells=[cells[k] for k in cluster.locations],
                centre_cell=cells[cluster.centre],
                radius_km=cluster.radius_km,
            )
        )
    return found, summary


def _linked(data: ScanData, chosen: Sequence[int], role: Role) -> list[tuple[int, uuid.UUID]]:
    """(report index, entity) for the chosen reports linked to a known entity in ``role``."""
    return [
        (i, data.links[data.reports[i].id][role])
        for i in chosen
        if role in data.links.get(data.reports[i].id, {})
        and data.links[data.reports[i].id][role] in data.entities
    ]


def _surge(
    data: ScanData,
    linked: Sequence[tuple[int, uuid.UUID]],
    scope: ScanScope,
    role: Role,
    params: ScanParams,
    replicas: int,
) -> tuple[list[Finding], dict[str, Any]]:
    study_days = (data.analysis_date - data.study_start).days + 1
    nodes: dict[uuid.UUID, int] = {}
    paths: dict[uuid.UUID, list[uuid.UUID]] = {}
    for _, entity in linked:
        if entity not in paths:
            paths[entity] = _path(data.entities, entity)
            for node in paths[entity]:
                nodes.setdefault(node, len(nodes))
    order = list(nodes)
    parent = []
    for n in order:
        up = data.entities[n].parent_id
        parent.append(-1 if up is None else nodes.get(up, -1))
    summary: dict[str, Any] = {
        "kind": "entity_surge",
        "scope": scope.key,
        "role": role,
        "total_reports": len(linked),
        "nodes": len(order),
    }
    if len(linked) < params.min_reports:
        summary.update(method=None, replicas_run=0, stopped_early=False)
        return [], summary
    unit = np.array([nodes[e] for _, e in linked], dtype=np.int64)
    day = np.array([_day_index(data, data.reports[i].day) for i, _ in linked], dtype=np.int64)
    result = scan_entity_surge(
        np.array(parent, dtype=np.int64),
        CaseCounts.of(unit, day),
        SurgeParams(
            study_days=study_days,
            max_window_days=min(params.max_window_days, study_days),
            min_cases=params.min_reports,
            replicas=replicas,
            seed=params.seed or 0,
        ),
    )
    summary.update(
        method=result.method, replicas_run=result.replicas_run, stopped_early=result.stopped_early
    )
    # Which linked reports each node's group holds: the reports of the node and its descendants.
    under: dict[uuid.UUID, list[int]] = defaultdict(list)
    for k, (_, entity) in enumerate(linked):
        for node in paths[entity]:
            under[node].append(k)
    found = []
    for surge in result.surges:
        node = order[surge.node]
        members = [linked[k][0] for k in under[node] if surge.start_day <= day[k] <= surge.end_day]
        found.append(
            Finding(
                kind="entity_surge",
                scope=scope,
                window_start=_date(data, surge.start_day),
                window_end=_date(data, surge.end_day),
                observed=surge.observed,
                expected=surge.expected,
                ratio=surge.ratio,
                llr=surge.llr,
                p_value=surge.p_value,
                recurrence_interval_days=surge.recurrence_interval_days,
                replicas=result.replicas_run,
                members=members,
                monitors=len({data.reports[i].monitor_id for i in members}),
                method=result.method,
                role=role,
                entity_id=node,
                entity_path=_path(data.entities, node),
                cells=sorted(
                    {
                        h3.latlng_to_cell(
                            data.reports[i].latitude,
                            data.reports[i].longitude,
                            ANALYST_CELL_RESOLUTION,
                        )
                        for i in members
                    }
                ),
            )
        )
    return found, summary


def _path(entities: dict[uuid.UUID, EntityNode], entity: uuid.UUID) -> list[uuid.UUID]:
    """Root first, ``entity`` last; stops at an unknown parent or a cycle."""
    path: list[uuid.UUID] = []
    current: uuid.UUID | None = entity
    while current is not None and current in entities and current not in path:
        path.append(current)
        current = entities[current].parent_id
    return path[::-1]


def _summary(
    summary: dict[str, Any], found: list[Finding], data: ScanData, threshold_days: float
) -> dict[str, Any]:
    clusters = [_cluster_json(f, data, threshold_days) for f in found[:MAX_CLUSTERS_STORED]]
    return {
        **summary,
        "clusters_found": len(found),
        "clusters": clusters,
    }


def _cluster_json(f: Finding, data: ScanData, threshold_days: float) -> dict[str, Any]:
    ri = f.recurrence_interval_days
    out: dict[str, Any] = {
        "window_start": f.window_start.isoformat(),
        "window_end": f.window_end.isoformat(),
        "observed": f.observed,
        "expected": f.expected,
        "ratio": f.ratio,
        "llr": f.llr,
        "p_value": f.p_value,
        "recurrence_interval_days": ri,
        "above_threshold": ri is not None and ri >= threshold_days,
        "scan_p_value": f.scan_p_value,
        "scan_recurrence_interval_days": f.scan_recurrence_interval_days,
        "monitors": f.monitors,
        "member_report_ids": sorted(str(data.reports[i].id) for i in f.members),
    }
    if f.kind == "space_time":
        out.update(
            cells=analyst_cells(f.cells),
            centre_cell=analyst_cells([f.centre_cell])[0] if f.centre_cell else None,
            radius_km=f.radius_km,
        )
    else:
        node = data.entities[f.entity_id] if f.entity_id else None
        out.update(
            entity_id=str(f.entity_id),
            entity_name=node.name if node else None,
            entity_kind=node.kind if node else None,
            entity_path=[str(e) for e in f.entity_path],
            cells=f.cells,
        )
    return out


def group_by_entity(data: ScanData, members: Iterable[int]) -> list[dict[str, Any]]:
    """The registry entities linked to ``members``, with how many member reports name each."""
    counts: dict[tuple[uuid.UUID, str], int] = defaultdict(int)
    for i in members:
        for role, entity in data.links.get(data.reports[i].id, {}).items():
            counts[(entity, role)] += 1
    out = []
    for (entity, role), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0][0]))):
        node = data.entities.get(entity)
        out.append(
            {
                "entity_id": str(entity),
                "role": role,
                "name": node.name if node else None,
                "kind": node.kind if node else None,
                "reports": n,
            }
        )
    return out[:50]
