"""The engine: explanations, identifiers beating names, incremental matching and clustering.

Models here are written by hand (plausible m and u), so each test controls the evidence.
"""

import math
from datetime import UTC, date, datetime, timedelta

import msgspec
import pytest

from cases.matching import (
    EntityRecord,
    IncidentRecord,
    Matcher,
    MatchModel,
    PersonRecord,
    entity_job,
    incident_job,
    person_job,
)
from cases.matching.jobs import JobSpec
from cases.matching.model import FieldModel, Thresholds
from tests.unit.matching.tables import ENTITY_TABLE, PERSON_TABLE


def _model(
    job: JobSpec[object, object], table: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]
) -> MatchModel:
    fields = tuple(
        FieldModel(f.name, f.levels, m=table[f.name][0], u=table[f.name][1], tf_levels=f.tf_levels)
        for f in job.fields
    )
    return MatchModel(job=job.name, fields=fields, prior=0.05, thresholds=Thresholds(0.95, 0.5))


INCIDENT_TABLE = {
    "time": ((0.5, 0.3, 0.15, 0.04, 0.01), (0.02, 0.08, 0.2, 0.4, 0.3)),
    "place": ((0.6, 0.3, 0.08, 0.02), (0.01, 0.05, 0.3, 0.64)),
    "categories": ((0.6, 0.3, 0.08, 0.02), (0.05, 0.1, 0.3, 0.55)),
    "employer": (
        (0.55, 0.05, 0.2, 0.1, 0.02, 0.03, 0.03, 0.02),
        (0.005, 0.005, 0.01, 0.03, 0.02, 0.03, 0.05, 0.85),
    ),
    "narrative": ((0.6, 0.35, 0.05), (0.05, 0.3, 0.65)),
    "monitor": ((0.4, 0.6), (0.1, 0.9)),
}


@pytest.fixture
def entity_matcher() -> Matcher[EntityRecord, object]:
    job = entity_job()
    return Matcher(job, _model(job, ENTITY_TABLE))  # type: ignore[arg-type]


@pytest.fixture
def person_matcher() -> Matcher[PersonRecord, object]:
    job = person_job()
    return Matcher(job, _model(job, PERSON_TABLE))  # type: ignore[arg-type]


def _agency(id_: str, name: str, **kwargs: object) -> EntityRecord:
    return msgspec.convert(
        {"id": id_, "kind": "agency", "legal_name": name, **kwargs}, EntityRecord
    )


def test_explain_contributions_sum_to_the_total(
    entity_matcher: Matcher[EntityRecord, object],
) -> None:
    explanation = entity_matcher.explain(
        _agency("a", "ABC Man Power Pvt. Ltd.", country="NP", phones=["+977 1-4412345"]),
        _agency("b", "A.B.C. Manpower Private Limited", country="NP", phones=["014412345"]),
    )
    assert math.isclose(sum(f.contribution for f in explanation.fields), explanation.total_weight)
    assert all(math.isclose(f.weight + f.tf_adjustment, f.contribution) for f in explanation.fields)
    levels = {f.field: f.level for f in explanation.fields}
    assert levels == {
        "name": "exact",
        "licence": "missing",
        "registration": "missing",
        "phone": "exact",
        "country": "equal",
        "legal_form": "equal",
    }
    assert explanation.decision == "link"
    assert math.isclose(
        explanation.probability, entity_matcher.model.probability(explanation.total_weight)
    )


def test_different_licences_are_strong_counter_evidence_despite_equal_names(
    entity_matcher: Matcher[EntityRecord, object],
) -> None:
    same = entity_matcher.explain(
        _agency("a", "Al Noor Trading W.L.L.", licence_numbers=["MOL-1234"], country="QA"),
        _agency("b", "AL-NOOR TRADING WLL", licence_numbers=["mol 1234"], country="QA"),
    )
    different = entity_matcher.explain(
        _agency("a", "Al Noor Trading W.L.L.", licence_numbers=["MOL-1234"], country="QA"),
        _agency("b", "AL-NOOR TRADING WLL", licence_numbers=["MOL-7781"], country="QA"),
    )
    licence = {f.field: f for f in different.fields}["licence"]
    assert licence.level == "disagree"
    assert licence.contribution < -4
    assert same.decision == "link"
    assert different.decision != "link"
    assert different.total_weight < same.total_weight - 10


def test_licence_typo_is_its_own_level(entity_matcher: Matcher[EntityRecord, object]) -> None:
    explanation = entity_matcher.explain(
        _agency("a", "Everest Overseas", licence_numbers=["1234/067"]),
        _agency("b", "Everest Overseas", licence_numbers=["1243/067"]),
    )
    assert {f.field: f.level for f in explanation.fields}["licence"] in {"one_edit", "disagree"}
    typo = entity_matcher.explain(
        _agency("a", "Everest Overseas", licence_numbers=["1234/067"]),
        _agency("b", "Everest Overseas", licence_numbers=["1235/067"]),
    )
    assert {f.field: f.level for f in typo.fields}["licence"] == "one_edit"


