"""The case list's filter query parameters, one dependency shared by the list and the exports, so
an export always selects exactly the cases the list shows for the same query string."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, QueryParameter

from cases.priority import Priority
from cases.workflow import CaseStatus
from storage.case_list import CaseFilter

__all__ = ["CaseFilters", "provide_case_filters"]


def case_filters(
    status: FromQuery[list[CaseStatus] | None] = None,
    priority: FromQuery[list[Priority] | None] = None,
    assignee_id: FromQuery[uuid.UUID | None] = None,
    unassigned: FromQuery[bool] = False,
    category: FromQuery[list[str] | None] = None,
    entity_id: FromQuery[uuid.UUID | None] = None,
    cell: Annotated[str | None, QueryParameter(max_length=20)] = None,
    created_from: FromQuery[dt.datetime | None] = None,
    created_to: FromQuery[dt.datetime | None] = None,
    overdue: FromQuery[bool | None] = None,
    q: Annotated[str | None, QueryParameter(max_length=200)] = None,
) -> CaseFilter:
    return CaseFilter(
        status=tuple(status or ()),
        priority=tuple(priority or ()),
        assignee_id=assignee_id,
        unassigned=unassigned,
        categories=tuple(category or ()),
        entity_id=entity_id,
        cell=cell,
        created_from=created_from,
        created_to=created_to,
        overdue=overdue,
        text=q,
    )


# Routes declare ``filters: CaseFilters`` and ``dependencies={"filters": provide_case_filters}``.
CaseFilters = NamedDependency[CaseFilter]
provide_case_filters = Provide(case_filters, sync_to_thread=False)
