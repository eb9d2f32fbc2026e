"""Tricky person cases added with the third version of the person matcher: placeholder
birthdays, "00" phone prefixes under a region, Sri as a name, initials in blocking keys,
typo-tolerant blocking, models stored for other levels, coherent clustering against the
plain transitive closure."""

from datetime import date

import pytest

from cases.matching import Matcher, MatchModel, PersonRecord, person_job
from cases.matching import comparators as cmp
from cases.matching.blocking import CandidateIndex, person_keys
from cases.matching.features import PersonFeatures, prepare_person
from cases.matching.model import FieldModel, Thresholds
from cases.matching.normalise import normalise_person_name, normalise_phone
from cases.matching.phonetic import phonetic_code
from tests.unit.matching.tables import PERSON_TABLE


def _dob_level(a: date, b: date) -> str:
    return cmp.DOB_LEVELS[cmp.compare_dates_of_birth(a, b)]


def test_placeholder_birthday_against_a_full_date_of_the_same_year() -> None:
    assert _dob_level(date(1985, 1, 1), date(1985, 6, 17)) == "same_year_placeholder"
    assert _dob_level(date(1985, 6, 17), date(1985, 7, 1)) == "same_year_placeholder"
    # Another year is a disagreement, placeholder or not.
    assert _dob_level(date(1985, 1, 1), date(1986, 6, 17)) == "disagree"
    # Two full dates of one year are not a placeholder agreement.
    assert _dob_level(date(1985, 3, 9), date(1985, 6, 17)) == "disagree"
    assert cmp.is_placeholder_birthday(date(2001, 1, 1))
    assert not cmp.is_placeholder_birthday(date(2001, 1, 2))


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        (date(1985, 3, 9), date(1958, 3, 9), "one_part_differs"),  # year digits transposed
        (date(1985, 3, 9), date(1985, 3, 19), "one_part_differs"),  # one day digit added
        (date(1985, 3, 9), date(1985, 9, 3), "day_month_swapped"),
        (date(1985, 3, 9), date(1984, 3, 9), "year_off_by_one"),
    ],
)
def test_clerical_errors_in_dates_of_birth(left: date, right: date, level: str) -> None:
    assert _dob_level(left, right) == level


def test_double_zero_prefix_is_international_even_with_a_region() -> None:
    # Without this, phonenumbers reads the 0 as a trunk prefix: +62 0062 812...
    assert normalise_phone("0062 812 7283 9766", "ID") == "+6281272839766"
    assert normalise_phone("0812 7283 9766", "ID") == "+6281272839766"
    assert normalise_phone("00880 1712-345678", "BD") == "+8801712345678"


def test_sri_is_a_name_not_a_title() -> None:
    sri = normalise_person_name("Sri Rahayu")
    siti = normalise_person_name("Siti Rahayu")
    assert sri.tokens == ("sri", "rahayu")
    assert sri.key != siti.key
    assert normalise_person_name("Smt. Sunita Devi").tokens == ("sunita", "devi")


def test_initial_y_codes_like_the_names_it_stands_for() -> None:
    assert phonetic_code("y") == phonetic_code("yusuf")[0] == phonetic_code("youssef")[0]


def _index(max_postings: int) -> CandidateIndex[PersonFeatures]:
    return CandidateIndex(
        person_keys, person_keys, lambda f, t: None, max_postings=max_postings, max_candidates=5
    )


@pytest.mark.parametrize(
    ("indexed", "query"),
    [
        ("Rajesh Kumar", "Rafjesh Kumar"),  # a typo changes the given name's sound
        ("Youssef Abdelrahman", "Abdelrahman Y."),  # an initial for the given name
        ("Rajesh Menon", "MEONN RAEJSH"),  # typos in both tokens, order swapped
        ("Karim Begum", "Kharim Beram"),
    ],
)
def test_typos_and_initials_still_share_a_selective_key(indexed: str, query: str) -> None:
    index = _index(max_postings=20)
    for i in range(30):  # every single token of the pair is too common to be a key
        index.add(prepare_person(PersonRecord(id=f"k{i}", name=f"Worker{i} Kumar")))
        index.add(prepare_person(PersonRecord(id=f"a{i}", name=f"Worker{i} Abdelrahman")))
        index.add(prepare_person(PersonRecord(id=f"r{i}", name=f"Rajesh Worker{i}")))
    target = index.add(prepare_person(PersonRecord(id="t", name=indexed)))
    assert target in index.candidates(prepare_person(PersonRecord(id="q", name=query)))


def test_a_namesake_from_the_same_district_outranks_those_from_elsewhere() -> None:
    index = _index(max_postings=1000)
    for i in range(20):
        index.add(prepare_person(PersonRecord(id=f"n{i}", name="Ram Gurung", home_district="X")))
    same = index.add(
        prepare_person(PersonRecord(id="same", name="Ram Gurung", home_district="Kaski"))
    )
    query = prepare_person(PersonRecord(id="q", name="Ram Gurung", home_district="Kaski"))
    assert same in index.candidates(query)


def _person_model(table: dict[str, tuple[tuple[float, ...], tuple[float, ...]]]) -> MatchModel:
    job = person_job()
    fields = tuple(
        FieldModel(f.name, f.levels, m=table[f.name][0], u=table[f.name][1], tf_levels=f.tf_levels)
        for f in job.fields
    )
    return MatchModel(job="person", fields=fields, prior=0.05, thresholds=Thresholds(0.95, 0.5))


