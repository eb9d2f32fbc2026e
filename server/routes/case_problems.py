"""How case-management errors become problem details, shared by the case route modules.

Workflow refusals carry what the client needs to recover: an illegal transition lists the moves
that are allowed from the current state, a refused referral says which consent rule failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cases.accounts import Role
from cases.classification import ANALYST_CELL_RESOLUTION, view_for
from cases.workflow import IllegalTransition, TransitionRefused
from server.auth import Principal
from server.problems import FieldError, ProblemError
from storage.case_links import ReportInOtherCase
from storage.case_list import InvalidFilter
from storage.case_referrals import ReferralRefused
from storage.cases import CaseActor
from storage.tasks import TaskClosed

__all__ = ["CASE_TEAM", "actor_of", "case_errors", "case_view"]

CASE_TEAM = (Role.ORG_ADMIN, Role.CASE_MANAGER)


def actor_of(principal: Principal) -> CaseActor:
    """Org admins act as workflow supervisors: they may assign anyone and move any case."""
    return CaseActor.staff(principal.user_id, supervisor=principal.role is Role.ORG_ADMIN)


@contextlib.contextmanager
def case_errors() -> Iterator[None]:
    try:
        yield
    except IllegalTransition as exc:
        raise ProblemError(
            409,
            "illegal-transition",
            "The case cannot make this move",
            str(exc),
            current=exc.current.value,
            requested=exc.requested.value,
            allowed=[s.value for s in exc.allowed],
        ) from None
    except TransitionRefused as exc:
        raise ProblemError(
            422,
            "transition-refused",
            "The case workflow refused this change",
            str(exc),
            code=exc.code,
        ) from None
    except ReportInOtherCase as exc:
        raise ProblemError(
            409,
            "report-in-other-case",
            "A report is already followed in another case",
            str(exc),
            reports=[str(r) for r in exc.report_ids],
        ) from None
    except ReferralRefused as exc:
        raise ProblemError(
            422,
            "consent-required",
            "The worker's consent does not allow this referral",
            f"consent check: {exc.decision.reason}",
            reason=exc.decision.reason,
        ) from None
    except TaskClosed as exc:
        raise ProblemError(409, "task-closed", "The task is closed", str(exc)) from None
    except InvalidFilter as exc:
        raise ProblemError(
            422,
            "validation",
            "The request has invalid fields",
            str(exc),
            errors=[FieldError(exc.field, exc.message, "query")],
        ) from None


def case_view(
    role: Role, item: dict[str, Any], cell_resolution: int = ANALYST_CELL_RESOLUTION
) -> dict[str, Any]:
    """A case (or list item) as ``role`` may see it, through ``cases.classification.view_for``.

    The centroid of the case's reports is shown as ``report.location`` would be: exact for the
    case team, an H3 cell for analysts. Analysts also lose the title, which staff write freely
    and which may name people.
    """
    record = dict(item)
    lat, lon = record.pop("latitude", None), record.pop("longitude", None)
    if lat is not None and lon is not None:
        record["report"] = {"location": {"lat": lat, "lon": lon}}
    viewed = view_for(role, record, cell_resolution=cell_resolution)
    viewed["location"] = viewed.pop("report", {}).get("location")
    if role is Role.ANALYST:
        viewed.pop("title", None)
    return viewed
