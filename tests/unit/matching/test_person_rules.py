"""Person dedup rules: name levels robust to splits and relatives, passport versus national ID,
phones without a country, term-frequency adjustment of names and dates, blocking by sound
pairs and by rare keys first."""

from datetime import date

import pytest

from cases.matching import Matcher, PersonRecord, person_job
from cases.matching import comparators as cmp
from cases.matching.blocking import CandidateIndex, person_keys
from cases.matching.features import PersonFeatures, prepare_person
from cases.matching.model import FieldModel, FrequencyTable, MatchModel, Thresholds
from cases.matching.normalise import normalise_person_name, normalise_phone
from cases.matching.phonetic import phonetic_code
from tests.unit.matching.tables import PERSON_TABLE


def _level(a: str, b: str) -> str:
    left, right = normalise_person_name(a), normalise_person_name(b)
    codes = {t: phonetic_code(t) for t in (*left.tokens, *right.tokens)}
    return cmp.PERSON_NAME_LEVELS[cmp.compare_person_names(left, right, codes)]


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("Abdel Rahman Hassan", "Abdelrahman Hassan"),
        ("Juan Dela Cruz", "Juan Delacruz"),
    ],
)
def test_a_name_written_as_one_word_or_two_is_close(left: str, right: str) -> None:
    assert _level(left, right) == "close"


def test_arabic_article_is_ignored() -> None:
    assert _level("Omar Al-Hassan", "Omar Hassan") == "exact"
    assert _level("Omar El Hassan", "OMAR HASSAN") == "exact"


def test_relative_sharing_only_the_surname_is_relative_not_partial() -> None:
    assert _level("Sita Gurung", "Ram Gurung") == "relative"
    # The initial R contradicts Sita: no longer a dropped name, only a shared surname.
    assert _level("R. Gurung", "Sita Gurung") == "relative"
    assert _level("S. Gurung", "Sita Gurung") == "partial"
    # A given name mistyped beyond recognition, middle name dropped.
    assert _level("Xiti Nur Setiawan", "Siti Setiawan") == "overlap"
    assert _level("Ram Gurung", "Sita Tamang") == "disagree"


def test_passport_and_national_id_of_one_person_are_not_a_contradiction() -> None:
    levels = cmp.ID_NUMBER_LEVELS
    assert levels[cmp.compare_id_numbers({"A1234567"}, {"270172123456"})] == "other_kind"
    assert levels[cmp.compare_id_numbers({"A1234567"}, {"B7654321"})] == "disagree"
    assert levels[cmp.compare_id_numbers({"A1234567"}, {"A1243567"})] == "one_edit"
    assert levels[cmp.compare_id_numbers({"A1234567"}, {"A1234567", "X1"})] == "exact"
    assert cmp.compare_id_numbers(set(), {"A1234567"}) == cmp.MISSING


def test_international_prefix_00_is_read_without_a_region() -> None:
    assert normalise_phone("00977 9841234567") == "+9779841234567"
    assert normalise_phone("+977 984-1234567") == "+9779841234567"


def test_national_phone_without_a_country_still_meets_its_e164_spelling() -> None:
    known = prepare_person(PersonRecord(id="a", name="Ram", phones=("+977 9841234567",)))
    unknown = prepare_person(PersonRecord(id="b", name="Ram", phones=("984-1234567",)))
    other = prepare_person(PersonRecord(id="c", name="Ram", phones=("9841234500",)))
    assert cmp.PHONE_LEVELS[cmp.compare_phones(known.phones, unknown.phones)] == ("same_subscriber")
    # Two subscriber-only numbers never make an exact (E.164) agreement.
    assert cmp.compare_phones(unknown.phones, unknown.phones) == 1
    assert cmp.PHONE_LEVELS[cmp.compare_phones(unknown.phones, other.phones)] == "disagree"
    assert set(person_keys(known)) & set(person_keys(unknown))


def test_typical_frequency_is_the_chance_agreement_rate() -> None:
    table = FrequencyTable()
    for index in range(400):
        table.add("dob", "1990-01-01" if index % 2 else f"day-{index}")
    # Half the records hold one value, the other half are unique: sum f^2 = 0.25 + 200/400^2.
    typical = table.typical("dob")
    assert typical is not None
    assert typical == pytest.approx(0.25 + 200 / 400**2)
    assert table.typical("other") is None