def test_mention_finds_registry_entity_through_an_alias_in_another_script(
    entity_matcher: Matcher[EntityRecord, object],
) -> None:
    registry = [
        _agency("e1", "Al Noor Trading WLL", aliases=["النور للتجارة ذ.م.م"], country="QA"),
        _agency("e2", "Al Nour Contracting WLL", country="QA"),
        _agency("e3", "Everest Overseas Pvt Ltd", country="NP"),
    ]
    index = entity_matcher.build_index(registry)
    mention = EntityRecord(id="m", kind="mention", legal_name="النور للتجارة", country="QA")
    best = entity_matcher.match_one(mention, index)
    assert best[0].id == "e1"
    assert best[0].decision == "link"
    assert all(c.id != "e3" for c in best)


def _person(id_: str, name: str, **kwargs: object) -> PersonRecord:
    return msgspec.convert({"id": id_, "name": name, **kwargs}, PersonRecord)


def test_person_with_swapped_dob_and_name_variant_is_matched_incrementally(
    person_matcher: Matcher[PersonRecord, object],
) -> None:
    index = person_matcher.new_index()
    existing = [
        _person(
            "p1",
            "Mohammad Rahim Uddin",
            dob=date(1992, 4, 11),
            phones=["01712345678"],
            country="BD",
        ),
        _person("p2", "Rahim Mia", dob=date(1992, 4, 11)),
        _person("p3", "Karim Uddin", dob=date(1985, 1, 2)),
    ]
    for record in existing:
        index.add(person_matcher.job.prepare(record))
    new = _person("n", "Uddin Rahim Muhammed", dob=date(1992, 11, 4), phones=["+880 1712-345678"])
    best = person_matcher.match_one(new, index)
    assert best[0].id == "p1"
    assert best[0].decision == "link"
    explanation = person_matcher.explain(existing[0], new)
    levels = {f.field: f.level for f in explanation.fields}
    assert levels["dob"] == "day_month_swapped"
    assert levels["name"] == "phonetic"
    assert levels["phone"] == "exact"


def test_cluster_groups_duplicates_and_keeps_namesakes_apart(
    person_matcher: Matcher[PersonRecord, object],
) -> None:
    records = [
        _person("a1", "Ram Bahadur Gurung", dob=date(1990, 1, 5), id_numbers=["PA123456"]),
        _person("a2", "Gurung Ram Bahadur", dob=date(1990, 1, 5), id_numbers=["PA123456"]),
        _person("a3", "Ram B. Gurung", dob=date(1990, 5, 1), id_numbers=["PA123465"]),
        _person("b1", "Ram Bahadur Gurung", dob=date(1978, 9, 30), id_numbers=["PB998877"]),
        _person("c1", "Sita Tamang", dob=date(1995, 2, 2)),
    ]
    clusters = {frozenset(c) for c in person_matcher.cluster(records)}
    assert frozenset({"a1", "a2", "a3"}) in clusters
    assert frozenset({"b1"}) in clusters
    assert frozenset({"c1"}) in clusters


def test_incident_reports_close_in_space_and_time_cluster() -> None:
    job = incident_job(resolution=7, window_days=1)
    matcher: Matcher[IncidentRecord, object] = Matcher(job, _model(job, INCIDENT_TABLE))  # type: ignore[arg-type]
    start = datetime(2024, 6, 1, 9, tzinfo=UTC)

    def report(id_: str, hours: float, lat: float, lon: float, monitor: str) -> IncidentRecord:
        return IncidentRecord(
            id=id_,
            occurred_at=start + timedelta(hours=hours),
            lat=lat,
            lon=lon,
            categories=("withholding_of_wages",),
            employer_names=("Al Noor Trading WLL",),
            narrative_tokens=("salary", "three", "months"),
            monitor_id=monitor,
        )

    records = [
        report("r1", 0, 25.2854, 51.5310, "m1"),
        report("r2", 3, 25.2861, 51.5302, "m2"),
        report("far", 2, 25.40, 51.45, "m3"),  # same story, another town
        report("late", 24 * 20, 25.2854, 51.5310, "m1"),  # same place, three weeks later
    ]
    clusters = {frozenset(c) for c in matcher.cluster(records)}
    assert clusters == {frozenset({"r1", "r2"}), frozenset({"far"}), frozenset({"late"})}


def test_fit_returns_a_serialisable_model(person_matcher: Matcher[PersonRecord, object]) -> None:
    records = [
        _person(f"p{i}", f"{first} {last}", dob=date(1980 + i % 20, 1 + i % 12, 1 + i % 28))
        for i, (first, last) in enumerate(
            (f, s) for f in ("Ram", "Sita", "Hari", "Gita", "Ali") for s in ("Rai", "Shah", "Khan")
        )
    ]
    fitted = person_matcher.fit(records + records[:5], random_pairs=500)
    assert fitted.model.method == "em"
    assert msgspec.json.decode(msgspec.json.encode(fitted.model), type=MatchModel) == fitted.model
