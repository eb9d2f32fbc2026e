"""The matching engine: one `Matcher` API for incident dedup, entity resolution and person
dedup, configured by a job spec. It explains every score field by field, matches one record
against an incremental index, clusters a batch from scratch, and fits its own model."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import islice
from typing import Generic, Literal, TypeVar

import msgspec
import numpy as np

from cases.matching.blocking import CandidateIndex
from cases.matching.jobs import JobSpec
from cases.matching.model import (
    ChoiceCalibration,
    FrequencyTable,
    LevelMatrix,
    MatchModel,
    calibrate_choice,
    calibrate_fields,
    calibrate_from_labels,
    estimate_by_em,
    estimate_u,
    fit_from_labels,
    starting_model,
)
from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord

__all__ = [
    "Decision",
    "EntityRecord",
    "FieldContribution",
    "IncidentRecord",
    "MatchExplanation",
    "Matcher",
    "PersonRecord",
    "ScoredBatch",
    "ScoredCandidate",
]

R = TypeVar("R")
F = TypeVar("F")
Decision = Literal["link", "review", "no_link"]


class FieldContribution(msgspec.Struct, frozen=True):
    """What one field said about a pair."""

    field: str
    level: str  # a level name, or "missing"
    weight: float  # log2(m/u) of the level
    tf_adjustment: float  # shift for a rare or common agreeing value
    contribution: float  # weight + tf_adjustment


class MatchExplanation(msgspec.Struct, frozen=True):
    """A scored pair, field by field. `total_weight` is the sum of the contributions."""

    left_id: str
    right_id: str
    fields: tuple[FieldContribution, ...]
    total_weight: float
    prior_weight: float
    probability: float
    decision: Decision


class ScoredCandidate(msgspec.Struct, frozen=True):
    """One candidate of `match_one`. For a linkage job's best candidate, `probability` is the
    probability that it is the mention's entity, its competitors considered
    (`MatchModel.link_probability`); otherwise the pair's match probability."""

    id: str
    total_weight: float
    probability: float
    decision: Decision


def _identity(features: object) -> str:
    return str(getattr(features, "id", ""))


def _fits(model: MatchModel, fresh: MatchModel) -> bool:
    return [(f.name, f.levels) for f in model.fields] == [(f.name, f.levels) for f in fresh.fields]


class ScoredBatch(Generic[F]):
    """A batch indexed from scratch with the total weight of every candidate pair (positions
    in `features`, lower first); weights of other pairs are added when `group` needs them."""

    def __init__(
        self,
        features: list[F],
        frequencies: FrequencyTable,
        weights: dict[tuple[int, int], float],
    ) -> None:
        self.features = features
        self.frequencies = frequencies
        self.weights = weights
        # `group` adds the pairs it scores on demand after these (dicts keep their order).
        self.candidate_pairs = len(weights)


class _DisjointSets:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))
        self.members: dict[int, list[int]] = {i: [i] for i in range(size)}

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        if len(self.members[a]) < len(self.members[b]):
            a, b = b, a
        self.parent[b] = a
        self.members[a].extend(self.members.pop(b))


