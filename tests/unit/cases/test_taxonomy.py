"""The shipped taxonomy file and the loader's consistency checks."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from cases.taxonomy import (
    CATEGORY_CODE_PATTERN,
    LANGUAGES,
    Category,
    CategoryGroup,
    CodeProblem,
    Taxonomy,
    TaxonomyError,
    load_taxonomy,
    normalise_language,
    parse_taxonomy,
)


def shipped() -> dict[str, Any]:
    raw = resources.files("cases").joinpath("data", "taxonomy.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(raw)
    return document


def category_in(document: dict[str, Any], code: str) -> dict[str, Any]:
    matches = [c for c in document["categories"] if c["code"] == code]
    assert len(matches) == 1
    found: dict[str, Any] = matches[0]
    return found


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy()


def test_load_is_cached_and_versioned(taxonomy: Taxonomy) -> None:
    assert load_taxonomy() is taxonomy
    assert taxonomy.version == shipped()["version"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", taxonomy.content_hash)


def test_at_least_fifteen_active_categories(taxonomy: Taxonomy) -> None:
    assert len(taxonomy.active_categories()) >= 15
    assert all(not c.retired for c in taxonomy.active_categories())


def test_codes_are_unique_and_match_the_pattern(taxonomy: Taxonomy) -> None:
    codes = [c.code for c in taxonomy.categories]
    assert len(codes) == len(set(codes))
    for code in codes:
        assert re.fullmatch(CATEGORY_CODE_PATTERN, code), code


def _scripts(text: str) -> set[str]:
    return {unicodedata.name(ch).split()[0] for ch in text if ch.isalpha()}


def test_every_category_and_group_has_all_six_languages(taxonomy: Taxonomy) -> None:
    assert LANGUAGES == ("en", "ne", "id", "tl", "ar", "th")
    labelled: list[Category | CategoryGroup] = [*taxonomy.categories, *taxonomy.document.groups]
    for item in labelled:
        labels = {lang: item.labels.get(lang) for lang in LANGUAGES}
        assert all(value.strip() for value in labels.values()), item.code
        # Each translation is really there, not English copied over, and in its own script.
        for lang in ("ne", "id", "tl", "ar", "th"):
            assert labels[lang] != labels["en"], (item.code, lang)
        assert "DEVANAGARI" in _scripts(labels["ne"]), item.code
        assert "ARABIC" in _scripts(labels["ar"]), item.code
        assert "THAI" in _scripts(labels["th"]), item.code


def test_all_eleven_ilo_forced_labour_indicators_are_covered(taxonomy: Taxonomy) -> None:
    covered = {i for c in taxonomy.active_categories() for i in c.indicators}
    assert {f"ILO-FL-{n:02d}" for n in range(1, 12)} <= covered


def test_fair_recruitment_categories_are_present(taxonomy: Taxonomy) -> None:
    for code in (
        "FR.RECRUITMENT_FEE",
        "FR.CONTRACT_SUBSTITUTION",
        "FR.NO_WRITTEN_CONTRACT",
        "FR.UNLICENSED_RECRUITER",
        "FR.RETALIATION",
        "FR.DENIED_REMEDY",
    ):
        assert code in taxonomy
        assert not taxonomy.category(code).retired


def test_every_category_maps_to_an_indicator_except_other(taxonomy: Taxonomy) -> None:
    for category in taxonomy.categories:
        assert bool(category.indicators) != (category.code == "OT.OTHER"), category.code


def test_validate_codes_reports_unknown_and_retired_in_input_order(taxonomy: Taxonomy) -> None:
    problems = taxonomy.validate_codes(
        ["FL.DOC_RETENTION", "XX.MADE_UP", "FL.PASSPORT_RETENTION", "fl.doc_retention"]
    )
    assert problems == [
        CodeProblem("XX.MADE_UP", "unknown_category"),
        CodeProblem("FL.PASSPORT_RETENTION", "retired_category"),
        CodeProblem("fl.doc_retention", "unknown_category"),
    ]
    assert taxonomy.validate_codes([c.code for c in taxonomy.active_categories()]) == []


def test_retired_code_points_to_its_successor(taxonomy: Taxonomy) -> None:
    assert taxonomy.canonical_code("FL.PASSPORT_RETENTION") == "FL.DOC_RETENTION"
    assert taxonomy.canonical_code("FL.DEBT_BONDAGE") == "FL.DEBT_BONDAGE"
    assert [g.code for g in taxonomy.priority_groups_of("FL.PASSPORT_RETENTION")] == ["coercion"]


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("ne", "ne"),
        ("ne-NP", "ne"),
        ("fil_PH", "tl"),
        ("in", "id"),
        ("AR", "ar"),
        ("th-TH", "th"),
        ("fr", "en"),
        ("", "en"),
    ],
)
def test_labels_fall_back_to_english(taxonomy: Taxonomy, language: str, expected: str) -> None:
    labels = taxonomy.category("FL.DEBT_BONDAGE").labels
    assert taxonomy.label("FL.DEBT_BONDAGE", language) == getattr(labels, expected)


def test_normalise_language() -> None:
    assert normalise_language(" Fil-PH ") == "tl"
    assert normalise_language("zh-Hant-TW") == "zh"


def test_label_of_unknown_code_raises(taxonomy: Taxonomy) -> None:
    with pytest.raises(KeyError):
        taxonomy.label("XX.NOPE", "en")


def test_coercion_group_holds_the_means_of_coercion(taxonomy: Taxonomy) -> None:
    coercion = set(taxonomy.priority_group("coercion").categories)
    assert {
        "FL.DOC_RETENTION",
        "FL.DEBT_BONDAGE",
        "FL.RESTRICTED_MOVEMENT",
        "FL.PHYSICAL_VIOLENCE",
        "FL.THREATS",
    } <= coercion
    assert taxonomy.priority_group("violence").escalates_to == "critical"


def test_content_hash_ignores_formatting_but_not_content(taxonomy: Taxonomy) -> None:
    document = shipped()
    assert parse_taxonomy(json.dumps(document, indent=7)).content_hash == taxonomy.content_hash
    category_in(document, "FL.THREATS")["labels"]["th"] = "ข่มขู่"
    assert parse_taxonomy(json.dumps(document)).content_hash != taxonomy.content_hash


BreakFn = Callable[[dict[str, Any]], None]


def _duplicate_code(d: dict[str, Any]) -> None:
    d["categories"].append(dict(d["categories"][0]))


def _bad_pattern(d: dict[str, Any]) -> None:
    d["categories"][0]["code"] = "FRX.FEE"


def _missing_language(d: dict[str, Any]) -> None:
    del d["categories"][0]["labels"]["th"]


def _empty_label(d: dict[str, Any]) -> None:
    d["categories"][0]["labels"]["ne"] = ""


def _unknown_indicator(d: dict[str, Any]) -> None:
    d["categories"][0]["indicators"] = ["ILO-FL-99"]


def _unknown_group(d: dict[str, Any]) -> None:
    d["categories"][0]["group"] = "nowhere"


def _severity_out_of_range(d: dict[str, Any]) -> None:
    d["categories"][0]["severity_hint"] = 6


def _from_the_future(d: dict[str, Any]) -> None:
    d["categories"][0]["since_version"] = d["version"] + 1


def _retired_group_member(d: dict[str, Any]) -> None:
    d["priority_groups"][0]["categories"].append("FL.PASSPORT_RETENTION")


def _retired_successor(d: dict[str, Any]) -> None:
    category_in(d, "FL.DOC_RETENTION")["retired"] = True
    category_in(d, "FL.DOC_RETENTION")["retired_in_version"] = 2


def _retired_without_version(d: dict[str, Any]) -> None:
    del category_in(d, "FL.PASSPORT_RETENTION")["retired_in_version"]


def _active_with_successor(d: dict[str, Any]) -> None:
    category_in(d, "FL.THREATS")["replaced_by"] = "FL.DOC_RETENTION"


def _unknown_field(d: dict[str, Any]) -> None:
    d["categories"][0]["colour"] = "red"


@pytest.mark.parametrize(
    "break_it",
    [
        _duplicate_code,
        _bad_pattern,
        _missing_language,
        _empty_label,
        _unknown_indicator,
        _unknown_group,
        _severity_out_of_range,
        _from_the_future,
        _retired_group_member,
        _retired_successor,
        _retired_without_version,
        _active_with_successor,
        _unknown_field,
    ],
)
def test_inconsistent_taxonomy_is_rejected(break_it: BreakFn) -> None:
    document = shipped()
    parse_taxonomy(json.dumps(document))  # the unbroken document is fine
    break_it(document)
    with pytest.raises(TaxonomyError):
        parse_taxonomy(json.dumps(document))


def test_garbage_is_rejected() -> None:
    with pytest.raises(TaxonomyError, match="not valid JSON"):
        parse_taxonomy(b"{nope")


def test_docs_list_every_category(taxonomy: Taxonomy) -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "taxonomy.md"
    text = docs.read_text("utf-8")
    assert f"## Categories (version {taxonomy.version})" in text
    for category in taxonomy.categories:
        assert f"| `{category.code}` |" in text, category.code
    for group in taxonomy.priority_groups:
        assert f"| `{group.code}` | {group.escalates_to} |" in text, group.code
