"""Normalisation of organisation names, person names, phones and identifiers."""

import pytest

from cases.matching.normalise import (
    normalise_identifier,
    normalise_org_name,
    normalise_person_name,
    normalise_phone,
)
from cases.matching.phonetic import phonetic_code


def test_abc_man_power_equals_abc_manpower_private_limited() -> None:
    left = normalise_org_name("ABC Man Power Pvt. Ltd.")
    right = normalise_org_name("A.B.C. Manpower Private Limited")
    assert left.compact == right.compact == "abcmanpower"
    assert left.legal_form == right.legal_form == "pvt ltd"
    assert left.original == "ABC Man Power Pvt. Ltd."


def test_al_noor_trading_wll_spellings_agree() -> None:
    left = normalise_org_name("Al Noor Trading W.L.L.")
    right = normalise_org_name("AL-NOOR TRADING WLL")
    assert left.key == right.key == "al noor trading"
    assert left.legal_form == right.legal_form == "wll"
    assert "trading" not in left.significant


@pytest.mark.parametrize(
    ("name", "form", "key"),
    [
        ("Sunrise Sdn. Bhd.", "sdn bhd", "sunrise"),
        ("Sunrise SDN BHD", "sdn bhd", "sunrise"),
        ("PT Maju Jaya", "pt", "jaya maju"),
        ("P.T. Maju Jaya", "pt", "jaya maju"),
        ("Gulf Star L.L.C.", "llc", "gulf star"),
        ("Siam Co., Ltd.", "co ltd", "siam"),
        ("Siam Company Limited", "co ltd", "siam"),
        ("Everest (P) Ltd", "pvt ltd", "everest"),
        ("Lion Pte Ltd", "pte ltd", "lion"),
        ("Desert Rose FZE", "fze", "desert rose"),
        ("Desert Rose FZCO", "fzco", "desert rose"),
        ("Hanoi JSC", "jsc", "hanoi"),
        ("M/s Everest Overseas", "", "everest overseas"),
    ],
)
def test_latin_legal_suffixes_are_split_off(name: str, form: str, key: str) -> None:
    normalised = normalise_org_name(name)
    assert normalised.legal_form == form
    assert normalised.key == key


def test_arabic_llc_suffix_is_an_alias_of_llc() -> None:
    arabic = normalise_org_name("النور للتجارة ذ.م.م")
    spaced = normalise_org_name("النور للتجارة ذ. م. م.")
    assert arabic.legal_form == spaced.legal_form == "llc"
    assert arabic.compact == spaced.compact
    assert arabic.compact.isascii()


def test_thai_company_limited_wrapper_is_removed() -> None:
    thai = normalise_org_name("บริษัท เอบีซี จำกัด")
    assert thai.legal_form == "co ltd"
    assert thai.tokens == ("eobisi",)
    assert normalise_org_name("บริษัท เอบีซี จำกัด (มหาชน)").legal_form == "pcl"


def test_devanagari_private_limited_suffix() -> None:
    short = normalise_org_name("सगरमाथा प्रा. लि.")
    long = normalise_org_name("सगरमाथा प्राइवेट लिमिटेड")
    assert short.legal_form == long.legal_form == "pvt ltd"
    assert short.compact == long.compact
    assert short.original == "सगरमाथा प्रा. लि."


def test_person_name_order_case_accents_and_abbreviation() -> None:
    a = normalise_person_name("Md. Rahim UDDIN")
    b = normalise_person_name("Uddin, Rahim Mohammad")
    assert a.key == "muhammad rahim uddin"
    assert a.phonetic == b.phonetic
    assert normalise_person_name("José Ramírez").key == "jose ramirez"
    initials = normalise_person_name("R. K. Sharma")
    assert initials.tokens == ("sharma",)
    assert initials.initials == ("r", "k")


@pytest.mark.parametrize(
    "variants",
    [
        ("Mohammad", "Mohammed", "Muhammad", "Muhammed", "محمد"),
        ("Bijay", "Vijay"),
        ("Djoko", "Joko"),
        ("Chowdhury", "Choudhury", "Chaudhary"),
        ("Hussain", "Hossain", "Husain"),
        ("Soekarno", "Sukarno"),
    ],
)
def test_transliteration_variants_share_a_phonetic_code(variants: tuple[str, ...]) -> None:
    codes = {phonetic_code(normalise_person_name(v).tokens[0]) for v in variants}
    assert len(codes) == 1


def test_distinct_names_get_distinct_codes() -> None:
    assert phonetic_code("gurung") != phonetic_code("tamang")
    assert phonetic_code("rahim") != phonetic_code("karim")


def test_phone_formats_with_region_hint_give_one_e164() -> None:
    assert normalise_phone("+977 1-4412345", "NP") == "+97714412345"
    assert normalise_phone("014412345", "NP") == "+97714412345"
    assert normalise_phone("not a phone", "NP") is None
    assert normalise_phone("014412345") is None  # national format without a region


def test_identifiers_keep_upper_case_alphanumerics_only() -> None:
    assert normalise_identifier("lic-1234 / ab") == "LIC1234AB"
    assert normalise_identifier("P.A. 0042") == "PA0042"


@pytest.mark.parametrize(
    ("written", "tokens", "form"),
    [
        ("Batanes Manpower Agency Corporatin", ("batanes", "manpower", "agency"), "corp"),
        ("PT Sakti Lestari hTenaga Kerja", ("sakti", "lestari", "tenaga", "kerja"), "pt"),
        ("Isabela Manpower Agecy Inc.", ("isabela", "manpower", "agency"), "inc"),
        ("Sunkoshi Overseas Limted", ("sunkoshi", "overseas"), "ltd"),
    ],
)
def test_misspelt_trade_words_and_legal_forms_are_recognised(
    written: str, tokens: tuple[str, ...], form: str
) -> None:
    name = normalise_org_name(written)
    assert (name.tokens, name.legal_form) == (tokens, form)


def test_distinctive_words_are_not_corrected_into_trade_words() -> None:
    # Short words and words more than one edit from a trade word stay as written; a legal form
    # is only corrected at the end of a name.
    assert normalise_org_name("Trade Links Overseas").significant == ("trade", "links")
    assert normalise_org_name("Limted Overseas").tokens == ("limted", "overseas")
    assert normalise_org_name("Mandiri Sentosa").significant == ("mandiri", "sentosa")
