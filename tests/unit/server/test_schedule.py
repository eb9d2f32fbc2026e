"""The scheduler's standing jobs: what runs every night regardless of organisation settings."""

from __future__ import annotations

from typing import cast

import asyncpg
from apscheduler.triggers.cron import CronTrigger

from server.scheduler import _build_scheduler


def test_nightly_jobs_are_scheduled() -> None:
    scheduler = _build_scheduler(cast(asyncpg.Pool, object()))
    ids = {job.id for job in scheduler.get_jobs()}
    assert {"sessions.purge", "retention.apply", "risk.refresh_schedules", "matching.refit"} <= ids
    refit = scheduler.get_job("matching.refit")
    assert isinstance(refit.trigger, CronTrigger)
    assert list(refit.args) == ["matching.refit_due"]  # a worker job kind (server/matching_jobs.py)
    retention = scheduler.get_job("retention.apply")
    assert isinstance(retention.trigger, CronTrigger)
    assert str(retention.trigger.fields[5]) == "3"  # the hour field: 03:47 UTC
