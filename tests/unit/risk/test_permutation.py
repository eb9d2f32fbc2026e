"""The Monte Carlo machinery: the tail sampler is a uniform draw without replacement and keeps
the marginals, sequential stopping lands on the exact replica, p-values follow their rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cases.risk.permutation import (
    MonteCarloRun,
    draw_tail_sample,
    p_value,
    restore_pool,
    run_monte_carlo,
)
from cases.risk.spacetime import _window_counts


def test_tail_sample_is_uniform_over_ordered_pairs_and_restorable() -> None:
    pool = np.arange(5, dtype=np.int64)
    swaps = np.empty(2, dtype=np.int64)
    state = np.array([12345], dtype=np.uint64)
    seen: dict[tuple[int, int], int] = {}
    draws = 20_000
    for _ in range(draws):
        draw_tail_sample(pool, 2, state, swaps)
        pair = (int(pool[0]), int(pool[1]))
        seen[pair] = seen.get(pair, 0) + 1
        restore_pool(pool, 2, swaps)
        assert pool.tolist() == [0, 1, 2, 3, 4]
    assert set(seen) == set(itertools.permutations(range(5), 2))
    expected = draws / 20
    sd = (draws * (1 / 20) * (19 / 20)) ** 0.5
    assert max(abs(n - expected) for n in seen.values()) < 5 * sd


def test_a_replica_keeps_place_and_day_totals() -> None:
    rng = np.random.default_rng(5)
    n_loc, days, n = 7, 6, 400
    loc = rng.integers(0, n_loc, n)
    age = rng.integers(0, days, n)
    pool = np.arange(n, dtype=np.int64)
    swaps = np.empty(n, dtype=np.int64)
    # The whole period as the tail: the replica is a full shuffle of dates among cases.
    draw_tail_sample(pool, n, np.array([99], dtype=np.uint64), swaps)
    shuffled_loc = loc[pool]
    tail_age = np.sort(age)
    counts = np.zeros((n_loc, days))
    case_ptr = np.zeros(n_loc + 1, dtype=np.int64)
    case_age = np.empty(n, dtype=np.int64)
    case_mon = np.empty(n, dtype=np.int64)
    _window_counts(shuffled_loc, tail_age, np.zeros(n, dtype=np.int64), n_loc, counts, case_ptr,
                   case_age, case_mon)  # fmt: skip
    assert counts[:, -1].tolist() == np.bincount(loc, minlength=n_loc).tolist()
    per_day = np.diff(np.concatenate(([0.0], counts.sum(axis=0))))
    assert per_day.tolist() == np.bincount(age, minlength=days).tolist()
    assert not np.array_equal(shuffled_loc, loc)  # it did shuffle
    # The case lists by place agree with the counts.
    assert np.diff(case_ptr).tolist() == counts[:, -1].astype(int).tolist()


def test_sequential_stop_lands_on_the_exact_replica_whatever_the_batch_size() -> None:
    maxima = np.random.default_rng(1).uniform(0, 10, 999)

    def batch_from(start: list[int]) -> object:
        def batch(seeds: np.ndarray) -> np.ndarray:
            out = maxima[start[0] : start[0] + len(seeds)]
            start[0] += len(seeds)
            return out

        return batch

    runs = [
        run_monte_carlo(batch_from([0]), 9.0, 999, 20, seed=0, batch_size=size)  # type: ignore[arg-type]
        for size in (1, 7, 64)
    ]
    twentieth = int(np.nonzero(maxima >= 9.0)[0][19])
    for run in runs:
        assert run.stopped_early
        assert run.replicas == twentieth + 1
        assert p_value(9.0, run) == pytest.approx(20 / (twentieth + 1))


def test_p_value_without_stop_is_rank_over_r_plus_one() -> None:
    run = MonteCarloRun(np.array([1.0, 2.0, 3.0, 4.0]), stopped_early=False)
    assert p_value(3.5, run) == pytest.approx(2 / 5)  # one replica beats it, plus itself
    assert p_value(9.0, run) == pytest.approx(1 / 5)
    assert p_value(3.0, run) == pytest.approx(3 / 5)  # ties count against the cluster
