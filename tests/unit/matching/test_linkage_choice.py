"""Linkage as a choice among the candidates: a mention names at most one registry entity, in
the calibration fitted on labels (`ChoiceCalibration`) and in EM without labels."""

import math

import msgspec
import numpy as np

from cases.matching import EntityRecord, Matcher, MatchModel, entity_job
from cases.matching.model import (
    ChoiceCalibration,
    calibrate_choice,
    estimate_by_em,
    starting_model,
)
from tests.unit.matching.tables import entity_model


def _simulated_mentions(
    slope: float, intercept: float, seed: int
) -> tuple[list[list[float]], list[int | None]]:
    """Mentions with 1-6 candidates whose entity is drawn from the conditional logit."""
    rng = np.random.default_rng(seed)
    weights, chosen = [], []
    for _ in range(6000):
        candidates = rng.normal(4.0, 6.0, rng.integers(1, 7)).tolist()
        odds = [2.0 ** (slope * w + intercept) for w in candidates]
        total = 1.0 + sum(odds)
        pick = rng.choice(len(candidates) + 1, p=[*(o / total for o in odds), 1.0 / total])
        weights.append(candidates)
        chosen.append(None if pick == len(candidates) else int(pick))
    return weights, chosen


def test_choice_calibration_recovers_the_odds_of_the_candidates() -> None:
    weights, chosen = _simulated_mentions(0.7, -3.0, seed=5)
    fitted = calibrate_choice(entity_model(None), weights, chosen)
    assert fitted.choice is not None
    assert abs(fitted.choice.slope - 0.7) < 0.05
    assert abs(fitted.choice.intercept + 3.0) < 0.3
    assert msgspec.json.decode(msgspec.json.encode(fitted), type=MatchModel) == fitted


def test_candidates_that_fit_equally_share_the_probability() -> None:
    choice = ChoiceCalibration(slope=0.8, intercept=-2.0)
    alone = choice.probability(20.0, [])
    tied = choice.probability(20.0, [20.0])
    assert alone > 0.999
    assert math.isclose(tied, alone / (1 + alone), rel_tol=1e-6)  # just under one half
    assert tied < 0.5
    # A hopeless runner-up changes nothing; overflowing weights do not break it.
    assert math.isclose(choice.probability(20.0, [-40.0]), alone, rel_tol=1e-9)
    assert 0.49 < choice.probability(5000.0, [5000.0]) <= 0.5


def test_a_fitted_choice_links_past_a_weaker_sibling_the_margin_rule_held_back() -> None:
    # "Haloko Overseas" agrees up to a typo with its entity and fully, but for the trade word
    # the mention adds, with a sibling "Haloko Pvt Ltd": 2.6 bits apart. The fixed 4-bit
    # margin sent such mentions to review; a fitted choice weighs the sibling itself.
    registry = [
        EntityRecord(id="e1", kind="agency", legal_name="Haloko Overseas Pvt Ltd", country="NP"),
        EntityRecord(id="e2", kind="agency", legal_name="Haloko Pvt Ltd", country="NP"),
    ]
    mention = EntityRecord(
        id="m", kind="mention", legal_name="HALLOKO OVERSEAS PVT LTD", country="NP"
    )
    without = Matcher(entity_job(), entity_model(None))
    index = without.build_index(registry)
    scored = without.match_one(mention, index)
    assert [c.id for c in scored] == ["e1", "e2"]
    assert scored[0].total_weight - scored[1].total_weight < 4.0
    # a plausible runner-up on its own (pairwise) odds
    assert without.model.probability(scored[1].total_weight) >= without.model.thresholds.review
    assert scored[0].decision == "review"  # the margin rule, without a fitted choice
    fitted = Matcher(entity_job(), entity_model(ChoiceCalibration(slope=1.5, intercept=-3.0)))
    best = fitted.match_one(mention, index)[0]
    assert best.id == "e1"
    assert best.probability > 0.9
    assert best.decision == "link"
    # A true tie still goes to a human: the trade word left out is one of two siblings'.
    siblings = fitted.build_index(
        [
            registry[0],
            EntityRecord(id="e3", kind="agency", legal_name="Haloko Manpower Pvt Ltd"),
        ]
    )
    bare = fitted.match_one(EntityRecord(id="m2", kind="mention", legal_name="Haloko"), siblings)
    assert math.isclose(bare[0].total_weight, bare[1].total_weight)
    assert bare[0].probability < 0.5
    assert bare[0].decision != "link"
    # ... and the runner-up is scored by the same choice, never linked on its pairwise odds
    # (the worker links the first candidate whose decision is "link").
    assert math.isclose(bare[1].probability, bare[0].probability)
    assert bare[1].decision == bare[0].decision


