"""Entity surge scan: a purely temporal permutation scan over every employer or recruiter and every
group of them (a node of the entity tree plus all its descendants), adjusted for testing them all.

For node v and window w (the last 1..W days) the expected count is C_v * C_w / C, with C_v the
node's cases over the whole study period; the statistic is the Poisson log-likelihood ratio for
an excess. Each Monte Carlo replica shuffles dates among cases and keeps the maximum over all
nodes and windows, so one p-value per node is already adjusted for the number of nodes and
windows scanned (as TreeScan does for its tree). Groups are contiguous ranges of a depth-first
order, so a replica gets every group's counts from one prefix sum.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from cases.risk.family import MAX_SCAN_REPLICAS
from cases.risk.permutation import (
    compiled,
    compiled_parallel,
    draw_tail_sample,
    may_exceed,
    p_value,
    poisson_llr,
    restore_pool,
    run_monte_carlo,
)
from cases.risk.records import CaseCounts, individual_cases

__all__ = ["SURGE_METHOD", "EntitySurge", "SurgeParams", "SurgeResult", "scan_entity_surge"]

SURGE_METHOD = "entity-tree temporal permutation scan, prospective"


class SurgeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    study_days: Annotated[int, msgspec.Meta(ge=1, le=3660)]
    max_window_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 7
    min_cases: Annotated[int, msgspec.Meta(ge=1)] = 2
    replicas: Annotated[int, msgspec.Meta(ge=0, le=MAX_SCAN_REPLICAS)] = 999
    sequential_stop: Annotated[int, msgspec.Meta(ge=0)] = 50
    seed: Annotated[int, msgspec.Meta(ge=0)] = 0

    def __post_init__(self) -> None:
        if self.study_days < 1 or not 1 <= self.max_window_days <= self.study_days:
            raise ValueError("need 1 <= max_window_days <= study_days")
        if min(self.min_cases, self.replicas + 1, self.sequential_stop + 1, self.seed + 1) < 1:
            raise ValueError("min_cases >= 1; replicas, sequential_stop, seed >= 0")


class EntitySurge(msgspec.Struct, frozen=True):
    node: int
    group_size: int
    start_day: int
    end_day: int
    observed: int
    expected: float
    ratio: float
    llr: float
    p_value: float | None
    recurrence_interval_days: float | None


class SurgeResult(msgspec.Struct, frozen=True):
    method: str
    params: SurgeParams
    total_cases: int
    nodes: int
    replicas_run: int
    stopped_early: bool
    surges: tuple[EntitySurge, ...]
    """Each node's best window, highest LLR first; nodes without any excess are left out."""