class Matcher(Generic[R, F]):
    """Scores, explains, matches and clusters records of one job."""

    def __init__(
        self,
        job: JobSpec[R, F],
        model: MatchModel | None = None,
        reference_frequencies: FrequencyTable | None = None,
    ) -> None:
        self.job = job
        fresh = starting_model(job.name, [(f.name, f.levels, f.tf_levels) for f in job.fields])
        if model is not None and not _fits(model, fresh):
            # A model stored before the job's fields or levels changed (a new comparator level)
            # cannot score the new levels: start afresh until the job is refitted.
            model = None
        # A given model keeps its thresholds (`with_thresholds` builds one); a fresh one takes
        # the job's.
        self.model = model or msgspec.structs.replace(fresh, thresholds=job.thresholds)
        # Value frequencies used when no index is given (explaining two loose records).
        self.reference_frequencies = reference_frequencies or FrequencyTable()
        self._weights = [
            [self.model.field_scale(i) * spec.weight(level) for level in range(len(spec.levels))]
            for i, spec in enumerate(self.model.fields)
        ]

    # Scoring -----------------------------------------------------------------------------

    def new_index(self) -> CandidateIndex[F]:
        job = self.job
        return CandidateIndex(
            job.index_keys,
            job.query_keys,
            job.count_values,
            max_postings=job.max_postings,
            max_candidates=job.max_candidates,
        )

    def build_index(self, records: Sequence[R]) -> CandidateIndex[F]:
        index = self.new_index()
        for record in records:
            index.add(self.job.prepare(record))
        return index

    def levels(self, a: F, b: F, frequencies: FrequencyTable) -> list[int]:
        return [spec.compare(a, b, frequencies) for spec in self.job.fields]

    def _tf(self, field: int, level: int, a: F, b: F, frequencies: FrequencyTable) -> float:
        spec = self.job.fields[field]
        if spec.tf_frequency is None or level not in spec.tf_levels:
            return 0.0
        frequency, reference = spec.tf_frequency(a, b, level, frequencies)
        adjustment = self.model.tf_adjustment(field, level, frequency, reference)
        return self.model.field_scale(field) * adjustment

    def total_weight(self, a: F, b: F, frequencies: FrequencyTable) -> float:
        total = 0.0
        for i, spec in enumerate(self.job.fields):
            level = spec.compare(a, b, frequencies)
            if level >= 0:
                total += self._weights[i][level]
                if spec.tf_levels:
                    total += self._tf(i, level, a, b, frequencies)
        return total

    def contributions(self, a: F, b: F, frequencies: FrequencyTable) -> list[float]:
        """Each field's contribution to the total weight (0 for a missing value)."""
        values = []
        for i, spec in enumerate(self.job.fields):
            level = spec.compare(a, b, frequencies)
            if level < 0:
                values.append(0.0)
                continue
            values.append(self._weights[i][level] + self._tf(i, level, a, b, frequencies))
        return values

    def explain_features(self, a: F, b: F, frequencies: FrequencyTable) -> MatchExplanation:
        contributions = []
        for i, spec in enumerate(self.job.fields):
            level = spec.compare(a, b, frequencies)
            weight = self._weights[i][level] if level >= 0 else 0.0
            tf = self._tf(i, level, a, b, frequencies) if level >= 0 else 0.0
            contributions.append(
                FieldContribution(
                    field=spec.name,
                    level=spec.levels[level] if level >= 0 else "missing",
                    weight=weight,
                    tf_adjustment=tf,
                    contribution=weight + tf,
                )
            )
        total = sum(c.contribution for c in contributions)
        probability = self.model.probability(total)
        return MatchExplanation(
            left_id=getattr(a, "id", ""),
            right_id=getattr(b, "id", ""),
            fields=tuple(contributions),
            total_weight=total,
            prior_weight=self.model.prior_weight,
            probability=probability,
            decision=self._decision(probability),
        )

    def explain(self, a: R, b: R, index: CandidateIndex[F] | None = None) -> MatchExplanation:
        """Why two records do or do not match, field by field."""
        frequencies = index.frequencies if index is not None else self.reference_frequencies
        return self.explain_features(self.job.prepare(a), self.job.prepare(b), frequencies)

    def _decision(self, probability: float) -> Decision:
        decision = self.model.decision(probability)
        return "link" if decision == "link" else "review" if decision == "review" else "no_link"

    # Matching ----------------------------------------------------------------------------

    def match_one(
        self, record: R, index: CandidateIndex[F], limit: int = 10
    ) -> list[ScoredCandidate]:
        """The best-scoring indexed records for a new record, best first."""
        features = self.job.prepare(record)
        own_id = getattr(features, "id", None)
        scored = []
        for position in index.candidates(features):
            other = index.records[position]
            other_id = getattr(other, "id", "")
            if other_id == own_id:
                continue
            weight = self.total_weight(features, other, index.frequencies)
            probability = self.model.probability(weight)
            scored.append(
                ScoredCandidate(other_id, weight, probability, self._decision(probability))
            )
        scored.sort(key=lambda c: c.total_weight, reverse=True)
        if self.job.linkage and scored:
            shown = scored[:limit]
            return [self._best_link(scored)] + [
                self._runner_up(scored, k) for k in range(1, len(shown))
            ]
        return scored[:limit]

    def _best_link(self, scored: list[ScoredCandidate]) -> ScoredCandidate:
        # A mention refers to at most one registry entity, so the best candidate's probability
        # depends on how well the others score too (`MatchModel.link_probability`).
        best, others = scored[0], [c.total_weight for c in scored[1:]]
        probability = self.model.link_probability(best.total_weight, others)
        decision = self._decision(probability)
        if decision == "link" and len(scored) > 1 and self.model.choice is None:
            # Without a fitted choice among the candidates, a plausible runner-up nearly as
            # good makes the choice between them a human's, not an auto-link. A fitted
            # `ChoiceCalibration` weighs the runner-up itself: its probability is the rule.
            runner_up = scored[1]
            gap = best.total_weight - runner_up.total_weight
            if runner_up.decision != "no_link" and gap < self.model.thresholds.ambiguity_margin:
                decision = "review"
        return msgspec.structs.replace(best, probability=probability, decision=decision)

    def _runner_up(self, scored: list[ScoredCandidate], k: int) -> ScoredCandidate:
        # The same choice seen from the k-th candidate: its share against all the others. A
        # mention names one entity, and only the best candidate may be linked automatically:
        # a runner-up goes to review at most (two equal candidates are a human's call).
        others = [c.total_weight for i, c in enumerate(scored) if i != k]
        probability = self.model.link_probability(scored[k].total_weight, others)
        decision = self._decision(probability)
        return msgspec.structs.replace(
            scored[k],
            probability=probability,
            decision="review" if decision == "link" else decision,
        )

    def join_decisions(
        self,
        record: F,
        candidates: Sequence[ScoredCandidate],
        groups: Mapping[str, Sequence[F]],
        frequencies: FrequencyTable,
    ) -> list[ScoredCandidate]:
        """Dedup, one new record at a time (the worker): `match_one`'s candidates with the
        decisions that may join the record to a candidate's group (`groups`: the members of each
        linked candidate's current group). As in `group`, a link joins only when the record's
        mean probability against the group's members (at most 50) reaches the merge threshold,
        so one strong pair does not pull a record into a group the rest of which disagrees;
        otherwise it is a review, and so is every later link (a runner-up is not linked because
        the best candidate was doubtful)."""
        decided: list[ScoredCandidate] = []
        may_link = True
        for candidate in candidates:
            if candidate.decision == "link":
                members = groups.get(candidate.id, ())[:50]
                mean = (
                    sum(
                        self.model.probability(self.total_weight(record, m, frequencies))
                        for m in members
                    )
                    / len(members)
                    if members
                    else candidate.probability
                )
                if not may_link or mean < self._merge_threshold():
                    candidate = msgspec.structs.replace(candidate, decision="review")
                    may_link = False
            decided.append(candidate)
        return decided

    def group_agreement(
        self, record: F, members: Sequence[F], frequencies: FrequencyTable
    ) -> tuple[float, float]:
        """The record's best and mean match probability against a group's members (at most
        50, as `join_decisions` counts them); (0, 0) for no members."""
        if not members:
            return 0.0, 0.0
        weights = [self.total_weight(record, m, frequencies) for m in members[:50]]
        probabilities = [self.model.probability(w) for w in weights]
        return self.model.probability(max(weights)), sum(probabilities) / len(probabilities)

    def would_join(self, record: F, members: Sequence[F], frequencies: FrequencyTable) -> bool:
        """Whether `join_decisions` would join the record to a group of these members now: its
        best-scoring member is a link and the members agree on average. A record the matcher
        joined to a group and that changed since keeps its place only if so."""
        if not members:
            return False
        best, mean = self.group_agreement(record, members, frequencies)
        return self._decision(best) == "link" and mean >= self._merge_threshold()

    def cross_agreement(
        self, group: Sequence[F], other: Sequence[F], frequencies: FrequencyTable
    ) -> float:
        """Mean match probability of the cross pairs of two groups (at most 50 members of each),
        the rule `group` merges two groups by; 0 if either is empty."""
        left, right = group[:50], other[:50]
        if not left or not right:
            return 0.0
        total = sum(
            self.model.probability(self.total_weight(a, b, frequencies))
            for a in left
            for b in right
        )
        return total / (len(left) * len(right))

    def merges_into(
        self,
        group: Sequence[F],
        others: Mapping[str, Sequence[F]],
        frequencies: FrequencyTable,
    ) -> list[tuple[str, float]]:
        """After a new record joined `group` (its members, the record included): which of the
        other groups its links reach (`others`, by linked candidate, in the candidates' order)
        merge into it, as `group` would merge them in a batch: each when its members agree with
        the group's (grown by the groups merged before it) on average. With their agreement."""
        merged: list[tuple[str, float]] = []
        grown = list(group)
        for candidate, members in others.items():
            agreement = self.cross_agreement(grown, members, frequencies)
            if members and agreement >= self._merge_threshold():
                merged.append((candidate, agreement))
                grown += members
        return merged

    def _merge_threshold(self) -> float:
        thresholds = self.model.thresholds
        return thresholds.review if thresholds.merge is None else thresholds.merge

    def score_batch(self, records: Sequence[R]) -> ScoredBatch[F]:
        """Index a batch from scratch and score every candidate pair once (the expensive
        half of `cluster`; `group` can then be run at several thresholds)."""
        index = self.build_index(records)
        features = index.records
        weights: dict[tuple[int, int], float] = {}
        for i, item in enumerate(features):
            for j in index.candidates(item, before=i):
                weights[(j, i)] = self.total_weight(item, features[j], index.frequencies)
        return ScoredBatch(features, index.frequencies, weights)

    def cluster(self, records: Sequence[R], *, coherent: bool = True) -> list[tuple[str, ...]]:
        """Group records from scratch: union of auto-links, strongest first, where a merge must
        also be supported on average by all cross pairs of the two groups (no chaining). With
        `coherent=False`, the plain transitive closure of the auto-links (for comparison: one
        wrong link then merges two whole groups)."""
        return self.group(self.score_batch(records), coherent=coherent)

    def group(self, batch: ScoredBatch[F], *, coherent: bool = True) -> list[tuple[str, ...]]:
        """The clustering step of `cluster` on a scored batch, at this matcher's thresholds
        (the batch must come from a matcher with the same model but for its thresholds)."""
        features, frequencies, weights = batch.features, batch.frequencies, batch.weights
        threshold = self.model.thresholds
        merge = self._merge_threshold()
        # Links come from the candidate pairs only, not from the pairs an earlier call's merge
        # checks scored: grouping a batch again must not depend on what was grouped before.
        links = sorted(
            (
                (weight, a, b)
                for (a, b), weight in islice(weights.items(), batch.candidate_pairs)
                if self.model.probability(weight) >= threshold.link
            ),
            reverse=True,
        )
        sets = _DisjointSets(len(features))

        def pair_probability(x: int, y: int) -> float:
            key = (x, y) if x < y else (y, x)
            if key not in weights:
                weights[key] = self.total_weight(features[key[0]], features[key[1]], frequencies)
            return self.model.probability(weights[key])

        for _, a, b in links:
            root_a, root_b = sets.find(a), sets.find(b)
            if root_a == root_b:
                continue
            group_a, group_b = sets.members[root_a], sets.members[root_b]
            if coherent and len(group_a) * len(group_b) > 1:
                cross = [pair_probability(x, y) for x in group_a[:50] for y in group_b[:50]]
                if sum(cross) / len(cross) < merge:
                    continue
            sets.union(root_a, root_b)
        ids = [str(getattr(f, "id", "")) for f in features]
        return [tuple(ids[i] for i in sorted(group)) for group in sets.members.values()]

    # Fitting -----------------------------------------------------------------------------

    def _level_matrix(
        self, pairs: Sequence[tuple[F, F]], frequencies: FrequencyTable
    ) -> LevelMatrix:
        rows = [self.levels(a, b, frequencies) for a, b in pairs]
        return np.asarray(rows, dtype=np.int8).reshape(len(rows), len(self.job.fields))

    def _with(self, model: MatchModel, frequencies: FrequencyTable) -> Matcher[R, F]:
        return Matcher(self.job, model, frequencies)

    def fit(
        self,
        records: Sequence[R],
        against: Sequence[R] | None = None,
        *,
        same: Callable[[str, str], bool] | None = None,
        seed: int = 0,
        random_pairs: int = 50_000,
        max_candidate_pairs: int = 200_000,
        u_from_candidates: bool = True,
    ) -> Matcher[R, F]:
        """Fit m, u and the prior on the pairs that blocking produces.

        Without `same`: u starts from random pairs, then EM estimates m, u and the prior on
        the unlabelled candidate pairs. With `same(left_id, right_id)` (labels, e.g. past human
        decisions or a labelled training set): m and u are counted on the labelled candidate
        pairs and the probability is calibrated on them (u among the candidate pairs, or
        from the random pairs with `u_from_candidates=False`); for a linkage job the choice
        among a mention's candidates is calibrated too (`ChoiceCalibration`; without labels,
        EM itself bounds each mention to one match and the choice is its posterior).
        Without `against` the job is deduplication within `records`; with it, `records` are
        linked to the reference set `against` (mentions to the registry).
        """
        rng = np.random.default_rng(seed)
        index = self.build_index(against if against is not None else records)
        frequencies = index.frequencies
        left = [self.job.prepare(r) for r in records] if against is not None else index.records
        right = index.records
        picks = zip(
            rng.integers(0, len(left), random_pairs).tolist(),
            rng.integers(0, len(right), random_pairs).tolist(),
            strict=True,
        )
        sampled = [(left[i], right[j]) for i, j in picks]
        sampled = [(a, b) for a, b in sampled if a is not b]
        model = estimate_u(self.model, self._level_matrix(sampled, frequencies))
        linkage = against is not None and self.job.linkage
        candidates: list[tuple[F, F]] = []
        owners: list[int] = []  # the position in `left` of each pair's first record
        for i, item in enumerate(left):
            before = None if against is not None else i
            found = index.candidates(item, before=before)
            candidates.extend((item, right[j]) for j in found)
            owners.extend([i] * len(found))
        if len(candidates) > max_candidate_pairs:
            if linkage:
                # Whole mentions, so that each keeps all its candidates (the EM below weighs
                # them against each other).
                order = rng.permutation(len(left)).tolist()
                counts = Counter(owners)
                kept: set[int] = set()
                total = 0
                for i in order:
                    if total + counts[i] > max_candidate_pairs:
                        break
                    kept.add(i)
                    total += counts[i]
                chosen = [k for k, owner in enumerate(owners) if owner in kept]
            else:
                chosen = rng.choice(len(candidates), max_candidate_pairs, replace=False).tolist()
            candidates = [candidates[k] for k in chosen]
            owners = [owners[k] for k in chosen]
        levels = self._level_matrix(candidates, frequencies)
        if same is None:
            # u is re-estimated among candidate pairs: blocking makes non-matches agree on the
            # blocked fields far more often than random pairs do, and only blocked pairs are
            # ever scored. A mention names at most one entity: its candidates share one match.
            # The matcher's own model is the prior, not the random pairs' u (`estimate_by_em`).
            if not linkage:
                fitted_dedup = estimate_by_em(model, levels, fix_u=False, prior_model=self.model)
                return self._with(fitted_dedup, frequencies)
            groups = np.asarray(owners, dtype=np.int64)
            fitted_em = estimate_by_em(
                model, levels, fix_u=False, groups=groups, prior_model=self.model
            )
            # The choice among a mention's candidates is then the fitted model's own
            # posterior (Bayes, odds = 2^(w + prior log-odds)), which weighs a runner-up.
            choice = ChoiceCalibration(slope=1.0, intercept=fitted_em.prior_weight)
            return self._with(msgspec.structs.replace(fitted_em, choice=choice), frequencies)
        labels = [same(_identity(a), _identity(b)) for a, b in candidates]
        model = fit_from_labels(model, levels, labels, prior_strength=1.0, fit_u=u_from_candidates)
        rate = min(max(sum(labels) / max(len(labels), 1), 1e-4), 1 - 1e-4)
        model = msgspec.structs.replace(model, prior=rate)
        fitted = self._with(model, frequencies)
        if against is None:
            # Deduplication: one scale per field, so that a field whose weights overstate
            # the evidence (names, whose agreement is not independent of the other
            # fields' absence) is discounted against the others.
            contributions = [fitted.contributions(a, b, frequencies) for a, b in candidates]
            matrix = np.asarray(contributions, dtype=np.float64).reshape(-1, len(model.fields))
            return self._with(calibrate_fields(model, matrix, labels), frequencies)
        totals = [fitted.total_weight(a, b, frequencies) for a, b in candidates]
        model = calibrate_from_labels(model, totals, labels)
        if not self.job.linkage:
            return self._with(model, frequencies)
        return self._with(self._fit_linkage(model, left, index, same), frequencies)

    def _fit_linkage(
        self,
        model: MatchModel,
        mentions: Sequence[F],
        index: CandidateIndex[F],
        same: Callable[[str, str], bool],
    ) -> MatchModel:
        """Calibrate the linkage probability on labelled mentions: which of its candidates is
        the mention's entity, if any (none for mentions of entities outside the registry)?"""
        scorer = self._with(model, index.frequencies)
        candidate_weights: list[list[float]] = []
        chosen: list[int | None] = []
        for mention in mentions:
            positions = index.candidates(mention)
            candidate_weights.append(
                [
                    scorer.total_weight(mention, index.records[j], index.frequencies)
                    for j in positions
                ]
            )
            mention_id = _identity(mention)
            chosen.append(
                next(
                    (
                        k
                        for k, j in enumerate(positions)
                        if same(mention_id, _identity(index.records[j]))
                    ),
                    None,
                )
            )
        fitted = calibrate_choice(model, candidate_weights, chosen)
        return msgspec.structs.replace(fitted, linkage=None) if fitted.choice else fitted

    def refit_from_labels(self, labelled: Sequence[tuple[R, R, bool]]) -> Matcher[R, F]:
        """Refit m from human decisions (kept as labels), then recalibrate the probability."""
        prepare = self.job.prepare
        pairs = [(prepare(a), prepare(b)) for a, b, _ in labelled]
        labels = [label for _, _, label in labelled]
        frequencies = self.reference_frequencies
        model = fit_from_labels(self.model, self._level_matrix(pairs, frequencies), labels)
        refitted = self._with(model, frequencies)
        totals = [refitted.total_weight(a, b, frequencies) for a, b in pairs]
        return self._with(calibrate_from_labels(model, totals, labels), frequencies)

    def with_thresholds(
        self, link: float, review: float, merge: float | None = None
    ) -> Matcher[R, F]:
        """The same model with other thresholds (`merge`: see `Thresholds`; None keeps the
        current one)."""
        merge = self.model.thresholds.merge if merge is None else merge
        thresholds = msgspec.structs.replace(
            self.model.thresholds, link=link, review=review, merge=merge
        )
        model = msgspec.structs.replace(self.model, thresholds=thresholds)
        return self._with(model, self.reference_frequencies)
