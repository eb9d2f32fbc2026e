"""Entity surge scan: group counts over the entity tree, the hand-computed statistic, and a
planted surge found with a small, multiplicity-adjusted p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cases.risk import CaseCounts, SurgeParams, scan_entity_surge
from cases.risk.surge import depth_first_ranges


def test_groups_are_depth_first_ranges_and_cycles_are_refused() -> None:
    # 0 is a recruiter group with agencies 1 and 2; 3 is a sub-agent of 2; 4 stands alone.
    tin, tout = depth_first_ranges([-1, 0, 0, 2, -1])
    assert (tout - tin).tolist() == [4, 1, 2, 1, 1]
    assert tin[0] < tin[3] < tout[0]
    with pytest.raises(ValueError, match="cycle"):
        depth_first_ranges([1, 0])


def test_group_statistic_by_hand() -> None:
    # Tree: 0 -> {1, 2}; 3 alone. 4 days. Cases (entity, day, count):
    rows = [(1, 3, 2), (2, 3, 1), (1, 0, 1), (3, 0, 2), (3, 1, 1), (2, 2, 1)]
    unit, day, count = zip(*rows, strict=True)
    result = scan_entity_surge(
        [-1, 0, 0, -1],
        CaseCounts.of(unit, day, count),
        SurgeParams(study_days=4, max_window_days=1, replicas=0),
    )
    # C = 8; the last day holds 3 cases. Group 0 = {0, 1, 2} holds 5 cases in all, 3 today:
    # expected 5 * 3 / 8 = 1.875, LLR = 3 ln(3 / 1.875) + 5 ln(5 / 6.125) = 1.410 - 1.015 = 0.395.
    # Entity 1 alone: 3 in all, 2 today, expected 3 * 3 / 8 = 1.125,
    # LLR = 2 ln(2 / 1.125) + 6 ln(6 / 6.875) = 1.151 - 0.817 = 0.334.
    by_node = {s.node: s for s in result.surges}
    assert set(by_node) == {0, 1}  # entity 2 has one case today (< 2), entity 3 none
    assert by_node[0].observed == 3 and by_node[0].group_size == 3
    assert by_node[0].expected == pytest.approx(1.875)
    assert by_node[0].llr == pytest.approx(3 * math.log(3 / 1.875) + 5 * math.log(5 / 6.125))
    assert by_node[1].llr == pytest.approx(2 * math.log(2 / 1.125) + 6 * math.log(6 / 6.875))
    assert result.surges[0].node == 0


def test_planted_surge_is_found_and_null_nodes_are_not() -> None:
    rng = np.random.default_rng(4)
    n_entities, days = 300, 90
    parent = np.where(np.arange(n_entities) < 30, -1, rng.integers(0, 30, n_entities))
    unit = rng.integers(0, n_entities, 3000)
    day = rng.integers(0, days, 3000)
    # 12 extra reports against agency 77 over the last 3 days.
    cases = CaseCounts.of(
        np.concatenate((unit, [77] * 12)), np.concatenate((day, [89, 88, 87] * 4))
    )
    params = SurgeParams(study_days=days, max_window_days=14, replicas=199, sequential_stop=0)
    result = scan_entity_surge(parent, cases, params)
    top = result.surges[0]
    assert top.node in {77, int(parent[77])}
    assert top.p_value is not None and top.p_value <= 0.01
    # Adjusted p-values: the rest of the tree is noise, so nearly all are large.
    others = [s.p_value for s in result.surges[1:] if s.p_value is not None]
    assert np.mean(np.array(others) > 0.05) > 0.9
