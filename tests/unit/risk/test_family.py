"""Run-level (family-wise) figures: a run makes several scans, and the alert threshold applies to
the Bonferroni-adjusted recurrence interval over all of them, not to one scan's own."""

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest

from cases.risk import family_p_value, family_replicas, recurrence_interval
from cases.risk.family import MAX_SCAN_REPLICAS
from cases.taxonomy import load_taxonomy
from storage.risk import ScanParams
from storage.risk_alerts import alertable
from storage.risk_scan import EntityNode, ScanData, ScanReport, run_scans

TAXONOMY = load_taxonomy()
DAY0 = dt.date(2026, 3, 31)
CITY = (25.2854, 51.5310)
HOTSPOT = (25.3200, 51.4400)
# One category outside every priority group, one per group (violence is inside coercion too).
BACKGROUND = ["FR.RECRUITMENT_FEE", "FL.DOC_RETENTION", "FL.PHYSICAL_VIOLENCE", "FR.RETALIATION"]


def test_bonferroni_p_value_and_recurrence_interval() -> None:
    assert family_p_value(0.002, 12) == pytest.approx(0.024)
    assert family_p_value(0.2, 12) == 1.0
    assert family_p_value(0.03, 1) == 0.03
    assert family_p_value(None, 12) is None
    assert recurrence_interval(0.01) == pytest.approx(100.0)
    assert recurrence_interval(None) is None


def test_replicas_keep_the_resolution_of_one_scan_and_the_threshold_reachable() -> None:
    assert family_replicas(999, 1, 100.0) == 999  # one scan: unchanged
    assert family_replicas(999, 12, 100.0) == 11_999  # smallest p_run stays 1/1000
    assert family_replicas(99, 4, 365.0) == 1459  # 4 * 365 - 1: RI 365 reachable
    assert family_replicas(0, 12, 100.0) == 0  # no Monte Carlo asked for
    assert family_replicas(9999, 12, 1e6) == MAX_SCAN_REPLICAS


def _data(*, hotspot: int = 12, seed: int = 5) -> ScanData:
    rng = random.Random(seed)
    points = [
        (CITY[0] + rng.uniform(-0.07, 0.07), CITY[1] + rng.uniform(-0.07, 0.07)) for _ in range(30)
    ]
    monitors = [uuid.uuid4() for _ in range(6)]
    agencies = [uuid.UUID(int=k + 1) for k in range(6)]
    entities = {
        a: EntityNode(a, None, f"Agency {k}", "recruitment_agency") for k, a in enumerate(agencies)
    }
    reports, links = [], {}

    def add(point: tuple[float, float], day: dt.date, category: str, k: int) -> None:
        rid = uuid.UUID(int=rng.getrandbits(128))
        reports.append(
            ScanReport(
                id=rid, monitor_id=monitors[k % len(monitors)], device_id=uuid.uuid4(),
                latitude=point[0], longitude=point[1], categories=(category,), day=day,
                received_at=dt.datetime.combine(day, dt.time(12), dt.UTC), accuracy_m=10.0,
                country="QA",
            )
        )  # fmt: skip
        links[rid] = {"recruiter": agencies[k % 4], "employer": agencies[4 + k % 2]}

    for k in range(400):
        add(rng.choice(points), DAY0 - dt.timedelta(days=rng.randrange(60)), BACKGROUND[k % 4], k)
    for k in range(hotspot):
        add(HOTSPOT, DAY0 - dt.timedelta(days=k % 3), "FL.PHYSICAL_VIOLENCE", k)
    return ScanData(
        reports=reports,
        links=links,
        entities=entities,
        study_start=DAY0 - dt.timedelta(days=59),
        analysis_date=DAY0,
    )


def test_the_alert_threshold_applies_to_the_run_level_recurrence_interval() -> None:
    params = ScanParams(study_days=60, analysis_date=DAY0, replicas=199, seed=3)
    results, findings = run_scans(_data(), params, TAXONOMY, 100.0)

    # 4 space-time scopes (all, violence, coercion, retaliation) and 2 surge scans each.
    scans = sum(1 for r in results if r["method"] is not None)
    assert scans == 12
    assert all(r["scans_in_run"] == scans and r["replicas"] == 12 * 200 - 1 for r in results)
    for f in findings:
        assert f.scans_in_run == scans and f.scan_p_value is not None
        assert f.p_value == pytest.approx(min(1.0, scans * f.scan_p_value))
        assert f.recurrence_interval_days == pytest.approx(1.0 / min(1.0, scans * f.scan_p_value))

    top = max(
        (f for f in findings if f.kind == "space_time" and f.scope.key == "all"),
        key=lambda f: f.llr,
    )
    # The hotspot beats every replica of 2,399: its own p is 1/2400, the run's 12/2400.
    assert top.replicas == 2399
    assert top.scan_p_value == pytest.approx(1 / 2400)
    assert top.recurrence_interval_days == pytest.approx(200.0)
    assert top.scan_recurrence_interval_days == pytest.approx(2400.0)
    # A threshold between the two figures: the scan's own figure reaches it, the run's does
    # not, so no alert. The old rule (threshold on each scan's own RI) would have raised one.
    threshold = 1000.0
    assert top.scan_recurrence_interval_days is not None and top.recurrence_interval_days
    assert top.scan_recurrence_interval_days >= threshold > top.recurrence_interval_days
    assert top not in alertable(findings, threshold)
    assert top in alertable(findings, 200.0)
    assert all((f.recurrence_interval_days or 0.0) >= 150.0 for f in alertable(findings, 150.0))
    space = next(r for r in results if r["kind"] == "space_time" and r["scope"] == "all")
    shown = space["clusters"][0]
    assert shown["recurrence_interval_days"] == pytest.approx(200.0)
    assert shown["scan_recurrence_interval_days"] == pytest.approx(2400.0)


def test_a_run_of_one_scan_keeps_the_scan_figures() -> None:
    params = ScanParams(
        study_days=60, analysis_date=DAY0, replicas=199, seed=3, entity_scan=False,
        categories=["FL.PHYSICAL_VIOLENCE"],
    )  # fmt: skip
    results, findings = run_scans(_data(), params, TAXONOMY, 100.0)
    assert [r["scans_in_run"] for r in results] == [1]
    assert results[0]["replicas"] == 199
    assert findings and all(f.p_value == f.scan_p_value for f in findings)


def test_scans_too_small_to_find_a_cluster_are_not_counted() -> None:
    # No report in the retaliation group and no entity links: 3 space-time scans can run.
    data = _data()
    kept = [r for r in data.reports if r.categories != ("FR.RETALIATION",)]
    small = ScanData(
        reports=kept, links={}, entities={}, study_start=data.study_start,
        analysis_date=data.analysis_date,
    )  # fmt: skip
    params = ScanParams(study_days=60, analysis_date=DAY0, replicas=99, seed=1)
    results, findings = run_scans(small, params, TAXONOMY, 100.0)
    assert len(results) == 12
    assert {r["scans_in_run"] for r in results} == {3}
    assert sum(1 for r in results if r["method"] is not None) == 3
    assert all(f.scans_in_run == 3 for f in findings)
