"""The case list for daily work: filters, full-text search, sort orders, keyset pages, counts.

The query is composed from named SQL fragments (``storage/sql/cases.sql``) so that each request
gets a plan for exactly its filters; values always travel as parameters, never in the SQL text.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import AsyncIterator
from typing import Any

import h3
import msgspec

from cases.priority import Priority
from cases.workflow import CaseStatus
from storage.case_links import CELL_RESOLUTIONS
from storage.db import Conn
from storage.errors import StorageError
from storage.queries import Q

__all__ = [
    "CaseFilter",
    "CaseListItem",
    "CaseSort",
    "InvalidFilter",
    "count_by_status",
    "counts_sql",
    "iterate_cases",
    "list_cases",
    "list_sql",
    "sort_key",
]


class InvalidFilter(StorageError):
    """A filter value the list cannot use (e.g. an H3 cell of the wrong resolution)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class CaseSort(enum.StrEnum):
    CREATED = "created"  # newest first
    UPDATED = "updated"  # most recently changed first
    DUE = "due"  # soonest due first
    PRIORITY = "priority"  # most urgent first, then soonest due


class CaseFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: tuple[CaseStatus, ...] = ()
    priority: tuple[Priority, ...] = ()
    assignee_id: uuid.UUID | None = None
    unassigned: bool = False
    categories: tuple[str, ...] = ()
    entity_id: uuid.UUID | None = None
    cell: str | None = None
    created_from: dt.datetime | None = None
    created_to: dt.datetime | None = None
    overdue: bool | None = None
    text: str | None = None


class CaseListItem(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    number: int
    title: str
    status: CaseStatus
    priority: Priority
    assignee_id: uuid.UUID | None
    due_at: dt.datetime
    overdue: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    categories: list[str]
    report_count: int
    occurred_from: dt.datetime | None
    occurred_to: dt.datetime | None
    latitude: float | None
    longitude: float | None
    version: int
    incident_id: uuid.UUID | None


# The keyset of each sort: the row values a page token carries.
SortKey = tuple[Any, ...]


class _Query:
    def __init__(self, org_id: uuid.UUID) -> None:
        self.args: list[Any] = [org_id]
        self.where: list[str] = []

    def param(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, fragment: str, *values: Any) -> None:
        self.where.append(fragment.format(*(self.param(v) for v in values)))


def _filtered(org_id: uuid.UUID, f: CaseFilter, *, with_status: bool = True) -> _Query:
    q = _Query(org_id)
    if f.status and with_status:
        q.add(Q.case_filter_status, [s.value for s in f.status])
    if f.priority:
        q.add(Q.case_filter_priority, [p.value for p in f.priority])
    if f.assignee_id is not None:
        q.add(Q.case_filter_assignee, f.assignee_id)
    if f.unassigned:
        q.add(Q.case_filter_unassigned)
    if f.categories:
        q.add(Q.case_filter_category, list(f.categories))
    if f.entity_id is not None:
        q.add(Q.case_filter_entity, f.entity_id)
    if f.cell is not None:
        if not h3.is_valid_cell(f.cell) or h3.get_resolution(f.cell) not in CELL_RESOLUTIONS:
            raise InvalidFilter(
                "cell",
                f"an H3 cell of resolution {CELL_RESOLUTIONS[0]} to {CELL_RESOLUTIONS[-1]}",
            )
        q.add(Q.case_filter_cell, f.cell)
    if f.created_from is not None:
        q.add(Q.case_filter_created_from, f.created_from)
    if f.created_to is not None:
        q.add(Q.case_filter_created_to, f.created_to)
    if f.overdue is True:
        q.add(Q.case_filter_overdue)
    elif f.overdue is False:
        q.add(Q.case_filter_not_overdue)
    if f.text is not None and f.text.strip():
        q.add(Q.case_filter_search, f.text.strip())
    return q


_AFTER = {
    CaseSort.CREATED: "case_after_created",
    CaseSort.UPDATED: "case_after_updated",
    CaseSort.DUE: "case_after_due",
    CaseSort.PRIORITY: "case_after_priority",
}


def sort_key(item: CaseListItem, sort: CaseSort) -> SortKey:
    """The values of ``item`` that the next page starts after."""
    if sort is CaseSort.CREATED:
        return (item.created_at, item.id)
    if sort is CaseSort.UPDATED:
        return (item.updated_at, item.id)
    if sort is CaseSort.DUE:
        return (item.due_at, item.id)
    return (item.priority.rank, item.due_at, item.id)


def list_sql(
    org_id: uuid.UUID, f: CaseFilter, sort: CaseSort, after: SortKey | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and arguments of one page (also used by the benchmark to EXPLAIN it)."""
    q = _filtered(org_id, f)
    if after is not None:
        q.add(getattr(Q, _AFTER[sort]), *after)
    sql = " AND ".join([Q.case_list_select, *q.where])
    sql += "\n" + getattr(Q, f"case_order_{sort.value}") + f"\nLIMIT {q.param(limit)}"
    return sql, q.args


async def list_cases(
    conn: Conn,
    org_id: uuid.UUID,
    f: CaseFilter,
    *,
    sort: CaseSort = CaseSort.CREATED,
    after: SortKey | None = None,
    limit: int = 50,
) -> list[CaseListItem]:
    sql, args = list_sql(org_id, f, sort, after, limit)
    rows = await conn.fetch(sql, *args)
    return [msgspec.convert(dict(r), CaseListItem, strict=False) for r in rows]


def counts_sql(org_id: uuid.UUID, f: CaseFilter) -> tuple[str, list[Any]]:
    q = _filtered(org_id, f, with_status=False)
    sql = " AND ".join([Q.case_counts_select, *q.where]) + "\nGROUP BY c.status"
    return sql, q.args


async def count_by_status(conn: Conn, org_id: uuid.UUID, f: CaseFilter) -> dict[str, int]:
    """Cases per state under every filter except the state filter itself (for the tabs)."""
    sql, args = counts_sql(org_id, f)
    counts = {s.value: 0 for s in CaseStatus}
    for row in await conn.fetch(sql, *args):
        counts[row["status"]] = row["n"]
    return counts


async def iterate_cases(
    conn: Conn, org_id: uuid.UUID, f: CaseFilter, *, sort: CaseSort, page_size: int = 1000
) -> AsyncIterator[CaseListItem]:
    """Every matching case, fetched a keyset page at a time (for exports)."""
    after: SortKey | None = None
    while True:
        page = await list_cases(conn, org_id, f, sort=sort, after=after, limit=page_size)
        for item in page:
            yield item
        if len(page) < page_size:
            return
        after = sort_key(page[-1], sort)