def test_a_model_stored_for_other_levels_is_not_used() -> None:
    current = _person_model(PERSON_TABLE)
    assert Matcher(person_job(), current).model == current
    # A model stored before the "same_year_placeholder" level existed.
    old_dob = FieldModel(
        "dob",
        ("exact", "day_month_swapped", "year_off_by_one", "one_part_differs", "disagree"),
        m=(0.8, 0.05, 0.05, 0.05, 0.05),
        u=(0.0001, 0.0001, 0.0002, 0.01, 0.9896),
    )
    fields = tuple(old_dob if f.name == "dob" else f for f in current.fields)
    old = MatchModel(job="person", fields=fields, prior=0.05)
    matcher = Matcher(person_job(), old)
    assert matcher.model.method == "starting"
    assert len(matcher.model.fields[1].m) == len(cmp.DOB_LEVELS)


def test_coherent_clustering_refuses_a_chain_that_the_closure_accepts() -> None:
    matcher: Matcher[PersonRecord, PersonFeatures] = Matcher(
        person_job(), _person_model(PERSON_TABLE)
    )
    home, work = "+977 9841234567", "+974 55123456"

    def person(id_: str, born: date | None, passport: str, phones: tuple[str, ...]) -> PersonRecord:
        numbers = (passport,) if passport else ()
        return PersonRecord(id=id_, name="Ram Gurung", dob=born, id_numbers=numbers, phones=phones)

    records = [
        # Two namesakes, each reported twice, each with his own phone; then one report that
        # gives both phones and nothing else, which links to both of them.
        person("a1", date(1990, 1, 5), "PA1234567", (home,)),
        person("a2", date(1990, 1, 5), "PA1234567", (home,)),
        person("h1", date(1968, 9, 30), "PB7654321", (work,)),
        person("h2", date(1968, 9, 30), "PB7654321", (work,)),
        person("b", None, "", (home, work)),
    ]
    closure = {frozenset(c) for c in matcher.cluster(records, coherent=False)}
    coherent = {frozenset(c) for c in matcher.cluster(records)}
    assert closure == {frozenset({"a1", "a2", "h1", "h2", "b"})}
    assert "a2" in next(cluster for cluster in coherent if "a1" in cluster)
    assert not any({"a1", "h1"} <= cluster for cluster in coherent)
    assert sum(len(c) for c in coherent) == 5


def _name_level(a: str, b: str) -> str:
    left, right = normalise_person_name(a), normalise_person_name(b)
    codes = {t: phonetic_code(t) for t in (*left.tokens, *right.tokens)}
    return cmp.PERSON_NAME_LEVELS[cmp.compare_person_names(left, right, codes)]


def test_contradicting_initials_are_relatives_not_the_same_name() -> None:
    assert _name_level("T. Menon", "U. Menon") == "relative"
    assert _name_level("T. MENON", "T. Menon") == "exact"
    assert _name_level("V. Kumar", "B. Kumar") == "exact"  # V and B sound alike
    assert _name_level("T. Menon", "Menon") == "exact"  # one side without an initial
    assert _name_level("R. K. Menon", "K. Menon") == "exact"
    assert _name_level("T. Mohammed Hassan", "U. Muhammad Hassan") == "relative"


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("REYES ROWENA", "Arnel Garcia Reyes", "relative"),  # another given name
        ("Asep Susanti", "Siti Dwi Susanti", "relative"),
        ("Xiti Nur Setiawan", "Siti Setiawan", "overlap"),  # a mangled given name
        ("Abdullah Ayi", "Ali Abdullah", "overlap"),
        ("Ram Gurung", "Sita Tamang", "disagree"),
    ],
)
def test_a_different_given_name_is_a_relative_a_mangled_one_an_overlap(
    left: str, right: str, level: str
) -> None:
    assert _name_level(left, right) == level


@pytest.mark.parametrize(
    ("left", "right", "level"),
    [
        ("BISHNU TAMANG", "V. Tamang", "partial"),  # V. for the Vishnu spelling
        ("Reynaldo Ocampo", "R. Luna Ocampo", "partial"),  # initial plus a missing middle name
        ("R. Luna Ocampo", "Reynaldo Ocampo", "partial"),
        ("Reynaldo Ocampo", "J. Luna Ocampo", "relative"),
        # One phonetic code, unrelated spellings: not the same name.
        ("Kumari Bhattarai", "Ghimire Bahadur", "disagree"),
        ("Muhammad Rahman", "Mhmd Rahman", "phonetic"),
    ],
)
def test_initials_by_sound_and_phonetic_codes_checked_by_spelling(
    left: str, right: str, level: str
) -> None:
    assert _name_level(left, right) == level


def test_a_scored_batch_groups_like_cluster_at_any_threshold() -> None:
    matcher: Matcher[PersonRecord, PersonFeatures] = Matcher(
        person_job(), _person_model(PERSON_TABLE)
    )
    phone = "+977 9841234567"
    records = [
        PersonRecord(id="a", name="Ram Gurung", dob=date(1990, 1, 5), phones=(phone,)),
        PersonRecord(id="b", name="Ram B. Gurung", dob=date(1990, 5, 1)),
        PersonRecord(id="c", name="Ram Gurung", phones=(phone,)),
        PersonRecord(id="d", name="Sita Tamang", dob=date(1990, 1, 5)),
    ]
    batch = matcher.score_batch(records)
    for link in (0.5, 0.95, 0.999999):
        strict = matcher.with_thresholds(link, 0.5, merge=0.9)
        assert sorted(strict.group(batch)) == sorted(strict.cluster(records))
        assert strict.model.thresholds.merge == 0.9
    # Raising the link threshold only ever splits groups.
    loose = {frozenset(c) for c in matcher.with_thresholds(0.5, 0.5).group(batch)}
    tight = {frozenset(c) for c in matcher.with_thresholds(0.999999, 0.5).group(batch)}
    assert all(any(t <= group for group in loose) for t in tight)
    assert len(tight) > len(loose)
