"""One run makes several scans (one per scope, role and kind); this module turns each scan's own
Monte Carlo p-value into a run-level, family-wise one and sizes the scans' replicas so that the
family-wise figure keeps the resolution of a single scan.

Bonferroni over the S scans of a run: p_run = min(1, S * p_scan). It holds for any dependence
between the scans (the scopes are nested: every group's reports are also in "all"), so the
probability that a run on data with no cluster reports any p_run <= a is at most a. Each scan's
permutation keeps conditioning on its own place (or entity) and day totals; a joint shuffle of
all reports would not (a subset's day totals are not invariant under it), see
docs/decisions/0110-alerts.md.
"""

from __future__ import annotations

import math

__all__ = ["MAX_SCAN_REPLICAS", "family_p_value", "family_replicas", "recurrence_interval"]

MAX_SCAN_REPLICAS = 199_999
"""Upper bound on the replicas of one scan after the family-wise increase."""


def family_replicas(replicas: int, scans: int, threshold: float) -> int:
    """Replicas for each of ``scans`` scans when a single scan would run ``replicas``.

    S (R + 1) - 1 keeps the smallest family-wise p, S / (S (R + 1)), and the step between
    attainable family-wise p-values equal to those of one scan with R replicas; at least
    S * threshold - 1 so that a run-level recurrence interval of ``threshold`` stays reachable.
    Sequential stopping makes a scan whose best cluster is not rare stop long before this.
    """
    if replicas <= 0 or scans <= 1:
        return max(replicas, 0)
    wanted = max(scans * (replicas + 1), math.ceil(scans * threshold)) - 1
    return min(wanted, MAX_SCAN_REPLICAS)


def family_p_value(p_scan: float | None, scans: int) -> float | None:
    """Bonferroni-adjusted p-value of a cluster found by one of ``scans`` scans."""
    if p_scan is None:
        return None
    return min(1.0, max(scans, 1) * p_scan)


def recurrence_interval(p: float | None) -> float | None:
    """1 / p in run intervals (days for a daily run)."""
    return None if p is None else 1.0 / p
