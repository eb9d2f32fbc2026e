"""Every route declares who may call it and what its answers may contain, in one table.

``POLICY`` lists each (method, path) of the app with the callers its guard admits and its field
policy. A route missing from the table, a stale entry, or a guard that disagrees with the table
fails here; what each role actually receives is checked against ``cases.classification`` route by
route in tests/api/test_isolation.py (``test_each_role_sees_only_its_field_classes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Any

from litestar import Litestar

from server.app import create_app
from server.settings import load_settings

__all__ = ["POLICY", "Fields", "operations"]


class Fields(StrEnum):
    """What a route's answers may carry (field classes: cases/classification.py)."""

    NONE = "none"  # no tenant data (health, public auth steps)
    ACCOUNT = "account"  # the caller's own account, sessions and second factor
    ADMIN = "admin"  # staff accounts, devices, org settings, audit entries: no report fields
    VIEW_FOR = "view_for"  # report fields, filtered per role by classification.view_for
    OPERATIONAL = "operational"  # operational classes only (ids, categories, dates, statuses)
    CASE_TEAM = "case_team"  # case work records; only case team roles may call
    ANALYTICS = "analytics"  # aggregates and H3 cells; no identities, no exact coordinates
    DEVICE_SCOPE = "device_scope"  # the device's own monitor's records only (sync scope)


ALL = frozenset({"org_admin", "case_manager", "analyst"})
TEAM = frozenset({"org_admin", "case_manager"})
ADMIN = frozenset({"org_admin"})
CM = frozenset({"case_manager"})
ANALYSTS = frozenset({"org_admin", "analyst"})
PUBLIC = frozenset({"public"})
DEVICE = frozenset({"device"})

