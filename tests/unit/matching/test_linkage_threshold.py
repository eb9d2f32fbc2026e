"""The auto-link threshold a fitted linkage model chooses from its own probabilities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cases.matching.linkage import expected_precision, link_threshold_for_precision


def test_the_expected_precision_is_the_mean_probability_of_the_links() -> None:
    probabilities = [0.99, 0.97, 0.6, 0.4]
    assert expected_precision(probabilities, 0.5) == pytest.approx((0.99 + 0.97 + 0.6) / 3)
    assert expected_precision(probabilities, 0.98) == pytest.approx(0.99)
    assert expected_precision(probabilities, 0.995) is None


def test_the_lowest_threshold_whose_links_reach_the_target() -> None:
    # 98 near-certain links and two coin flips: at 0.5 the links are expected 98.5% right
    # ((98 * 0.995 + 2 * 0.55) / 100 = 0.9861); asking for 99% drops the coin flips.
    probabilities = [0.995] * 98 + [0.55] * 2
    assert link_threshold_for_precision(probabilities, 0.985) == 0.5
    assert link_threshold_for_precision(probabilities, 0.99) == 0.56


def test_never_below_even_odds() -> None:
    assert link_threshold_for_precision([0.3, 0.45, 0.2], 0.1) is None
    assert link_threshold_for_precision([0.3, 0.45, 0.999], 0.1) == 0.5


def test_no_mention_links_at_any_threshold() -> None:
    assert link_threshold_for_precision([], 0.98) is None
    assert link_threshold_for_precision([0.49, 0.1], 0.98) is None


def test_a_target_no_threshold_reaches_gives_the_strictest() -> None:
    assert link_threshold_for_precision([0.991, 0.992], 0.999) == 0.99
    # links only at 0.6: no threshold gives 90%, so none links automatically
    assert link_threshold_for_precision([0.6, 0.6], 0.9) == 0.99


@pytest.mark.parametrize("target", [0.0, 1.0, -0.5, 2.0])
def test_a_target_outside_zero_one_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="target precision"):
        link_threshold_for_precision([0.9], target)


@given(
    st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=60),
    st.floats(min_value=0.5, max_value=0.999),
)
def test_the_chosen_threshold_meets_the_target_or_is_the_strictest(
    probabilities: list[float], target: float
) -> None:
    chosen = link_threshold_for_precision(probabilities, target)
    if chosen is None:
        assert all(p < 0.5 for p in probabilities)
        return
    precision = expected_precision(probabilities, chosen)
    if chosen < 0.99:
        assert precision is not None and precision >= target
    # and no lower threshold on the grid would have done
    lower = [round(0.5 + 0.01 * k, 6) for k in range(round((chosen - 0.5) / 0.01))]
    for threshold in lower:
        below = expected_precision(probabilities, threshold)
        assert below is None or below < target
