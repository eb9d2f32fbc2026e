"""Dedup models fitted on labels scale each field's contribution (`calibrate_fields`): a field
whose log-likelihood ratios overstate the evidence is discounted against the others, which
one slope on the total weight cannot do."""

import math
from datetime import date

import numpy as np

from cases.matching import Matcher, PersonRecord, person_job
from cases.matching.model import MatchModel, calibrate_fields, starting_model


def _model() -> MatchModel:
    return starting_model("test", [("a", ("x", "y"), ()), ("b", ("x", "y"), ())])


def test_field_scales_recover_how_much_each_field_is_worth() -> None:
    # The labels follow 1.0 x field a + 0.4 x field b - 2 bits: field b's ratios are
    # overstated by 2.5 times (as a name's are when it is not independent of the rest).
    rng = np.random.default_rng(3)
    contributions = rng.normal(0.0, 4.0, size=(20_000, 2))
    logit = contributions @ np.array([1.0, 0.4]) - 2.0
    labels = rng.random(20_000) < 1.0 / (1.0 + 2.0**-logit)
    fitted = calibrate_fields(_model(), contributions, labels.tolist())
    assert fitted.field_scales is not None
    scale_a, scale_b = fitted.field_scales
    assert abs(scale_a - 1.0) < 0.1
    assert abs(scale_b - 0.4) < 0.1
    assert abs(fitted.calibration.intercept + 2.0) < 0.2
    # One slope on the sum could only scale both alike.
    assert scale_a > 2 * scale_b


def _records() -> tuple[list[PersonRecord], dict[str, str]]:
    given = ["Ram", "Hari", "Sita", "Gita", "Bishnu", "Krishna"]
    surnames = ["Gurung", "Tamang", "Rai", "Thapa"]
    records, truth = [], {}
    for w in range(240):
        name = f"{given[w % 6]} {surnames[(w // 6) % 4]}"
        for r in range(2):
            born = None if (w + r) % 3 == 0 else date(1960 + w % 40, 1 + w % 12, 1 + w % 28)
            record = PersonRecord(id=f"w{w}-{r}", name=name, dob=born)
            records.append(record)
            truth[record.id] = f"w{w}"
    return records, truth


def test_explanations_stay_exact_with_scaled_fields() -> None:
    records, truth = _records()
    matcher = Matcher(person_job()).fit(
        records, same=lambda a, b: truth[a] == truth[b], seed=1, random_pairs=2000
    )
    model = matcher.model
    assert model.field_scales is not None
    assert len(model.field_scales) == len(model.fields)
    explanation = matcher.explain(records[0], records[1])
    total = sum(f.contribution for f in explanation.fields)
    assert math.isclose(explanation.total_weight, total)
    expected = 1.0 / (1.0 + 2.0 ** -(total + model.calibration.intercept))
    assert math.isclose(explanation.probability, expected, rel_tol=1e-9)
    name = next(f for f in explanation.fields if f.field == "name")
    unscaled = model.fields[0].weight(matcher.job.fields[0].levels.index(name.level))
    assert math.isclose(name.weight, model.field_scales[0] * unscaled)