POLICY: dict[tuple[str, str], tuple[frozenset[str], Fields]] = {
    ("GET", "/healthz"): (PUBLIC, Fields.NONE),
    ("GET", "/readyz"): (PUBLIC, Fields.NONE),
    ("POST", "/v1/auth/login"): (PUBLIC, Fields.ACCOUNT),
    ("POST", "/v1/auth/logout"): (ALL, Fields.ACCOUNT),
    ("GET", "/v1/auth/me"): (ALL, Fields.ACCOUNT),
    ("GET", "/v1/auth/sessions"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/auth/sessions/{session_id:uuid}/revoke"): (ALL, Fields.ACCOUNT),
    ("GET", "/v1/auth/totp"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/auth/totp/enroll"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/auth/totp/confirm"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/auth/totp/disable"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/auth/password-reset"): (PUBLIC, Fields.NONE),
    ("GET", "/v1/org"): (ALL, Fields.OPERATIONAL),
    ("GET", "/v1/org/retention"): (ADMIN, Fields.ADMIN),
    ("PUT", "/v1/org/retention"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/org/privacy"): (ALL, Fields.OPERATIONAL),
    ("PUT", "/v1/org/privacy"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/users"): (ADMIN, Fields.ADMIN),
    ("POST", "/v1/users"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/users/{user_id:uuid}"): (ADMIN, Fields.ADMIN),
    ("PATCH", "/v1/users/{user_id:uuid}"): (ADMIN, Fields.ADMIN),
    ("DELETE", "/v1/users/{user_id:uuid}/totp"): (ADMIN, Fields.ADMIN),
    ("POST", "/v1/users/{user_id:uuid}/password-reset"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/audit"): (ADMIN, Fields.ADMIN),
    ("POST", "/v1/audit/verify"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/monitors"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/monitors"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/monitors/{monitor_id:uuid}"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/monitors/{monitor_id:uuid}/enrollment-codes"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/devices"): (ADMIN, Fields.ADMIN),
    ("POST", "/v1/devices/{device_id:uuid}/revoke"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/reports"): (TEAM, Fields.OPERATIONAL),
    ("GET", "/v1/reports/{report_id:uuid}"): (TEAM, Fields.VIEW_FOR),
    ("GET", "/v1/reports/{report_id:uuid}/attachments/{sha256:str}"): (TEAM, Fields.VIEW_FOR),
    ("GET", "/v1/conflicts"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/conflicts/{conflict_id:uuid}/resolve"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/registry/entities"): (ALL, Fields.OPERATIONAL),
    ("POST", "/v1/registry/entities"): (TEAM, Fields.OPERATIONAL),
    ("GET", "/v1/registry/entities/{entity_id:uuid}"): (ALL, Fields.OPERATIONAL),
    ("PUT", "/v1/registry/entities/{entity_id:uuid}"): (TEAM, Fields.OPERATIONAL),
    ("DELETE", "/v1/registry/entities/{entity_id:uuid}"): (TEAM, Fields.OPERATIONAL),
    ("GET", "/v1/registry/entities/{entity_id:uuid}/reports"): (ALL, Fields.VIEW_FOR),
    ("POST", "/v1/registry/import"): (TEAM, Fields.OPERATIONAL),
    ("POST", "/v1/sync/enroll"): (PUBLIC, Fields.DEVICE_SCOPE),
    ("POST", "/v1/sync/push"): (DEVICE, Fields.DEVICE_SCOPE),
    ("POST", "/v1/sync/pull"): (DEVICE, Fields.DEVICE_SCOPE),
    ("POST", "/v1/sync/attachments"): (DEVICE, Fields.DEVICE_SCOPE),
    ("GET", "/v1/sync/attachments/{sha256:str}"): (DEVICE, Fields.DEVICE_SCOPE),
    ("PUT", "/v1/sync/attachments/{sha256:str}/parts/{index:int}"): (DEVICE, Fields.DEVICE_SCOPE),
    ("POST", "/v1/matching/{job:str}/refit"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/matching/{job:str}/thresholds"): (TEAM, Fields.ADMIN),
    ("PUT", "/v1/matching/{job:str}/thresholds"): (ADMIN, Fields.ADMIN),
    ("DELETE", "/v1/matching/{job:str}/thresholds"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/matching/decisions"): (TEAM, Fields.VIEW_FOR),
    ("GET", "/v1/matching/decisions/{decision_id:uuid}"): (TEAM, Fields.VIEW_FOR),
    ("POST", "/v1/matching/decisions/{decision_id:uuid}/accept"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/matching/decisions/{decision_id:uuid}/reject"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/matching/decisions/{decision_id:uuid}/undo"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/matching/clusters"): (TEAM, Fields.VIEW_FOR),
    ("GET", "/v1/incidents/{incident_id:uuid}"): (ALL, Fields.VIEW_FOR),
    ("GET", "/v1/persons/{person_id:uuid}"): (CM, Fields.VIEW_FOR),
    ("GET", "/v1/cases"): (ALL, Fields.VIEW_FOR),
    ("POST", "/v1/cases"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/{case_id:uuid}"): (ALL, Fields.VIEW_FOR),
    ("GET", "/v1/cases/{case_id:uuid}/timeline"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/transitions"): (TEAM, Fields.CASE_TEAM),
    ("PUT", "/v1/cases/{case_id:uuid}/assignee"): (TEAM, Fields.CASE_TEAM),
    ("PUT", "/v1/cases/{case_id:uuid}/priority"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/reports"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/reports/{report_id:uuid}/unlink"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/entities"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/persons"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/{case_id:uuid}/notes"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/notes"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/{case_id:uuid}/tasks"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/tasks"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/tasks/{task_id:uuid}/cancel"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/{case_id:uuid}/consents"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/consents"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/{case_id:uuid}/referrals"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/cases/{case_id:uuid}/referrals"): (TEAM, Fields.CASE_TEAM),
    ("PUT", "/v1/cases/{case_id:uuid}/referrals/{referral_id:uuid}"): (TEAM, Fields.CASE_TEAM),
    ("GET", "/v1/cases/export.csv"): (ALL, Fields.VIEW_FOR),
    ("GET", "/v1/cases/export.geojson"): (ALL, Fields.VIEW_FOR),
    ("GET", "/v1/partners"): (TEAM, Fields.CASE_TEAM),
    ("POST", "/v1/partners"): (ADMIN, Fields.ADMIN),
    ("PUT", "/v1/partners/{partner_id:uuid}"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/case-settings"): (TEAM, Fields.ADMIN),
    ("PUT", "/v1/case-settings"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/risk/runs"): (ALL, Fields.ANALYTICS),
    ("POST", "/v1/risk/runs"): (ANALYSTS, Fields.ANALYTICS),
    ("GET", "/v1/risk/runs/{run_id:uuid}"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/risk/settings"): (ALL, Fields.ANALYTICS),
    ("PUT", "/v1/risk/settings"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/risk/schedules"): (ADMIN, Fields.ADMIN),
    ("POST", "/v1/risk/schedules"): (ADMIN, Fields.ADMIN),
    ("PUT", "/v1/risk/schedules/{schedule_id:uuid}"): (ADMIN, Fields.ADMIN),
    ("DELETE", "/v1/risk/schedules/{schedule_id:uuid}"): (ADMIN, Fields.ADMIN),
    ("GET", "/v1/alerts"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/alerts/{alert_id:uuid}"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/alerts/{alert_id:uuid}/history"): (ALL, Fields.ANALYTICS),
    ("POST", "/v1/alerts/{alert_id:uuid}/acknowledge"): (ALL, Fields.ANALYTICS),
    ("POST", "/v1/alerts/{alert_id:uuid}/escalate"): (ALL, Fields.ANALYTICS),
    ("POST", "/v1/alerts/{alert_id:uuid}/dismiss"): (ALL, Fields.ANALYTICS),
    ("PUT", "/v1/alerts/{alert_id:uuid}/verdict"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/alerts/precision"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/alerts/stream"): (ALL, Fields.ANALYTICS),
    ("GET", "/v1/alerts/subscriptions"): (ALL, Fields.ACCOUNT),
    ("POST", "/v1/alerts/subscriptions"): (ALL, Fields.ACCOUNT),
    ("DELETE", "/v1/alerts/subscriptions/{subscription_id:uuid}"): (ALL, Fields.ACCOUNT),
    ("GET", "/v1/alerts/subscriptions/{subscription_id:uuid}/deliveries"): (ALL, Fields.ACCOUNT),
}


def operations(app: Litestar) -> Iterator[tuple[str, str, Any]]:
    """Every (method, path template, handler) of the app, docs and CORS preflight aside."""
    for route in app.routes:
        if route.path.startswith("/docs"):
            continue  # OpenAPI documents are public by design
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(set(handler.http_methods) - {"OPTIONS", "HEAD"}):
                yield method, route.path, handler


def declared_callers(handler: Any) -> frozenset[str]:
    roles: set[str] = set()
    for guard in handler.guards or []:
        roles |= {str(r) for r in getattr(guard, "roles", ())}
    if handler.opt.get("public") is True:
        roles.add("public")
    return frozenset(roles)


def test_every_route_has_a_policy_and_its_guard_matches() -> None:
    app = create_app(load_settings({}))
    seen = set()
    problems = []
    for method, path, handler in operations(app):
        key = (method, path)
        seen.add(key)
        callers = declared_callers(handler)
        if "public" in callers and len(callers) > 1:
            problems.append(f"{method} {path}: public and guarded at once")
        if not callers:
            problems.append(f"{method} {path}: neither public nor guarded")
        if key not in POLICY:
            problems.append(f"{method} {path}: missing from POLICY (declare its callers, fields)")
        elif POLICY[key][0] != callers:
            problems.append(f"{method} {path}: guard admits {sorted(callers)}, POLICY says "
                            f"{sorted(POLICY[key][0])}")  # fmt: skip
    stale = sorted(set(POLICY) - seen)
    assert problems == []
    assert stale == [], "POLICY lists routes the app no longer has"


def test_field_policies_fit_their_callers() -> None:
    for (method, path), (callers, fields) in POLICY.items():
        if fields is Fields.CASE_TEAM:
            assert callers <= TEAM, f"{method} {path}: case-team data offered to {callers}"
        if fields is Fields.ADMIN and method != "GET":
            assert callers == ADMIN, f"{method} {path}: admin change open to {callers}"
        if fields is Fields.DEVICE_SCOPE:
            assert callers <= DEVICE | PUBLIC, f"{method} {path}"