def test_a_runner_up_is_never_linked_automatically() -> None:
    # The same agency entered twice (a licence list imported by two orgs, a branch of the same
    # name): each entry alone would be a sure link. Neither may be linked automatically: the
    # best gets just under one half, and the runner-up, which the worker also walks through,
    # is scored by the same choice instead of its own pairwise odds.
    registry = [
        EntityRecord(id=entry, kind="agency", legal_name="Haloko Overseas Pvt Ltd", country="NP")
        for entry in ("e1", "e4")
    ]
    mention = EntityRecord(id="m", kind="mention", legal_name="Haloko Overseas Pvt Ltd")
    for choice in (None, ChoiceCalibration(slope=1.5, intercept=-3.0)):
        matcher = Matcher(entity_job(), entity_model(choice))
        scored = matcher.match_one(mention, matcher.build_index(registry))
        assert [c.id for c in scored] == ["e1", "e4"] or [c.id for c in scored] == ["e4", "e1"]
        assert all(
            matcher.model.probability(c.total_weight) > matcher.model.thresholds.link
            for c in scored
        )
        assert [c.decision for c in scored] == ["review", "review"]
        assert scored[1].probability < 0.5


def _mentions_with_siblings(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Level rows (name: exact / partial / disagree, country: equal / different) of mentions
    with nine candidates each, mostly of the same country; 70% also have their entity."""
    rng = np.random.default_rng(seed)
    rows, groups = [], []
    for mention in range(3000):
        if rng.random() < 0.7:
            name = rng.choice(3, p=(0.8, 0.2, 0.0))
            rows.append((name, 0 if rng.random() < 0.95 else 1))
            groups.append(mention)
        for _ in range(9):
            rows.append((rng.choice(3, p=(0.01, 0.3, 0.69)), 0 if rng.random() < 0.9 else 1))
            groups.append(mention)
    return np.asarray(rows, dtype=np.int8), np.asarray(groups, dtype=np.int64)


def test_em_with_one_match_per_mention_learns_the_entity_not_the_country() -> None:
    levels, groups = _mentions_with_siblings(seed=7)
    start = starting_model(
        "entity",
        [("name", ("exact", "partial", "disagree"), ()), ("country", ("equal", "different"), ())],
        prior=0.3,
    )
    fitted = estimate_by_em(start, levels, fix_u=False, prior_strength=1.0, groups=groups)
    true_share = 2100 / len(levels)  # about 0.07: one entity among ten candidates
    assert abs(fitted.prior - true_share) < 0.02
    name = fitted.fields[0]
    assert name.m[0] > 0.7  # the match class is "the same name", as generated
    assert name.weight(0) > 5.0
    assert name.weight(2) < -2.0


def test_an_unlabelled_fit_of_a_linkage_job_chooses_by_its_own_posterior() -> None:
    words = "Everest Sagarmatha Kantipur Lumbini Annapurna Gorkha Janakpur Pokhara Makalu Koshi"
    registry = [
        EntityRecord(
            id=f"e{i}-{j}", kind="agency", legal_name=f"{word} {filler} Pvt Ltd", country="NP"
        )
        for i, word in enumerate(words.split())
        for j, filler in enumerate(("Overseas", "Manpower", "Human Resources"))
    ]
    mentions = [
        EntityRecord(id=f"m{k}", kind="mention", legal_name=entity.legal_name.upper())
        for k, entity in enumerate(registry)
    ]
    matcher = Matcher(entity_job()).fit(mentions, against=registry, random_pairs=2000)
    model = matcher.model
    assert model.method == "em"
    assert model.choice == ChoiceCalibration(slope=1.0, intercept=model.prior_weight)
    index = matcher.build_index(registry)
    best = matcher.match_one(
        EntityRecord(id="q", kind="mention", legal_name="KOSHI HUMAN RESOURCES"), index
    )[0]
    assert best.id == "e9-2"
    assert best.probability > 0.5
