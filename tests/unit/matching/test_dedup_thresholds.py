"""Dedup thresholds a fitted model chooses from its own probabilities (expected pairwise F1)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bench.matching_csv import read_persons_csv
from bench.matching_quality import pairwise_scores
from cases.matching import Matcher, PersonRecord, person_job
from cases.matching.engine import ScoredCandidate
from cases.matching.linkage import (
    DEDUP_LINK_GRID,
    DEDUP_MERGE_GRID,
    dedup_thresholds_for_f1,
    expected_cluster_scores,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "persons"

RAM = PersonRecord(
    id="a", name="Ram Bahadur Thapa", dob=date(1994, 3, 12), id_numbers=("PA1234567",)
)
RAM_AGAIN = PersonRecord(
    id="b", name="Thapa Ram Bahadur", dob=date(1994, 3, 12), id_numbers=("PA 1234567",)
)
SITA = PersonRecord(id="c", name="Sita Kumari Rai", dob=date(1990, 7, 1), id_numbers=("PB7654321",))


def test_expected_scores_are_sums_of_the_pairs_probabilities() -> None:
    matcher = Matcher(person_job())
    batch = matcher.score_batch([RAM, RAM_AGAIN, SITA])
    p_ab, p_ac, p_bc = (
        matcher.explain(x, y).probability
        for x, y in ((RAM, RAM_AGAIN), (RAM, SITA), (RAM_AGAIN, SITA))
    )
    assert p_ab > 0.9 and p_ac < 0.1  # the example means what it says

    precision, recall, f1 = expected_cluster_scores(matcher, batch, [("a", "b"), ("c",)], 2.0)
    assert precision == pytest.approx(p_ab)
    assert recall == pytest.approx(p_ab / 2.0)
    assert f1 == pytest.approx(2 * p_ab / (1 + 2.0))

    # One cluster of all three: the pairs with Sita are scored although never candidates.
    precision, recall, _ = expected_cluster_scores(matcher, batch, [("a", "b", "c")], 2.0)
    assert precision == pytest.approx((p_ab + p_ac + p_bc) / 3)
    assert recall == pytest.approx((p_ab + p_ac + p_bc) / 2.0)

    assert expected_cluster_scores(matcher, batch, [("a",), ("b",), ("c",)], 2.0) == (1.0, 0.0, 0.0)


def test_the_chosen_thresholds_have_the_best_expected_f1_and_keep_a_review_band() -> None:
    records, _ = read_persons_csv(DATA / "sample.csv")
    fitted = Matcher(person_job()).fit(records, seed=1)
    chosen, estimates = dedup_thresholds_for_f1(fitted, fitted.score_batch(records))
    assert {(e.link, e.merge) for e in estimates} == {
        (link, merge) for link in DEDUP_LINK_GRID for merge in DEDUP_MERGE_GRID
    }
    best = max(e.f1 for e in estimates)
    thresholds = chosen.model.thresholds
    assert [(e.link, e.merge) for e in estimates if e.f1 == best][-1] == (
        thresholds.link,
        thresholds.merge,
    )
    assert thresholds.review == min(person_job().thresholds.review, thresholds.link / 2)
    assert thresholds.review < thresholds.link
    # Everything else about the model is the fitted one.
    assert chosen.model.fields == fitted.model.fields


def test_the_estimate_follows_the_truth_on_the_sample() -> None:
    """On the sample file (233 records with their truth), the thresholds the model chooses
    without the truth do at least as well as the job's fixed defaults."""
    records, truth = read_persons_csv(DATA / "sample.csv")
    fitted = Matcher(person_job()).fit(records, seed=1)
    batch = fitted.score_batch(records)
    chosen, _ = dedup_thresholds_for_f1(fitted, batch)
    chosen_f1 = pairwise_scores(chosen.group(batch), truth)[2]
    default_f1 = pairwise_scores(fitted.group(batch), truth)[2]
    assert chosen_f1 >= default_f1


SITA_AGAIN = PersonRecord(
    id="d", name="Sita K. Rai", dob=date(1990, 7, 1), id_numbers=("PB7654321",)
)


