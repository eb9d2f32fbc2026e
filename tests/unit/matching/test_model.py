"""The Fellegi-Sunter model: estimation, term-frequency adjustment, calibration, persistence."""

import math

import msgspec
import numpy as np

from cases.matching.model import (
    FieldModel,
    FrequencyTable,
    MatchModel,
    calibrate_from_labels,
    estimate_by_em,
    estimate_u,
    fit_from_labels,
    starting_model,
)

TRUE_M = ((0.85, 0.10, 0.05), (0.70, 0.20, 0.10), (0.90, 0.05, 0.05))
TRUE_U = ((0.02, 0.08, 0.90), (0.05, 0.15, 0.80), (0.10, 0.20, 0.70))
LEVELS = ("exact", "close", "disagree")


def _synthetic_pairs(count: int, prior: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_match = rng.random(count) < prior
    columns = []
    for m, u in zip(TRUE_M, TRUE_U, strict=True):
        from_m = rng.choice(3, count, p=m)
        from_u = rng.choice(3, count, p=u)
        columns.append(np.where(is_match, from_m, from_u))
    return np.stack(columns, axis=1).astype(np.int8), is_match


def _start() -> MatchModel:
    return starting_model("test", [(f"f{i}", LEVELS, ()) for i in range(3)], prior=0.1)


def test_em_recovers_m_u_and_prior() -> None:
    pairs, _ = _synthetic_pairs(40_000, 0.25, seed=1)
    fitted = estimate_by_em(_start(), pairs, fix_u=False, prior_strength=1.0, iterations=500)
    assert abs(fitted.prior - 0.25) < 0.03
    for spec, m, u in zip(fitted.fields, TRUE_M, TRUE_U, strict=True):
        assert np.allclose(spec.m, m, atol=0.04), (spec.name, spec.m, m)
        assert np.allclose(spec.u, u, atol=0.04), (spec.name, spec.u, u)


def test_u_from_random_pairs_then_em_for_m() -> None:
    random_pairs, _ = _synthetic_pairs(20_000, 0.0, seed=2)
    with_u = estimate_u(_start(), random_pairs)
    for spec, u in zip(with_u.fields, TRUE_U, strict=True):
        assert np.allclose(spec.u, u, atol=0.02)
    candidates, _ = _synthetic_pairs(20_000, 0.3, seed=3)
    fitted = estimate_by_em(with_u, candidates, fix_u=True, prior_strength=1.0)
    assert fitted.method == "em"
    for spec, m in zip(fitted.fields, TRUE_M, strict=True):
        assert np.allclose(spec.m, m, atol=0.05)


def test_fit_from_labels_counts_levels_of_matches() -> None:
    pairs, is_match = _synthetic_pairs(20_000, 0.5, seed=4)
    fitted = fit_from_labels(_start(), pairs, is_match.tolist(), prior_strength=1.0)
    assert fitted.method == "labels"
    assert np.allclose(fitted.fields[0].m, TRUE_M[0], atol=0.03)


def test_weight_is_log2_m_over_u_and_missing_is_neutral() -> None:
    spec = FieldModel("licence", LEVELS, m=(0.9, 0.05, 0.05), u=(0.001, 0.01, 0.989))
    assert math.isclose(spec.weight(0), math.log2(0.9 / 0.001))
    assert spec.weight(2) < -4
    assert spec.weight(-1) == 0.0


def test_rare_value_agreeing_weighs_more_than_common_one() -> None:
    model = msgspec.structs.replace(
        _start(),
        fields=(
            FieldModel("name", LEVELS, m=(0.8, 0.1, 0.1), u=(0.001, 0.01, 0.989), tf_levels=(0,)),
        ),
    )
    rare = model.tf_adjustment(0, 0, 0.00001)
    common = model.tf_adjustment(0, 0, 0.05)
    assert rare > 0 > common
    assert model.tf_adjustment(0, 1, 0.05) == 0.0  # level without adjustment
    assert abs(model.tf_adjustment(0, 0, 1e-12)) <= model.tf_cap


def test_frequency_table_counts_documents() -> None:
    table = FrequencyTable()
    assert table.frequency("token", "noor") is None
    for _ in range(200):
        table.add_set("token", {"noor", "trading"})
        table.add_set("token", {"trading"})
    assert table.frequency("token", "trading") == 1.0
    assert table.frequency("token", "noor") == 0.5
    assert table.rarity("token", "noor") > table.rarity("token", "trading")
    assert table.frequency("other", "x") is None


def test_calibration_from_labels_is_monotone_and_fits_the_labels() -> None:
    rng = np.random.default_rng(5)
    weights = rng.normal(0, 8, 5000)
    labels = rng.random(5000) < 1 / (1 + 2 ** -(0.5 * weights - 1))
    calibrated = calibrate_from_labels(_start(), weights.tolist(), labels.tolist())
    assert calibrated.calibration.source == "labels"
    assert abs(calibrated.calibration.slope - 0.5) < 0.1
    assert abs(calibrated.calibration.intercept + 1) < 0.3
    assert calibrated.probability(10) > calibrated.probability(0) > calibrated.probability(-10)


def test_model_round_trips_through_json() -> None:
    model = _start()
    decoded = msgspec.json.decode(msgspec.json.encode(model), type=MatchModel)
    assert decoded == model
