"""EM's prior: a comparison level the candidate pairs never show keeps the job's own weight.

u from random pairs is nearly 0 for a partial name level (random pairs almost never share a
name's distinctive words). When that u was also EM's prior, a level absent from an org's
candidate pairs kept it, and with it a weight of about 10 bits that nothing supported: on 60
entity mentions a bare "Everest" became strong evidence for either of two Everests.
"""

import numpy as np

from cases.matching.model import estimate_by_em, estimate_u, starting_model

FIELDS = [("name", ("exact", "partial", "disagree"), ()), ("id", ("exact", "disagree"), ())]


def _random_pairs() -> np.ndarray:
    # 50,000 random pairs: a handful agree on the name or the id, none partly on the name.
    rows = np.full((50_000, 2), (2, 1), dtype=np.int8)
    rows[:5, 0] = 0
    rows[:3, 1] = 0
    return rows


def _candidate_pairs() -> np.ndarray:
    # 300 candidate pairs, about half matches (name and id agree); "partial" never occurs.
    rows = [(0, 0)] * 140 + [(0, 1)] * 10 + [(2, 1)] * 140 + [(2, 0)] * 10
    return np.asarray(rows, dtype=np.int8)


def test_an_unseen_level_keeps_the_weight_of_the_jobs_model() -> None:
    start = starting_model("toy", FIELDS)
    from_random = estimate_u(start, _random_pairs())
    assert from_random.fields[0].weight(1) > 10  # random pairs: "partial" looks decisive

    fitted = estimate_by_em(from_random, _candidate_pairs(), fix_u=False, prior_model=start)
    name = fitted.fields[0]
    assert abs(name.weight(1) - start.fields[0].weight(1)) < 0.5
    # the levels the data shows are learnt from it
    assert name.weight(0) > 4 > start.fields[0].weight(0)
    assert name.weight(2) < -4 < start.fields[0].weight(2)

    unguarded = estimate_by_em(from_random, _candidate_pairs(), fix_u=False)
    assert unguarded.fields[0].weight(1) > 10  # what the random pairs' prior did