def _matcher() -> Matcher[PersonRecord, PersonFeatures]:
    job = person_job()
    fields = tuple(
        FieldModel(
            f.name,
            f.levels,
            m=PERSON_TABLE[f.name][0],
            u=PERSON_TABLE[f.name][1],
            tf_levels=f.tf_levels,
        )
        for f in job.fields
    )
    model = MatchModel(job="person", fields=fields, prior=0.01, thresholds=Thresholds(0.95, 0.5))
    return Matcher(job, model)


def _population() -> list[PersonRecord]:
    # 300 workers: a third named Ram Bahadur Gurung, a third born on 1 January 1990 (the
    # placeholder for an unknown birthday), one Sagarmatha Kantipur Bhattarai.
    records = []
    for i in range(300):
        name = "Ram Bahadur Gurung" if i % 3 == 0 else f"Worker{i} Tamang"
        born = date(1990, 1, 1) if i % 3 == 1 else date(1960 + i % 40, 1 + i % 12, 1 + i % 28)
        records.append(PersonRecord(id=f"p{i}", name=name, dob=born))
    records.append(PersonRecord(id="rare", name="Sagarmatha Kantipur Bhattarai"))
    return records


def _contribution(
    matcher: Matcher[PersonRecord, PersonFeatures],
    a: PersonRecord,
    b: PersonRecord,
    index: CandidateIndex[PersonFeatures],
    field: str,
) -> float:
    explanation = matcher.explain(a, b, index)
    return {f.field: f.contribution for f in explanation.fields}[field]


def test_common_names_and_placeholder_birthdays_weigh_less_than_rare_ones() -> None:
    matcher = _matcher()
    index = matcher.build_index(_population())

    def person(name: str, dob: date | None = None) -> PersonRecord:
        return PersonRecord(id=name + str(dob), name=name, dob=dob)

    common_name = _contribution(
        matcher, person("Ram Gurung"), person("Ram Bahadur Gurung"), index, "name"
    )
    rare_name = _contribution(
        matcher,
        person("Sagarmatha Bhattarai"),
        person("Sagarmatha Kantipur Bhattarai"),
        index,
        "name",
    )
    assert rare_name > common_name + 3  # both "partial": rarity decides
    placeholder = _contribution(
        matcher, person("A", date(1990, 1, 1)), person("B", date(1990, 1, 1)), index, "dob"
    )
    rare_day = _contribution(
        matcher, person("A", date(1971, 8, 17)), person("B", date(1971, 8, 17)), index, "dob"
    )
    assert rare_day > placeholder + 3


def test_pairs_of_name_sounds_keep_namesakes_reachable_when_tokens_are_too_common() -> None:
    matcher = _matcher()
    index: CandidateIndex[PersonFeatures] = CandidateIndex(
        person_keys, person_keys, matcher.job.count_values, max_postings=5, max_candidates=10
    )
    for i in range(10):  # "mohammad" and "rahman" become too common to be keys on their own
        index.add(prepare_person(PersonRecord(id=f"m{i}", name=f"Mohammad Worker{i}")))
        index.add(prepare_person(PersonRecord(id=f"r{i}", name=f"Rahman Worker{i}b")))
    target = index.add(prepare_person(PersonRecord(id="t", name="Mohammad Abdul Rahman")))
    query = prepare_person(PersonRecord(id="q", name="Muhammed Rehman"))
    assert target in index.candidates(query)


def test_a_shared_rare_key_outranks_shared_common_ones() -> None:
    index: CandidateIndex[PersonFeatures] = CandidateIndex(
        person_keys, person_keys, lambda f, t: None, max_postings=100, max_candidates=1
    )
    for i in range(30):  # namesakes sharing the name keys with the query
        index.add(prepare_person(PersonRecord(id=f"n{i}", name="Ram Gurung")))
    same = index.add(
        prepare_person(PersonRecord(id="same", name="Ram B. Gurung", id_numbers=("PA1234567",)))
    )
    query = prepare_person(PersonRecord(id="q", name="Ram Gurung", id_numbers=("PA1234567",)))
    assert index.candidates(query) == [same]
