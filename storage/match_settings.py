"""An organisation's own matching thresholds per job, pinned by an org admin over its model's.

A pin is applied whenever matching loads a model (`storage.matching.MatchingCache`), never
written into it: a refit still fits m and u and chooses its own thresholds, which are in force
again as soon as the pin is cleared. An NGO that wants persons linked only above 0.95 gets that
whatever its data would suggest.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from cases.matching.engine import Matcher
from cases.matching.jobs import JobName, job_spec
from cases.matching.model import MatchModel, Thresholds
from storage.db import Conn
from storage.errors import StorageError
from storage.queries import Q

__all__ = [
    "MergeNotApplicable",
    "PinnedThresholds",
    "ThresholdSetting",
    "ThresholdsInForce",
    "clear_thresholds",
    "pin_thresholds",
    "pinned_thresholds",
    "thresholds_in_force",
    "with_pin",
]

Job = JobName


class MergeNotApplicable(StorageError):
    """A merge threshold pinned on a linkage job (entity): it links mentions to registry
    entries and never merges groups, so a merge would be accepted and do nothing."""

    def __init__(self, job: Job) -> None:
        super().__init__(
            f"the {job} job links mentions to registry entries and never merges groups: "
            "leave merge out"
        )
        self.job = job


def _merges_groups(job: Job) -> bool:
    return not job_spec(job).linkage


class PinnedThresholds(msgspec.Struct, frozen=True):
    """What an org admin sets: auto-link above `link`, review from `review`; `merge` (dedup
    jobs, see `Thresholds`) None keeps the model's own."""

    link: float
    review: float
    merge: float | None = None


class ThresholdSetting(msgspec.Struct, frozen=True):
    """A stored pin, with who set it and when."""

    link: float
    review: float
    merge: float | None
    updated_by: uuid.UUID
    updated_at: datetime

    @property
    def pin(self) -> PinnedThresholds:
        return PinnedThresholds(self.link, self.review, self.merge)


class ThresholdsInForce(msgspec.Struct, frozen=True):
    """The thresholds matching uses for a job and where they come from: the org's pin, its
    stored (fitted) model, or the job's defaults (no model yet, or one from before the engine's
    comparison levels changed, which matching sets aside until the refit it queues)."""

    job: Job
    source: Literal["pinned", "fitted", "default"]
    thresholds: Thresholds
    # What is in force without the pin (what clearing it goes back to).
    model_source: Literal["fitted", "default"]
    model_thresholds: Thresholds
    pinned: ThresholdSetting | None


def with_pin(matcher: Matcher[Any, Any], pin: PinnedThresholds | None) -> Matcher[Any, Any]:
    """The matcher with the org's pinned thresholds over its model's (itself without a pin)."""
    if pin is None:
        return matcher
    return matcher.with_thresholds(pin.link, pin.review, pin.merge)


def _setting(row: Any) -> ThresholdSetting | None:
    return None if row is None else msgspec.convert(dict(row), ThresholdSetting)


def _in_force(setting: ThresholdSetting | None, job: Job) -> ThresholdSetting | None:
    """The stored pin as matching applies it: a linkage job's has no merge (one stored before
    `MergeNotApplicable` was refused carries one that never had an effect)."""
    if setting is None or setting.merge is None or _merges_groups(job):
        return setting
    return msgspec.structs.replace(setting, merge=None)


async def pinned_thresholds(conn: Conn, org_id: uuid.UUID, job: Job) -> PinnedThresholds | None:
    setting = _in_force(_setting(await conn.fetchrow(Q.get_match_setting, org_id, job)), job)
    return None if setting is None else setting.pin


async def thresholds_in_force(conn: Conn, org_id: uuid.UUID, job: Job) -> ThresholdsInForce:
    stored = await conn.fetchval(Q.get_match_model, org_id, job)
    model = msgspec.json.decode(stored, type=MatchModel) if stored else None
    # The same choice matching makes: a stored model the engine cannot use gives way to the
    # job's starting model.
    matcher: Matcher[Any, Any] = Matcher(job_spec(job), model)
    fitted = model is not None and matcher.model is model
    setting = _in_force(_setting(await conn.fetchrow(Q.get_match_setting, org_id, job)), job)
    pinned = with_pin(matcher, None if setting is None else setting.pin)
    return ThresholdsInForce(
        job=job,
        source="pinned" if setting else "fitted" if fitted else "default",
        thresholds=_shown(pinned.model.thresholds, job),
        model_source="fitted" if fitted else "default",
        model_thresholds=_shown(matcher.model.thresholds, job),
        pinned=setting,
    )


def _shown(thresholds: Thresholds, job: Job) -> Thresholds:
    # A linkage job never clusters, so it reports no merge threshold at all.
    return thresholds if _merges_groups(job) else msgspec.structs.replace(thresholds, merge=None)


async def pin_thresholds(
    conn: Conn, org_id: uuid.UUID, job: Job, pin: PinnedThresholds, user_id: uuid.UUID
) -> tuple[ThresholdSetting | None, ThresholdSetting]:
    """Set (or replace) the org's pin for a job; returns the pin it replaced and the new one.
    Call it in a transaction: the replaced row stays locked until the change (and its audit
    entry) commits. Raises `MergeNotApplicable` for a merge on a job that never merges groups."""
    if pin.merge is not None and not _merges_groups(job):
        raise MergeNotApplicable(job)
    await conn.execute(Q.lock_match_setting_key, org_id, job)
    previous = _setting(await conn.fetchrow(Q.lock_match_setting, org_id, job))
    row = await conn.fetchrow(
        Q.put_match_setting, org_id, job, pin.link, pin.review, pin.merge, user_id
    )
    saved = _setting(row)
    assert saved is not None
    return previous, saved


async def clear_thresholds(conn: Conn, org_id: uuid.UUID, job: Job) -> ThresholdSetting | None:
    """Remove the org's pin for a job (the model's thresholds are in force again); returns the
    pin removed, None when there was none."""
    return _setting(await conn.fetchrow(Q.delete_match_setting, org_id, job))
