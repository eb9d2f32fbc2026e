"""Thresholds of a fitted model, chosen from its own probabilities rather than from truth.

A fitted model's probability that a mention's best candidate is its entity is calibrated (EM's
posterior, or a choice fitted on labels), so the links above a threshold are expected to be
right as often as the mean of their probabilities. An organisation that has no labelled truth
can therefore still ask for a precision: link automatically only where the model expects at
least that share of its links to be right, and send the rest to review.

Dedup jobs (persons, incidents) are judged by the pairwise F1 of their clusters, so there the
model's probabilities estimate that instead: the expected number of right pairs in the
clusters a pair of thresholds gives is the sum of their pairs' probabilities, the expected
number of true pairs the sum over every candidate pair; the thresholds with the best
expected F1 win.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice
from typing import TypeVar

import msgspec

from cases.matching.engine import Matcher, ScoredBatch

__all__ = [
    "DEDUP_LINK_GRID",
    "DEDUP_MERGE_GRID",
    "LINK_PRECISION",
    "DedupEstimate",
    "dedup_thresholds_for_f1",
    "expected_cluster_scores",
    "expected_precision",
    "link_threshold_for_precision",
    "with_link_threshold_for_precision",
]

R = TypeVar("R")
F = TypeVar("F")

# The precision a fitted entity model is asked for over an org's mentions (the rest of its
# best guesses go to review). Half a point above the 0.98 the benchmark asks for: EM's own
# probabilities were measured 0.1-0.3 points over-confident on the v3 benchmark's mentions and
# about 1.5 points on the harder v2 (docs/decisions/0113-entity-model-fitting.md).
LINK_PRECISION = 0.985


def expected_precision(probabilities: Sequence[float], threshold: float) -> float | None:
    """The mean probability of the best candidates that would link at this threshold."""
    linked = [p for p in probabilities if p >= threshold]
    return sum(linked) / len(linked) if linked else None


def link_threshold_for_precision(
    probabilities: Sequence[float],
    target: float,
    *,
    lowest: float = 0.5,
    highest: float = 0.99,
    step: float = 0.01,
) -> float | None:
    """The lowest threshold on the grid lowest, lowest + step, ..., highest whose links have
    an expected precision of at least `target`; `highest` (the strictest) when none has; None
    when no mention would link even at `lowest`.

    `probabilities` are the best candidate's probability for each mention. Never below
    `lowest`: under it the model itself thinks a link more likely wrong than right.
    """
    if not 0.0 < target < 1.0:
        raise ValueError("the target precision must be between 0 and 1")
    steps = round((highest - lowest) / step)
    grid = [round(lowest + k * step, 6) for k in range(steps + 1)]
    any_link = False
    for threshold in grid:
        precision = expected_precision(probabilities, threshold)
        if precision is None:
            break  # higher thresholds link nothing either
        any_link = True
        if precision >= target:
            return threshold
    return highest if any_link else None


def with_link_threshold_for_precision(
    matcher: Matcher[R, F],
    registry: Sequence[R],
    mentions: Sequence[R],
    target: float = LINK_PRECISION,
) -> Matcher[R, F]:
    """The fitted linkage model with the auto-link threshold that gives `target` expected
    precision over these mentions (unchanged when none of them would link)."""
    index = matcher.build_index(registry)
    best = [matcher.match_one(mention, index, limit=1) for mention in mentions]
    link = link_threshold_for_precision([found[0].probability for found in best if found], target)
    if link is None:
        return matcher
    return matcher.with_thresholds(link, matcher.model.thresholds.review)


# The dedup thresholds an organisation's refit chooses among: auto-link never below even odds.
DEDUP_LINK_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
DEDUP_MERGE_GRID = (0.3, 0.4, 0.5)


class DedupEstimate(msgspec.Struct, frozen=True):
    """What a fitted model expects of its own clusters at one pair of thresholds."""

    link: float
    merge: float
    precision: float
    recall: float
    f1: float


def expected_cluster_scores(
    matcher: Matcher[R, F],
    batch: ScoredBatch[F],
    clusters: Sequence[Sequence[str]],
    true_pairs: float,
) -> tuple[float, float, float]:
    """Expected pairwise precision, recall and F1 of `clusters` of the batch's records, by the
    model's own probabilities: each pair inside a cluster is right with its probability, and
    `true_pairs` is the expected number of true pairs (the sum over the candidate pairs)."""
    position = {str(getattr(f, "id", "")): i for i, f in enumerate(batch.features)}
    predicted = 0
    right = 0.0
    for cluster in clusters:
        members = sorted(position[record] for record in cluster)
        for k, a in enumerate(members):
            for b in members[k + 1 :]:
                weight = batch.weights.get((a, b))
                if weight is None:  # joined through others: never scored as a candidate
                    weight = matcher.total_weight(
                        batch.features[a], batch.features[b], batch.frequencies
                    )
                right += matcher.model.probability(weight)
                predicted += 1
    precision = right / predicted if predicted else 1.0
    recall = right / true_pairs if true_pairs else 1.0
    f1 = 2 * right / (predicted + true_pairs) if predicted + true_pairs else 1.0
    return precision, recall, f1


def dedup_thresholds_for_f1(
    matcher: Matcher[R, F], batch: ScoredBatch[F]
) -> tuple[Matcher[R, F], list[DedupEstimate]]:
    """The fitted dedup model with the auto-link and merge thresholds (on the grids above)
    whose clusters of this batch have the best expected pairwise F1, and every estimate.

    The review threshold becomes the lower of the job's own and half the auto-link one, so a
    band of pairs the model thinks at least half as likely as the bar still reaches a human.
    """
    candidates = islice(batch.weights.values(), batch.candidate_pairs)
    true_pairs = sum(matcher.model.probability(weight) for weight in candidates)
    estimates: list[DedupEstimate] = []
    for link in DEDUP_LINK_GRID:
        for merge in DEDUP_MERGE_GRID:
            candidate = matcher.with_thresholds(link, link, merge)
            scores = expected_cluster_scores(candidate, batch, candidate.group(batch), true_pairs)
            estimates.append(DedupEstimate(link, merge, *scores))
    best = max(estimates, key=lambda e: (e.f1, e.link, e.merge))  # a tie: the stricter
    review = min(matcher.job.thresholds.review, best.link / 2)
    return matcher.with_thresholds(best.link, review, best.merge), estimates
