"""Hand-set m and u tables (per comparison level, of a plausible fit) shared by the matching tests,
so that a test's outcome depends on the rule it checks, not on a fitting run."""

from __future__ import annotations

from cases.matching import MatchModel, entity_job
from cases.matching.model import Calibration, ChoiceCalibration, FieldModel, Thresholds

ENTITY_TABLE = {
    "name": (
        (0.55, 0.05, 0.15, 0.1, 0.03, 0.07, 0.03, 0.02),
        (0.0005, 0.0005, 0.001, 0.004, 0.004, 0.006, 0.05, 0.934),
    ),
    "licence": ((0.95, 0.04, 0.01), (0.0001, 0.0009, 0.999)),
    "registration": ((0.9, 0.05, 0.05), (0.0001, 0.0009, 0.999)),
    "phone": ((0.85, 0.05, 0.1), (0.0001, 0.0004, 0.9995)),
    "country": ((0.97, 0.03), (0.3, 0.7)),
    "legal_form": ((0.8, 0.2), (0.3, 0.7)),
}

PERSON_TABLE = {
    "name": (
        (0.55, 0.2, 0.14, 0.08, 0.015, 0.005, 0.01),
        (0.0005, 0.001, 0.003, 0.02, 0.02, 0.03, 0.9255),
    ),
    "dob": (
        (0.78, 0.05, 0.05, 0.05, 0.02, 0.01, 0.04),
        (0.0001, 0.0001, 0.0002, 0.01, 0.003, 0.01, 0.9766),
    ),
    # Half of the pairs give no passport number or phone on one side or both (the absence
    # levels), equally often for matches and non-matches: no evidence, as "missing" was.
    "id_number": (
        (0.44, 0.035, 0.015, 0.01, 0.25, 0.25),
        (0.000005, 0.00005, 0.449945, 0.05, 0.25, 0.25),
    ),
    "phone": ((0.4, 0.025, 0.075, 0.25, 0.25), (0.00005, 0.0002, 0.49975, 0.25, 0.25)),
    "district": ((0.85, 0.05, 0.1), (0.05, 0.01, 0.94)),
}


def entity_model(choice: ChoiceCalibration | None = None) -> MatchModel:
    """The table as a label-fitted model (``choice``: the linkage choice, or none)."""
    fields = tuple(
        FieldModel(f.name, f.levels, m=ENTITY_TABLE[f.name][0], u=ENTITY_TABLE[f.name][1])
        for f in entity_job().fields
    )
    return MatchModel(
        job="entity",
        fields=fields,
        prior=0.01,
        calibration=Calibration(slope=1.0, intercept=-6.0, source="labels"),
        thresholds=Thresholds(0.9, 0.3),
        method="labels",
        choice=choice,
    )
