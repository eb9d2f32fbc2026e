"""Monte Carlo machinery shared by the permutation scans: the Poisson log-likelihood ratio, an
exact sampler of which cases a date shuffle puts in the scanned tail, and sequential p-values.

Why the sampler is exact: shuffling the dates among all C cases and keeping only the M cases
that land in the last W days is the same as drawing an ordered sample of M cases without
replacement (partial Fisher-Yates) and giving them the M tail dates in a fixed order; every
assignment of tail dates to cases then has the same probability as under the full shuffle.
Only the tail matters because the totals per place and per day are invariant under the shuffle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

__all__ = [
    "LLR_TOLERANCE",
    "MonteCarloRun",
    "compiled",
    "compiled_parallel",
    "draw_tail_sample",
    "may_exceed",
    "p_value",
    "poisson_llr",
    "replica_seeds",
    "restore_pool",
    "run_monte_carlo",
]

F = TypeVar("F", bound=Callable[..., Any])

LLR_TOLERANCE = 1e-9
"""Two log-likelihood ratios closer than this are treated as equal (ranking and p-values)."""


def compiled(fn: F) -> F:
    """Compile with numba (no on-disk cache: the domain package does no I/O)."""
    return cast(F, numba.njit(cache=False, nogil=True)(fn))


def compiled_parallel(fn: F) -> F:
    return cast(F, numba.njit(cache=False, nogil=True, parallel=True)(fn))


@compiled
def _next_u64(state: NDArray[np.uint64]) -> np.uint64:
    # splitmix64: tiny, fast, and passes BigCrush; one state word per replica makes every
    # replica reproducible from its own seed whatever thread runs it.
    z = state[0] + np.uint64(0x9E3779B97F4A7C15)
    state[0] = z
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))  # type: ignore[no-any-return]


@compiled
def _below(state: NDArray[np.uint64], n: int) -> int:
    # Unbiased integer in [0, n): mask to the next power of two and reject (fewer than 2 draws
    # on average), so the sampler is exact rather than almost uniform.
    m = np.uint64(n - 1)
    m |= m >> np.uint64(1)
    m |= m >> np.uint64(2)
    m |= m >> np.uint64(4)
    m |= m >> np.uint64(8)
    m |= m >> np.uint64(16)
    m |= m >> np.uint64(32)
    while True:
        x = _next_u64(state) & m
        if x < np.uint64(n):
            return int(x)


@compiled
def draw_tail_sample(
    pool: NDArray[np.int64], tail_size: int, state: NDArray[np.uint64], swaps: NDArray[np.int64]
) -> None:
    """Move a uniform ordered sample of ``tail_size`` entries of ``pool`` to its front."""
    n = len(pool)
    for t in range(tail_size):
        j = t + _below(state, n - t)
        swaps[t] = j
        pool[t], pool[j] = pool[j], pool[t]


@compiled
def restore_pool(pool: NDArray[np.int64], tail_size: int, swaps: NDArray[np.int64]) -> None:
    """Undo ``draw_tail_sample`` so the next replica starts from the same pool order."""
    for t in range(tail_size - 1, -1, -1):
        j = swaps[t]
        pool[t], pool[j] = pool[j], pool[t]


@compiled
def poisson_llr(observed: float, expected: float, total: float) -> float:
    """Kulldorff's log-likelihood ratio for an excess (0 when observed <= expected)."""
    if observed <= expected:
        return 0.0
    llr = observed * np.log(observed / expected)
    if observed < total:
        llr += (total - observed) * np.log((total - observed) / (total - expected))
    return llr  # type: ignore[no-any-return]


@numba.njit(cache=False, nogil=True, fastmath=True)
def may_exceed(
    acc: Any,
    zone_cases: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    best: Any,
) -> Any:
    """Can any window of one zone (observed ``acc[w]``, expected ``zone_cases * window_share[w]``)
    have an LLR above ``best``? A branch-free screen that vectorises, so that logarithms are
    only taken for real candidates."""
    # Uses LLR <= C d^2 / (mu (C - mu)), d = c - mu, widened by 1e-9 so that
    # fast-math rounding never screens out a true candidate.
    top = -1.0
    for w in range(len(acc)):
        c = acc[w]
        mu = zone_cases * window_share[w]
        d = max(c - mu, 0.0) if c >= min_cases else 0.0
        top = max(top, d * d * total * (1.0 + 1e-9) - best * mu * (total - mu))
    return top > 0.0


def replica_seeds(seed: int, count: int) -> NDArray[np.uint64]:
    """One 64-bit seed per replica, drawn from a numpy Generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**64, size=count, dtype=np.uint64)


class MonteCarloRun:
    """Maxima of the replicas that were run, and whether sequential stopping cut the run short."""

    __slots__ = ("maxima", "stopped_early")

    def __init__(self, maxima: NDArray[np.float64], stopped_early: bool) -> None:
        self.maxima = maxima
        self.stopped_early = stopped_early

    @property
    def replicas(self) -> int:
        return len(self.maxima)


def run_monte_carlo(
    batch: Callable[[NDArray[np.uint64]], NDArray[np.float64]],
    observed_max: float,
    replicas: int,
    stop_after: int,
    seed: int,
    batch_size: int = 64,
) -> MonteCarloRun:
    """Run ``replicas`` replicas in batches, stopping once ``stop_after`` maxima reach the
    observed maximum (Besag and Clifford's sequential test, as SaTScan does; 0 disables it).

    Replica ``r`` always uses seed ``r`` of the same sequence and the stop is placed at the exact
    replica where the ``stop_after``-th exceedance happened, so the result does not depend on
    batch size or thread count.
    """
    seeds = replica_seeds(seed, replicas)
    maxima = np.zeros(0, dtype=np.float64)
    done = 0
    while done < replicas:
        upto = min(replicas, done + batch_size)
        maxima = np.concatenate((maxima, batch(seeds[done:upto])))
        done = upto
        if stop_after > 0:
            hits = np.nonzero(maxima >= observed_max - LLR_TOLERANCE)[0]
            if len(hits) >= stop_after:
                return MonteCarloRun(maxima[: hits[stop_after - 1] + 1], stopped_early=True)
    return MonteCarloRun(maxima, stopped_early=False)


def p_value(llr: float, run: MonteCarloRun) -> float:
    """Monte Carlo p-value: rank / (R + 1), or h / n after a sequential stop (Besag-Clifford)."""
    reached = int(np.count_nonzero(run.maxima >= llr - LLR_TOLERANCE))
    if run.stopped_early:
        return min(1.0, reached / run.replicas)
    return (reached + 1) / (run.replicas + 1)