def test_a_link_joins_a_group_only_if_the_group_agrees_on_average() -> None:
    matcher = Matcher(person_job()).with_thresholds(0.5, 0.25, 0.5)
    prepare, frequencies = matcher.job.prepare, matcher.reference_frequencies
    new = prepare(RAM)
    agrees = [prepare(RAM_AGAIN)]
    # One member is the same worker, two are someone else: mean about 1/3, under 0.5.
    mixed = [prepare(RAM_AGAIN), prepare(SITA), prepare(SITA_AGAIN)]
    best = ScoredCandidate("b", 30.0, 0.999, "link")
    runner_up = ScoredCandidate("x", 29.0, 0.998, "link")
    doubtful = ScoredCandidate("y", 1.0, 0.3, "review")

    joined = matcher.join_decisions(new, [best, runner_up], {"b": agrees, "x": agrees}, frequencies)
    assert [c.decision for c in joined] == ["link", "link"]  # the worker takes the first

    refused = matcher.join_decisions(
        new, [best, runner_up, doubtful], {"b": mixed, "x": agrees}, frequencies
    )
    # The best's group disagrees: a human decides, and the runner-up is not linked instead.
    assert [c.decision for c in refused] == ["review", "review", "review"]
    assert [c.probability for c in refused] == [0.999, 0.998, 0.3]  # scores kept for the queue

    # A candidate whose group is unknown (not yet grouped) is its own group.
    alone = matcher.join_decisions(new, [best], {}, frequencies)
    assert alone[0].decision == "link"


def test_a_changed_record_keeps_its_group_only_if_it_would_join_it_now() -> None:
    matcher = Matcher(person_job()).with_thresholds(0.5, 0.25, 0.5)
    prepare, frequencies = matcher.job.prepare, matcher.reference_frequencies
    ram, ram_again, sita, sita_again = (prepare(r) for r in (RAM, RAM_AGAIN, SITA, SITA_AGAIN))
    assert matcher.would_join(ram, [ram_again], frequencies)
    assert not matcher.would_join(ram, [sita, sita_again], frequencies)  # no member links
    # The best member links, but the group disagrees on average (about 1/3 under 0.5).
    assert not matcher.would_join(ram, [ram_again, sita, sita_again], frequencies)
    assert not matcher.would_join(ram, [], frequencies)
    assert matcher.group_agreement(ram, [], frequencies) == (0.0, 0.0)
    best, mean = matcher.group_agreement(ram, [ram_again, sita, sita_again], frequencies)
    assert best == matcher.group_agreement(ram, [ram_again], frequencies)[0] > 0.5 > mean
    assert matcher.would_join(sita, [sita_again], frequencies)


def test_the_groups_a_new_record_links_merge_as_a_batch_would_merge_them() -> None:
    matcher = Matcher(person_job()).with_thresholds(0.5, 0.25, 0.5)
    prepare, frequencies = matcher.job.prepare, matcher.reference_frequencies
    ram, ram_again, sita, sita_again = (prepare(r) for r in (RAM, RAM_AGAIN, SITA, SITA_AGAIN))
    # Ram's group (the new record included) and another group of Ram's reports agree; Sita's
    # does not: only the first merges.
    merged = matcher.merges_into([ram], {"b": [ram_again], "c": [sita, sita_again]}, frequencies)
    assert [candidate for candidate, _ in merged] == ["b"]
    agreement = merged[0][1]
    assert agreement == matcher.cross_agreement([ram], [ram_again], frequencies) >= 0.5
    assert matcher.cross_agreement([ram, ram_again], [sita, sita_again], frequencies) < 0.5
    assert matcher.cross_agreement([ram], [], frequencies) == 0.0
    # A group that itself holds someone else agrees less: Sita's pair alone merges, Sita's pair
    # with Ram's report in it does not (mean under 0.5).
    assert [c for c, _ in matcher.merges_into([sita], {"d": [sita_again]}, frequencies)] == ["d"]
    assert matcher.merges_into([sita, ram], {"d": [sita_again]}, frequencies) == []


def test_grouping_a_batch_again_links_only_its_candidate_pairs() -> None:
    """`group` scores cross pairs on demand for its merge checks and keeps them in the batch;
    a later call (another threshold) must take its links from the candidate pairs alone, or the
    threshold choice would depend on what was grouped before."""
    matcher = Matcher(person_job()).with_thresholds(0.5, 0.25, 0.5)
    batch = matcher.score_batch([RAM, SITA])
    assert batch.weights == {} and batch.candidate_pairs == 0  # no blocking key in common
    batch.weights[(0, 1)] = 60.0  # as if an earlier merge check had scored the pair
    assert sorted(matcher.group(batch)) == [("a",), ("c",)]
