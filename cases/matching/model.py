"""The Fellegi-Sunter scoring model: m and u per agreement level, term-frequency adjustment,
estimation (EM on unlabelled candidate pairs, or counts from labelled pairs) and calibration of
the total weight to a match probability. Models are msgspec Structs, so storage can persist them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import numpy.typing as npt

__all__ = [
    "Calibration",
    "ChoiceCalibration",
    "FieldModel",
    "FrequencyTable",
    "LinkCalibration",
    "MatchModel",
    "Thresholds",
    "calibrate_choice",
    "calibrate_fields",
    "calibrate_from_labels",
    "calibrate_linkage",
    "competitor_mass",
    "estimate_by_em",
    "estimate_u",
    "fit_from_labels",
    "starting_model",
]

LevelMatrix = npt.NDArray[np.int8]  # one row per pair, one column per field, -1 = missing

_EPSILON = 1e-6
_MIN_RECORDS_FOR_FREQUENCY = 200


class FieldModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """m (P(level | match)) and u (P(level | non-match)) for each level of one field."""

    name: str
    levels: tuple[str, ...]
    m: tuple[float, ...]
    u: tuple[float, ...]
    tf_levels: tuple[int, ...] = ()  # levels whose weight is adjusted by value frequency

    def weight(self, level: int) -> float:
        """log2(m/u) for a level; a missing value (-1) carries no evidence."""
        if level < 0:
            return 0.0
        return math.log2(max(self.m[level], _EPSILON) / max(self.u[level], _EPSILON))


class Thresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Probability above `link` is linked automatically; between `review` and `link`, a human
    decides."""

    link: float = 0.95
    review: float = 0.5
    # Linkage jobs without a fitted `ChoiceCalibration` only: the best candidate must beat a
    # plausible runner-up by this many bits.
    ambiguity_margin: float = 4.0
    # Clustering (dedup jobs): the mean probability over the cross pairs of two groups that
    # an auto-link between them needs to merge them; None: `review` (the first behaviour).
    merge: float | None = None


class Calibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """probability = 1 / (1 + 2 ** -(slope * total_weight + intercept)).

    Without labels slope is 1 and intercept is the prior log-odds (the Bayes rule of the model
    itself); labels refit both by logistic regression.
    """

    slope: float = 1.0
    intercept: float = 0.0
    source: str = "prior"


class LinkCalibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Linkage jobs (a mention against the registry): the probability that the best candidate
    is the mention's entity, 1 / (1 + 2 ** -(best * w1 + competitors * c + intercept)), where
    w1 is its total weight and c the `competitor_mass` of the other candidates. A pairwise
    probability cannot say this: the same name agreement is decisive when no other registry
    entry comes close and worthless when a sibling agency scores as well."""

    best: float
    competitors: float
    intercept: float

    def probability(self, best_weight: float, competitors: float) -> float:
        exponent = -(self.best * best_weight + self.competitors * competitors + self.intercept)
        odds_against: float = 2.0 ** min(exponent, 1000.0)
        return 1.0 / (1.0 + odds_against)


def _log2_sum_exp2(exponents: Sequence[float]) -> float:
    """log2(sum of 2^x), without overflow."""
    top = max(exponents)
    return top + math.log2(sum(2.0 ** (x - top) for x in exponents))


class ChoiceCalibration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Linkage jobs: which of its candidates a mention names, or none of them (a conditional
    logit). Each candidate's odds are 2 ** (slope * w + intercept), w its total weight, and
    "none of them" has odds 1, so the best candidate's probability is
    odds_1 / (1 + sum of all candidates' odds): two candidates that fit equally well share the
    probability (neither reaches 0.5), and one without a rival keeps its pairwise odds.

    Fitted on labelled mentions by maximum likelihood over all candidates of each mention
    (the right one need not be the best), so that each mention counts once and names at
    most one entity: the constraint a pairwise calibration, which counts every candidate
    pair as a separate trial, cannot express."""

    slope: float
    intercept: float

    def probability(self, best_weight: float, other_weights: Sequence[float]) -> float:
        exponents = [self.slope * w + self.intercept for w in (best_weight, *other_weights)]
        return float(2.0 ** (exponents[0] - _log2_sum_exp2([0.0, *exponents])))


class MatchModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A fitted model for one job."""

    job: str
    fields: tuple[FieldModel, ...]
    prior: float  # proportion of matches among blocked candidate pairs
    calibration: Calibration = Calibration()
    thresholds: Thresholds = Thresholds()
    tf_cap: float = 6.0  # bounds on the term-frequency adjustment, in bits
    method: str = "starting"  # how m and u were obtained: starting, em, labels
    # Fitted on labelled linkages only. `choice` since the fifth version; `linkage` is the
    # earlier best-candidate fit, still read from stored models until they are refitted.
    choice: ChoiceCalibration | None = None
    linkage: LinkCalibration | None = None
    # Dedup jobs fitted on labels: each field's contribution (weight and term-frequency
    # adjustment) is multiplied by its scale before the contributions are summed
    # (`calibrate_fields`); None: every field counts as its log-likelihood ratio.
    field_scales: tuple[float, ...] | None = None

    def field_scale(self, field: int) -> float:
        return 1.0 if self.field_scales is None else self.field_scales[field]

    def odds(self, total_weight: float) -> float:
        """Pairwise odds of a match, p / (1 - p), without overflow."""
        calibration = self.calibration
        intercept = self.prior_weight if calibration.source == "prior" else calibration.intercept
        return float(2.0 ** min(calibration.slope * total_weight + intercept, 1000.0))

    def link_probability(self, best_weight: float, other_weights: Sequence[float]) -> float:
        """Probability that the best candidate of a linkage is the right entity. Fitted when
        labels were available (`ChoiceCalibration`); otherwise Bayes over the candidates, each
        mention naming at most one of them: odds_1 / (1 + sum of all candidates' odds)."""
        if self.choice is not None:
            return self.choice.probability(best_weight, other_weights)
        if self.linkage is not None:
            return self.linkage.probability(best_weight, competitor_mass(other_weights))
        best = self.odds(best_weight)
        if math.isinf(best):
            return 1.0
        return best / (1.0 + best + sum(self.odds(w) for w in other_weights))

    @property
    def prior_weight(self) -> float:
        return math.log2(self.prior / (1 - self.prior))

    def tf_adjustment(
        self, field: int, level: int, frequency: float | None, reference: float | None = None
    ) -> float:
        """Shift of a level's weight when the agreeing value is rarer or commoner than average.

        The level's weight already holds the evidence of an agreement on a typical value; an
        agreement on a value of `frequency` shifts it by log2(reference / frequency). The
        `reference` is the typical frequency of agreeing values (`FrequencyTable.typical`);
        without it, u of the level stands in (right when u comes from random pairs).
        """
        spec = self.fields[field]
        if frequency is None or level < 0 or level not in spec.tf_levels:
            return 0.0
        typical = spec.u[level] if reference is None else reference
        adjustment = math.log2(max(typical, _EPSILON) / max(frequency, _EPSILON))
        return min(self.tf_cap, max(-self.tf_cap, adjustment))

    def probability(self, total_weight: float) -> float:
        calibration = self.calibration
        intercept = calibration.intercept
        if calibration.source == "prior":
            intercept = self.prior_weight
        exponent = -(calibration.slope * total_weight + intercept)
        odds_against: float = 2.0 ** min(exponent, 1000.0)
        return 1.0 / (1.0 + odds_against)

    def decision(self, probability: float) -> str:
        if probability >= self.thresholds.link:
            return "link"
        if probability >= self.thresholds.review:
            return "review"
        return "no_link"


class FrequencyTable(msgspec.Struct):
    """Counts of values per namespace (name keys, name tokens), for term-frequency adjustment
    and rarity weights. Updated incrementally as records are indexed."""

    counts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    totals: dict[str, int] = msgspec.field(default_factory=dict)  # records counted
    # Sum of the counts and of their squares, per namespace: kept up to date so that the
    # typical frequency of an agreeing value costs nothing to read.
    sums: dict[str, int] = msgspec.field(default_factory=dict)
    squares: dict[str, int] = msgspec.field(default_factory=dict)

    def _bump(self, namespace: str, table: dict[str, int], value: str) -> None:
        count = table.get(value, 0)
        table[value] = count + 1
        self.sums[namespace] = self.sums.get(namespace, 0) + 1
        self.squares[namespace] = self.squares.get(namespace, 0) + 2 * count + 1

    def add(self, namespace: str, value: str) -> None:
        self._bump(namespace, self.counts.setdefault(namespace, {}), value)
        self.totals[namespace] = self.totals.get(namespace, 0) + 1

    def add_set(self, namespace: str, values: set[str] | frozenset[str]) -> None:
        """Count each value once for one record: frequencies become document frequencies."""
        table = self.counts.setdefault(namespace, {})
        for value in values:
            self._bump(namespace, table, value)
        self.totals[namespace] = self.totals.get(namespace, 0) + 1

    def subtract(self, counted: FrequencyTable) -> None:
        """Take out what `counted` holds (the counts of records leaving the index), keeping the
        sums and squares as if those records had never been counted."""
        for namespace, values in counted.counts.items():
            table = self.counts.get(namespace, {})
            for value, times in values.items():
                for _ in range(times):
                    count = table.get(value, 0)
                    if count <= 0:
                        raise ValueError(f"{namespace}:{value} is not counted")
                    if count == 1:
                        del table[value]
                    else:
                        table[value] = count - 1
                    self.sums[namespace] -= 1
                    self.squares[namespace] -= 2 * count - 1
        for namespace, total in counted.totals.items():
            self.totals[namespace] = self.totals.get(namespace, 0) - total

    def typical(self, namespace: str) -> float | None:
        """Expected frequency of the value two records agree on, when they agree by chance:
        sum(f^2) / sum(f). The reference of the term-frequency adjustment: values commoner
        than this weigh less than the level's weight, rarer ones more."""
        total = self.totals.get(namespace, 0)
        sums = self.sums.get(namespace, 0)
        if total < _MIN_RECORDS_FOR_FREQUENCY or not sums:
            return None
        return self.squares.get(namespace, 0) / (total * sums)

    def is_counted(self, namespace: str) -> bool:
        """Whether enough records are counted in `namespace` for shares to mean anything."""
        return self.totals.get(namespace, 0) >= _MIN_RECORDS_FOR_FREQUENCY

    def count(self, namespace: str, value: str) -> int:
        return int(self.counts.get(namespace, {}).get(value, 0))

    def frequency(self, namespace: str, value: str) -> float | None:
        """Share of records holding `value`; None while too few records are counted for a
        share to mean anything (the adjustment is then skipped)."""
        total = self.totals.get(namespace, 0)
        if total < _MIN_RECORDS_FOR_FREQUENCY:
            return None
        return max(self.count(namespace, value), 1) / total

    def rarity(self, namespace: str, value: str) -> float:
        """Inverse document frequency (natural log, smoothed, at least 0.1)."""
        total = self.totals.get(namespace, 0)
        return max(0.1, math.log((total + 1) / (self.count(namespace, value) + 1)) + 1.0)


def starting_model(
    job: str, fields: Sequence[tuple[str, tuple[str, ...], tuple[int, ...]]], prior: float = 0.05
) -> MatchModel:
    """Neutral starting values for EM: m falls and u rises with the level index."""
    specs = []
    for name, levels, tf_levels in fields:
        count = len(levels)
        m = np.array([0.5**i for i in range(count)])
        u = np.array([0.5 ** (count - 1 - i) for i in range(count)])
        specs.append(
            FieldModel(
                name=name,
                levels=levels,
                m=tuple(float(x) for x in m / m.sum()),
                u=tuple(float(x) for x in u / u.sum()),
                tf_levels=tf_levels,
            )
        )
    return MatchModel(job=job, fields=tuple(specs), prior=prior)


def _distribution(counts: npt.NDArray[np.float64]) -> tuple[float, ...]:
    total = counts.sum()
    return tuple(float(x) for x in counts / total)


def _level_counts(
    levels: LevelMatrix, weights: npt.NDArray[np.float64], field: int, size: int
) -> npt.NDArray[np.float64]:
    column = levels[:, field].astype(np.int64)
    present = column >= 0
    counts = np.bincount(column[present], weights=weights[present], minlength=size)
    return counts[:size].astype(np.float64)


def estimate_u(model: MatchModel, random_pairs: LevelMatrix) -> MatchModel:
    """u from random record pairs, which are almost all non-matches (smoothed by one count)."""
    ones = np.ones(len(random_pairs))
    fields = tuple(
        msgspec.structs.replace(
            spec, u=_distribution(_level_counts(random_pairs, ones, i, len(spec.levels)) + 1.0)
        )
        for i, spec in enumerate(model.fields)
    )
    return msgspec.structs.replace(model, fields=fields)


def _log_likelihood_ratio(
    model: MatchModel, levels: LevelMatrix
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    log_m = np.zeros(len(levels))
    log_u = np.zeros(len(levels))
    for i, spec in enumerate(model.fields):
        column = levels[:, i].astype(np.int64)
        present = column >= 0
        m = np.log(np.maximum(np.asarray(spec.m), _EPSILON))
        u = np.log(np.maximum(np.asarray(spec.u), _EPSILON))
        log_m[present] += m[column[present]]
        log_u[present] += u[column[present]]
    return log_m, log_u


def _one_per_group(
    logit: npt.NDArray[np.float64], groups: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Posterior of each pair when its group holds at most one match: e^l / (1 + sum e^l)."""
    size = int(groups.max()) + 1 if len(groups) else 0
    top = np.zeros(size)
    np.maximum.at(top, groups, logit)
    scaled = np.exp(logit - top[groups])
    denominator = np.exp(-top) + np.bincount(groups, weights=scaled, minlength=size)
    posterior: npt.NDArray[np.float64] = scaled / denominator[groups]
    return posterior


def estimate_by_em(
    model: MatchModel,
    candidate_pairs: LevelMatrix,
    *,
    fix_u: bool = True,
    prior_strength: float = 10.0,
    iterations: int = 100,
    tolerance: float = 1e-5,
    groups: npt.NDArray[np.int64] | None = None,
    prior_model: MatchModel | None = None,
) -> MatchModel:
    """Expectation-maximisation of m (and u unless fixed) and the match prior on unlabelled
    candidate pairs, starting from `model`. `prior_model` (default: `model`) is a Dirichlet
    prior worth `prior_strength` pairs per field, which keeps rare levels away from 0 and 1.
    Give the job's own model there when `model`'s u comes from random pairs: random pairs
    almost never reach the partial name levels, so a level the candidate pairs never show
    either would keep a u near 0 from them, and a weight of 10 bits that no data supports.

    `groups` (linkage jobs: the mention of each pair) bounds the matches to at most one per
    group: a pair's posterior is its odds over 1 + the sum of its group's odds, as in
    `MatchModel.link_probability`. Without the bound, a mention's dozen candidates of the
    same country and legal form can all be called matches, and the "match" class learns
    that instead of the entity."""
    current = model
    belief = prior_model if prior_model is not None else model
    sizes = np.bincount(groups).astype(np.float64) if groups is not None else np.zeros(0)
    named = sizes > 0
    share = 0.5  # of the groups that hold a match (with `groups`)
    for _ in range(iterations):
        log_m, log_u = _log_likelihood_ratio(current, candidate_pairs)
        if groups is None:
            logit = log_m - log_u + math.log(current.prior / (1 - current.prior))
            posterior = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        else:
            # A group holds a match with probability `share`, any of its candidates alike.
            odds = np.log(share / (1 - share)) - np.log(np.maximum(sizes, 1.0))
            posterior = _one_per_group(log_m - log_u + odds[groups], groups)
            found = np.bincount(groups, weights=posterior, minlength=len(sizes))
            share = float(np.clip(found[named].mean(), 1e-4, 1 - 1e-4))
        prior = float(np.clip(posterior.mean(), 1e-4, 1 - 1e-4))
        fields = []
        for i, spec in enumerate(current.fields):
            size = len(spec.levels)
            m_counts = _level_counts(candidate_pairs, posterior, i, size)
            m_counts += prior_strength * np.asarray(belief.fields[i].m)
            u = spec.u
            if not fix_u:
                u_counts = _level_counts(candidate_pairs, 1.0 - posterior, i, size)
                u = _distribution(u_counts + prior_strength * np.asarray(belief.fields[i].u))
            fields.append(msgspec.structs.replace(spec, m=_distribution(m_counts), u=u))
        updated = msgspec.structs.replace(current, fields=tuple(fields), prior=prior, method="em")
        change = max(
            abs(a - b)
            for new, old in zip(updated.fields, current.fields, strict=True)
            for a, b in zip(new.m + new.u, old.m + old.u, strict=True)
        )
        current = updated
        if change < tolerance:
            break
    return current


def fit_from_labels(
    model: MatchModel,
    pairs: LevelMatrix,
    labels: Sequence[bool],
    *,
    prior_strength: float = 10.0,
    fit_u: bool = False,
) -> MatchModel:
    """Refit m (and u if asked) from human decisions on pairs, keeping the current model as a
    prior worth `prior_strength` pairs. Reviewed pairs are not a random sample of non-matches,
    so u is by default kept from random pairs."""
    is_match = np.asarray(labels, dtype=bool)
    fields = []
    for i, spec in enumerate(model.fields):
        size = len(spec.levels)
        m_counts = _level_counts(pairs, is_match.astype(np.float64), i, size)
        m = _distribution(m_counts + prior_strength * np.asarray(spec.m))
        u = spec.u
        if fit_u:
            u_counts = _level_counts(pairs, (~is_match).astype(np.float64), i, size)
            u = _distribution(u_counts + prior_strength * np.asarray(spec.u))
        fields.append(msgspec.structs.replace(spec, m=m, u=u))
    return msgspec.structs.replace(model, fields=tuple(fields), method="labels")


def _fit_logistic(
    features: npt.NDArray[np.float64], labels: Sequence[bool], ridge: float = 1e-3
) -> npt.NDArray[np.float64]:
    """Logistic regression of `labels` on the columns of `features` plus an intercept (last
    coefficient), in bits: P = 1 / (1 + 2 ** -(features @ theta[:-1] + theta[-1]))."""
    x = np.column_stack([features * math.log(2), np.ones(len(features))])
    y = np.asarray(labels, dtype=np.float64)
    rate = float(np.clip(y.mean(), 1e-6, 1 - 1e-6)) if len(y) else 0.5
    penalty = np.full(x.shape[1], ridge)
    penalty[-1] = 1e-9  # the intercept is not shrunk

    def loss(theta: npt.NDArray[np.float64]) -> float:
        z = x @ theta
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + np.sum(penalty * theta**2) / 2)

    # Newton-Raphson from the flat model, with a small ridge for nearly separable data and a
    # backtracking line search (weights span tens of bits, so full steps can overshoot).
    theta = np.zeros(x.shape[1])
    theta[-1] = math.log(rate / (1 - rate))
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ theta, -50, 50)))
        gradient = x.T @ (p - y) + penalty * theta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        current, scale = loss(theta), 1.0
        while scale > 1e-6 and loss(theta - scale * step) > current:
            scale /= 2
        theta = theta - scale * step
        if float(np.abs(scale * step).max()) < 1e-9:
            break
    coefficients: npt.NDArray[np.float64] = theta / math.log(2)
    coefficients[:-1] = theta[:-1]  # feature coefficients act on bits already scaled by ln 2
    return coefficients


def calibrate_from_labels(
    model: MatchModel, total_weights: Sequence[float], labels: Sequence[bool]
) -> MatchModel:
    """Logistic regression of the labels on the total weight (Platt scaling, in bits)."""
    weights = np.asarray(total_weights, dtype=np.float64).reshape(-1, 1)
    slope, intercept = (float(v) for v in _fit_logistic(weights, labels))
    calibration = Calibration(slope=slope, intercept=intercept, source="labels")
    return msgspec.structs.replace(model, calibration=calibration)


def calibrate_fields(
    model: MatchModel, contributions: npt.NDArray[np.float64], labels: Sequence[bool]
) -> MatchModel:
    """Logistic regression of the labels on each field's contribution (one column per field,
    in bits): the fitted coefficients become `field_scales` and the probability is the
    logistic of their sum plus the fitted intercept (slope 1)."""
    coefficients = _fit_logistic(contributions, labels)
    calibration = Calibration(slope=1.0, intercept=float(coefficients[-1]), source="labels")
    scales = tuple(float(c) for c in coefficients[:-1])
    return msgspec.structs.replace(model, calibration=calibration, field_scales=scales)


def competitor_mass(other_weights: Sequence[float]) -> float:
    """log2(1 + sum of 2^w) over the other candidates of a linkage: 0 without a plausible
    competitor, about w for one competitor of weight w > 0."""
    if not other_weights:
        return 0.0
    top = max(other_weights)
    if top > 0:
        return top + math.log2(2.0**-top + sum(2.0 ** (w - top) for w in other_weights))
    return math.log2(1.0 + sum(2.0**w for w in other_weights))


def calibrate_linkage(
    model: MatchModel,
    best_weights: Sequence[float],
    competitors: Sequence[float],
    labels: Sequence[bool],
) -> MatchModel:
    """Fit the probability that a linkage's best candidate is the right one from its weight
    and its competitors' mass (`competitor_mass`), on labelled linkages."""
    features = np.column_stack(
        [np.asarray(best_weights, dtype=np.float64), np.asarray(competitors, dtype=np.float64)]
    )
    best, rivals, intercept = (float(v) for v in _fit_logistic(features, labels))
    linkage = LinkCalibration(best=best, competitors=rivals, intercept=intercept)
    return msgspec.structs.replace(model, linkage=linkage)


def _choice_log_likelihood(
    theta: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    right: npt.NDArray[np.bool_],
    size: int,
) -> tuple[float, npt.NDArray[np.float64]]:
    """Log-likelihood (nats) of the conditional logit, and every candidate's probability."""
    z = theta[0] * weights + theta[1]
    top = np.zeros(size)
    np.maximum.at(top, groups, z)  # at least 0: the odds of "none of them"
    scaled = np.exp(z - top[groups])
    denominator = np.exp(-top) + np.bincount(groups, weights=scaled, minlength=size)
    log_denominator = top + np.log(denominator)
    probabilities = scaled / denominator[groups]
    return float(z[right].sum() - log_denominator.sum()), probabilities


def calibrate_choice(
    model: MatchModel,
    candidate_weights: Sequence[Sequence[float]],
    chosen: Sequence[int | None],
    ridge: float = 1e-3,
) -> MatchModel:
    """Fit the `ChoiceCalibration` of a linkage job by maximum likelihood (Newton-Raphson):
    `candidate_weights` holds the total weights of each labelled mention's candidates, and
    `chosen` the position of its entity among them (None: not among them, or not in the
    registry at all)."""
    rows = [(g, w) for g, ws in enumerate(candidate_weights) for w in ws]
    if not rows:
        return model
    groups = np.asarray([g for g, _ in rows], dtype=np.int64)
    weights = np.asarray([w for _, w in rows], dtype=np.float64)
    offsets = np.cumsum([0, *(len(ws) for ws in candidate_weights)])[:-1]
    right = np.zeros(len(rows), dtype=bool)
    for g, position in enumerate(chosen):
        if position is not None and position < len(candidate_weights[g]):
            right[offsets[g] + position] = True
    if not right.any():
        return model  # no mention names a candidate: nothing to learn a candidate's odds from
    # When every mention names one of its candidates, the odds of "none of them" would grow
    # without bound; the small ridge keeps them finite.
    size = len(candidate_weights)
    features = np.column_stack([weights, np.ones(len(weights))])
    observed = features[right].sum(axis=0)
    theta = np.array([0.5 * math.log(2), 0.0])
    for _ in range(100):
        current, probabilities = _choice_log_likelihood(theta, weights, groups, right, size)
        expected = features * probabilities[:, None]
        gradient = observed - expected.sum(axis=0) - ridge * theta
        per_group = np.column_stack(
            [np.bincount(groups, weights=expected[:, k], minlength=size) for k in range(2)]
        )
        information = (features.T * probabilities) @ features - per_group.T @ per_group
        step = np.linalg.solve(information + ridge * np.eye(2), gradient)
        scale = 1.0
        while scale > 1e-6:
            trial, _ = _choice_log_likelihood(theta + scale * step, weights, groups, right, size)
            if trial >= current:
                break
            scale /= 2
        theta = theta + scale * step
        if float(np.abs(scale * step).max()) < 1e-9:
            break
    # Odds in nats, e^z = 2^(z / ln 2): both parameters are divided by ln 2 for bits.
    slope, intercept = (float(v) / math.log(2) for v in theta)
    return msgspec.structs.replace(model, choice=ChoiceCalibration(slope, intercept))