def depth_first_ranges(parent: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """``(tin, tout)``: node v's group is positions ``tin[v]..tout[v]-1`` of a depth-first order.
    ``parent[v]`` is -1 for a root. Raises ValueError on a cycle or an out-of-range parent."""
    parents = np.asarray(parent, dtype=np.int64)
    n = len(parents)
    if n and (parents.min() < -1 or parents.max() >= n):
        raise ValueError("parent index out of range")
    children: list[list[int]] = [[] for _ in range(n)]
    for v, u in enumerate(parents.tolist()):
        if u >= 0:
            children[u].append(v)
    tin = np.full(n, -1, dtype=np.int64)
    tout = np.full(n, -1, dtype=np.int64)
    clock = 0
    for root in np.nonzero(parents < 0)[0].tolist():
        stack = [(root, False)]
        while stack:
            v, leaving = stack.pop()
            if leaving:
                tout[v] = clock
                continue
            tin[v] = clock
            clock += 1
            stack.append((v, True))
            stack.extend((c, False) for c in reversed(children[v]))
    if clock != n:
        raise ValueError("the entity tree has a cycle")
    return tin, tout


@compiled
def _group_counts(
    pos: Any,
    age: Any,
    n_nodes: Any,
    prefix: Any,
) -> Any:
    # prefix[i, w]: cases at depth-first positions < i in the last w+1 days.
    prefix[:, :] = 0.0
    for t in range(len(pos)):
        prefix[pos[t] + 1, age[t]] += 1.0
    for i in range(1, n_nodes + 1):
        for w in range(1, prefix.shape[1]):
            prefix[i, w] += prefix[i, w - 1]
        for w in range(prefix.shape[1]):
            prefix[i, w] += prefix[i - 1, w]


@compiled
def _node_best(
    v: Any,
    tin: Any,
    tout: Any,
    prefix: Any,
    node_cases: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    floor: Any,
    acc: Any,
) -> Any:
    for w in range(len(acc)):
        acc[w] = prefix[tout[v], w] - prefix[tin[v], w]
    best, best_w = floor, -1
    if not may_exceed(acc, node_cases[v], window_share, total, min_cases, best):
        return best, best_w
    for w in range(len(acc)):
        if acc[w] >= min_cases:
            llr = poisson_llr(acc[w], node_cases[v] * window_share[w], total)
            if llr > best:
                best, best_w = llr, w
    return best, best_w


@compiled_parallel
def _surge_replica_maxima(
    seeds: Any,
    case_pos: Any,
    tail_age: Any,
    n_windows: Any,
    tin: Any,
    tout: Any,
    node_cases: Any,
    window_share: Any,
    total: Any,
    min_cases: Any,
    n_chunks: Any,
) -> Any:
    n_rep, tail, n_nodes = len(seeds), len(tail_age), len(tin)
    out = np.zeros(n_rep)
    chunks = min(n_chunks, n_rep)
    for k in numba.prange(chunks):
        pool = np.arange(len(case_pos))
        swaps = np.empty(tail, dtype=np.int64)
        pos = np.empty(tail, dtype=np.int64)
        prefix = np.zeros((n_nodes + 1, n_windows))
        acc = np.zeros(n_windows)
        state = np.zeros(1, dtype=np.uint64)
        for r in range(k, n_rep, chunks):
            state[0] = seeds[r]
            draw_tail_sample(pool, tail, state, swaps)
            for t in range(tail):
                pos[t] = case_pos[pool[t]]
            restore_pool(pool, tail, swaps)
            _group_counts(pos, tail_age, n_nodes, prefix)
            best = 0.0
            for v in range(n_nodes):
                b, _ = _node_best(
                    v, tin, tout, prefix, node_cases, window_share, total, min_cases, best, acc
                )
                best = max(best, b)
            out[r] = best
    return out


def scan_entity_surge(parent: ArrayLike, cases: CaseCounts, params: SurgeParams) -> SurgeResult:
    """Scan ``cases`` (``unit`` = entity index) over the tree given by ``parent`` (-1 = root)."""
    tin, tout = depth_first_ranges(parent)
    n_nodes, n_win = len(tin), params.max_window_days
    data = individual_cases(cases, n_nodes, params.study_days)
    window_cases = np.cumsum(data.day_totals[::-1][:n_win])
    window_share = window_cases / max(data.total, 1.0)
    by_position = np.zeros(n_nodes + 1)
    by_position[tin + 1] = data.unit_totals
    running = np.cumsum(by_position)
    node_cases = running[tout] - running[tin]
    case_pos = tin[data.unit]
    in_tail = data.age < n_win
    prefix = np.zeros((n_nodes + 1, n_win))
    _group_counts(case_pos[in_tail], data.age[in_tail], n_nodes, prefix)
    acc = np.zeros(n_win)
    best = [
        _node_best(v, tin, tout, prefix, node_cases, window_share, data.total,
                   params.min_cases, 0.0, acc)
        for v in range(n_nodes)
    ]  # fmt: skip
    found = sorted((v for v in range(n_nodes) if best[v][1] >= 0), key=lambda v: -best[v][0])
    run = None
    if found and params.replicas > 0:
        tail_age = np.sort(data.age[in_tail])
        chunks = 4 * numba.get_num_threads()

        def batch(seeds: NDArray[np.uint64]) -> NDArray[np.float64]:
            return _surge_replica_maxima(  # type: ignore[no-any-return]
                seeds, case_pos, tail_age, n_win, tin, tout, node_cases, window_share,
                data.total, params.min_cases, chunks,
            )  # fmt: skip

        run = run_monte_carlo(
            batch, best[found[0]][0], params.replicas, params.sequential_stop, params.seed,
            batch_size=max(64, 4 * chunks),
        )  # fmt: skip
    surges = []
    for v in found:
        llr, w = best[v]
        observed = int(prefix[tout[v], w] - prefix[tin[v], w])
        expected = float(node_cases[v] * window_cases[w] / data.total)
        p = None if run is None else p_value(llr, run)
        surges.append(
            EntitySurge(
                node=v,
                group_size=int(tout[v] - tin[v]),
                start_day=params.study_days - 1 - w,
                end_day=params.study_days - 1,
                observed=observed,
                expected=expected,
                ratio=observed / expected,
                llr=float(llr),
                p_value=p,
                recurrence_interval_days=None if p is None else 1.0 / p,
            )
        )
    return SurgeResult(
        method=SURGE_METHOD,
        params=params,
        total_cases=int(data.total),
        nodes=n_nodes,
        replicas_run=0 if run is None else run.replicas,
        stopped_early=False if run is None else run.stopped_early,
        surges=tuple(surges),
    )
