"""Field comparators on the tricky cases the registry and reports produce."""

from datetime import UTC, date, datetime

from cases.matching import comparators as cmp
from cases.matching.normalise import normalise_org_name, normalise_person_name
from cases.matching.phonetic import phonetic_code


def _even(_: str) -> float:
    return 1.0


def _person_level(a: str, b: str) -> str:
    left, right = normalise_person_name(a), normalise_person_name(b)
    codes = {t: phonetic_code(t) for t in (*left.tokens, *right.tokens)}
    return cmp.PERSON_NAME_LEVELS[cmp.compare_person_names(left, right, codes)]


def test_person_names_with_swapped_order_are_exact() -> None:
    assert _person_level("Ram Bahadur Gurung", "Gurung Ram Bahadur") == "exact"


def test_person_transliteration_variants_are_phonetic() -> None:
    assert _person_level("Mohammad Rahman", "Rahman Muhammed") == "phonetic"
    assert _person_level("Mohammed Ali", "Muhammad Ali") == "phonetic"


def test_person_typo_is_close_and_missing_middle_name_partial() -> None:
    assert _person_level("Siti Nurhaliza", "Siti Nurhalisa") in {"phonetic", "close"}
    assert _person_level("Ram Bahadur Gurung", "Ram Gurung") == "partial"
    assert _person_level("Ram Gurung", "Sita Tamang") == "disagree"


def test_person_name_missing_when_empty() -> None:
    assert cmp.compare_person_names(
        normalise_person_name(""), normalise_person_name("Ram"), {}
    ) == (cmp.MISSING)


def test_dates_of_birth_levels() -> None:
    assert cmp.compare_dates_of_birth(date(1990, 3, 7), date(1990, 3, 7)) == 0
    assert cmp.DOB_LEVELS[cmp.compare_dates_of_birth(date(1990, 3, 7), date(1990, 7, 3))] == (
        "day_month_swapped"
    )
    assert cmp.DOB_LEVELS[cmp.compare_dates_of_birth(date(1990, 3, 7), date(1991, 3, 7))] == (
        "year_off_by_one"
    )
    assert cmp.DOB_LEVELS[cmp.compare_dates_of_birth(date(1990, 3, 7), date(1975, 11, 20))] == (
        "disagree"
    )
    assert cmp.compare_dates_of_birth(None, date(1990, 1, 1)) == cmp.MISSING


def test_identifier_levels() -> None:
    assert cmp.compare_identifiers({"LIC1234"}, {"LIC1234", "X"}) == 0
    assert cmp.IDENTIFIER_LEVELS[cmp.compare_identifiers({"LIC1234"}, {"LIC1284"})] == "one_edit"
    assert cmp.IDENTIFIER_LEVELS[cmp.compare_identifiers({"LIC1234"}, {"LIC9999"})] == "disagree"
    assert cmp.compare_identifiers(set(), {"LIC9999"}) == cmp.MISSING


def test_org_names_manpower_variants_are_exact_and_filler_only_overlap_is_weak() -> None:
    same = cmp.compare_org_names(
        [normalise_org_name("ABC Man Power Pvt. Ltd.")],
        [normalise_org_name("A.B.C. Manpower Private Limited")],
        _even,
    )
    assert cmp.ORG_NAME_LEVELS[same] == "exact"
    fillers = cmp.compare_org_names(
        [normalise_org_name("Everest Overseas Manpower Services")],
        [normalise_org_name("Kathmandu Overseas Manpower Services")],
        _even,
    )
    assert cmp.ORG_NAME_LEVELS[fillers] in {"weak", "disagree"}


def test_org_name_typo_and_same_core_levels() -> None:
    def level(a: str, b: str) -> str:
        found = cmp.compare_org_names([normalise_org_name(a)], [normalise_org_name(b)], _even)
        return cmp.ORG_NAME_LEVELS[found]

    assert level("Sagarmatha Overseas Pvt Ltd", "Sagarmatah Overseas") == "typo"
    assert level("Sagarmatha Overseas Pvt Ltd", "Sagarmatha Pvt Ltd") == "same_core"
    assert level("Sagarmatha Kantipur Overseas", "Kantipur Overseas") == "partial"


def test_distinctive_words_in_another_order_are_reordered_not_exact() -> None:
    def level(a: str, b: str) -> str:
        found = cmp.compare_org_names([normalise_org_name(a)], [normalise_org_name(b)], _even)
        return cmp.ORG_NAME_LEVELS[found]

    assert level("Capiz Tagalog Manpower Agency Inc.", "CAPIZ TAGALOG MANPOWER AGENCY") == "exact"
    assert level("Capiz Tagalog Manpower Agency", "Tagalog Capiz Manpower Agency") == "reordered"
    # Trade words in another order change nothing.
    assert level("Doha Trading & Contracting", "Doha Contracting and Trading") == "exact"


def test_dropped_trade_words_are_same_core_but_other_trade_words_are_not() -> None:
    def level(a: str, b: str) -> str:
        found = cmp.compare_org_names([normalise_org_name(a)], [normalise_org_name(b)], _even)
        return cmp.ORG_NAME_LEVELS[found]

    # A writer leaves trade words out, or writes some of them ...
    assert level("Bidda WLL", "Bidda Trading & Contracting W.L.L.") == "same_core"
    assert level("Majd Trading", "Majd Trading & Contracting") == "same_core"
    # ... but other trade words are how registry siblings differ.
    assert level("Sabari Human Resources", "Sabari Consultants Pvt Ltd") == "other_trade"
    assert level("Sagarmatha Overseas Pvt Ltd", "Sagarmatha Manpower Services") == "other_trade"
    other_trade = cmp.ORG_NAME_LEVELS.index("other_trade")
    assert cmp.ORG_NAME_LEVELS.index("same_core") < other_trade
    assert other_trade < cmp.ORG_NAME_LEVELS.index("partial")


def test_org_name_matches_through_an_alias() -> None:
    level = cmp.compare_org_names(
        [normalise_org_name("Al Noor Trading WLL"), normalise_org_name("النور للتجارة")],
        [normalise_org_name("النور للتجارة ذ.م.م")],
        _even,
    )
    assert level == 0


def test_geo_and_time_levels() -> None:
    doha = (25.2854, 51.5310)
    assert cmp.compare_distance(doha, (25.2860, 51.5315)) == 0
    assert cmp.DISTANCE_LEVELS[cmp.compare_distance(doha, (25.30, 51.55))] == "within_5km"
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    assert cmp.compare_time_gap(start, datetime(2024, 5, 1, 9, tzinfo=UTC)) == 0
    assert cmp.TIME_GAP_LEVELS[cmp.compare_time_gap(start, datetime(2024, 5, 20, tzinfo=UTC))] == (
        "longer"
    )


def test_category_overlap_levels() -> None:
    assert cmp.compare_categories({"a", "b"}, {"b", "a"}) == 0
    assert cmp.CATEGORY_LEVELS[cmp.compare_categories({"a", "b"}, {"a", "c"})] == "some"
    assert cmp.CATEGORY_LEVELS[cmp.compare_categories({"a"}, {"c"})] == "none"
