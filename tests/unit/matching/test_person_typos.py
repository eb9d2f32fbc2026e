"""Typos the person comparators used to read as another person: one letter of a short name
("Ali" / "Ai"), one letter of a district ("Saran" / "Sarfn"), and a date of birth with two
clerical errors. Counts of the index tell a typo from another established name or place."""

from datetime import date

import pytest

from cases.matching import Matcher, PersonRecord, person_job
from cases.matching import comparators as cmp
from cases.matching.normalise import normalise_person_name
from cases.matching.phonetic import phonetic_code

_ESTABLISHED = {"ali", "ram", "rai", "tek", "khan", "gurung", "parsa", "varsa"}


def _established(a: str, b: str) -> bool:
    return a in _ESTABLISHED and b in _ESTABLISHED


def _name_level(a: str, b: str, apart: cmp.NamesApart | None) -> str:
    left, right = normalise_person_name(a), normalise_person_name(b)
    codes = {t: phonetic_code(t) for t in (*left.tokens, *right.tokens)}
    return cmp.PERSON_NAME_LEVELS[cmp.compare_person_names(left, right, codes, apart)]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Ali Khan", "Ai Khan"),  # a letter dropped from a three-letter name
        ("Ali Hasan", "Ail Hasan"),  # two letters swapped
        ("Tek Gurung", "Gurung Tk"),  # and the order reversed
    ],
)
def test_one_letter_off_a_short_name_is_a_typo_when_the_counts_say_so(a: str, b: str) -> None:
    assert _name_level(a, b, _established) in {"phonetic", "close"}
    # Without counts nothing says the short spelling is a typo: not the same name.
    assert _name_level(a, b, None) in {"overlap", "relative"}


def test_two_established_short_names_a_letter_apart_stay_two_people() -> None:
    assert _name_level("Ram Gurung", "Rai Gurung", _established) == "relative"


def test_a_short_name_with_another_first_letter_is_not_its_typo() -> None:
    # "Sam" is one letter from "Ram" and written by no one else, but the first letter of a
    # short name is what tells names apart.
    assert _name_level("Ram Khan", "Sam Khan", _established) in {"overlap", "relative"}


def _population(extra: list[PersonRecord]) -> list[PersonRecord]:
    given = ["Ali", "Ram", "Rai", "Tek", "Sita", "Gita", "Hari", "Bishnu"]
    surnames = ["Khan", "Gurung", "Thapa", "Tamang", "Sharma"]
    records = [
        PersonRecord(id=f"p{g}{s}{n}", name=f"{g} {s}", home_district=d)
        for g in given
        for s in surnames
        for n, d in enumerate(["Parsa", "Varsa", "Saran", "Jhapa", "Kaski", "Saran"])
    ]
    return records + extra


def test_the_matcher_reads_short_typos_and_district_typos_from_its_index() -> None:
    matcher = Matcher(person_job())
    index = matcher.build_index(_population([PersonRecord(id="typo", name="Ai Thapa")]))

    def levels(a: PersonRecord, b: PersonRecord) -> dict[str, str]:
        return {f.field: f.level for f in matcher.explain(a, b, index).fields}

    short = levels(PersonRecord(id="a", name="Ali Thapa"), PersonRecord(id="b", name="Ai Thapa"))
    assert short["name"] == "close"
    names = levels(PersonRecord(id="a", name="Ram Thapa"), PersonRecord(id="b", name="Rai Thapa"))
    assert names["name"] == "relative"
    # "Sarfn" is written by no one else: a typo of "Saran". "Parsa" and "Varsa" are one letter
    # apart too, but both are districts that many records give.
    typo = levels(
        PersonRecord(id="a", name="Hari Thapa", home_district="Saran"),
        PersonRecord(id="b", name="Hari Thapa", home_district="Sarfn"),
    )
    assert typo["district"] == "close"
    places = levels(
        PersonRecord(id="a", name="Hari Thapa", home_district="Parsa"),
        PersonRecord(id="b", name="Hari Thapa", home_district="Varsa"),
    )
    assert places["district"] == "different"


def test_place_names_one_typo_apart() -> None:
    assert cmp.PLACE_NAME_LEVELS[cmp.compare_place_names("qena", "qega")] == "close"
    assert cmp.PLACE_NAME_LEVELS[cmp.compare_place_names("beni", "bpni")] == "close"
    assert cmp.PLACE_NAME_LEVELS[cmp.compare_place_names("parsa", "varsa", _established)] == (
        "different"
    )
    # Three letters leave no room for a typo to be told from another place.
    assert cmp.PLACE_NAME_LEVELS[cmp.compare_place_names("dan", "don")] == "different"
    assert cmp.PLACE_NAME_LEVELS[cmp.compare_place_names("jhapa", "kaski")] == "different"


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        (date(1990, 1, 21), date(1991, 1, 13), "two_errors"),  # year off by one, day mistyped
        (date(1990, 3, 7), date(1991, 7, 3), "two_errors"),  # year off by one, day and month
        (date(1990, 3, 7), date(1990, 7, 9), "two_errors"),  # swapped, then the day mistyped
        (date(1990, 3, 17), date(1990, 5, 3), "two_errors"),  # 3 May swapped, then a typo
        (date(1990, 3, 7), date(1992, 4, 8), "disagree"),  # two years apart
        (date(1990, 3, 17), date(1990, 5, 9), "disagree"),  # nothing in common but the year
        (date(1990, 3, 7), date(1975, 11, 20), "disagree"),
    ],
)
def test_two_clerical_errors_in_a_date_of_birth(left: date, right: date, level: str) -> None:
    assert cmp.DOB_LEVELS[cmp.compare_dates_of_birth(left, right)] == level
    assert cmp.DOB_LEVELS[cmp.compare_dates_of_birth(right, left)] == level
