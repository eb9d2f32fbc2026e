"""Normalisation of the values the matcher compares: organisation names, person names, phones,
licence and ID numbers. The original text is always kept beside the comparison form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

import msgspec
import phonenumbers
from anyascii import anyascii
from rapidfuzz.distance import OSA

from cases.matching.phonetic import phonetic_code

__all__ = [
    "FILLER_WORDS",
    "SUBSCRIBER_PREFIX",
    "OrgName",
    "PersonName",
    "normalise_identifier",
    "normalise_org_name",
    "normalise_person_name",
    "normalise_phone",
    "phone_subscriber",
    "to_latin",
]

# Trade words that nearly every agency name carries: kept in the name, down-weighted in scoring
# and never used alone as a blocking key.
FILLER_WORDS = frozenset(
    {
        "manpower",
        "overseas",
        "recruitment",
        "recruiting",
        "services",
        "service",
        "international",
        "intl",
        "agency",
        "agencies",
        "employment",
        "consultants",
        "consultancy",
        "human",
        "resources",
        "resource",
        "trading",
        "and",
        "the",
        "of",
        "group",
        "enterprises",
        "enterprise",
        "global",
        # Sector words of the destination employers and their Malay / Indonesian equivalents
        # ("tenaga kerja" is "manpower"): as common as "manpower" and as little distinctive.
        "contracting",
        "contractors",
        "construction",
        "manufacturing",
        "industries",
        "industry",
        "industrial",
        "plantation",
        "plantations",
        "seafood",
        "seafoods",
        "food",
        "foods",
        "workforce",
        "staffing",
        "labour",
        "labor",
        "placement",
        "tenaga",
        "kerja",
    }
)

# Legal forms written in non-Latin scripts, matched on the original text before transliteration
# (their transliterations are ambiguous: ذ.م.م becomes "dh.m.m").
_NATIVE_LEGAL_FORM_SOURCES: tuple[tuple[str, str], ...] = (
    (r"ذ\s*\.?\s*م\s*\.?\s*م\s*\.?", "llc"),
    (r"ش\s*\.?\s*م\s*\.?\s*م\s*\.?", "llc"),
    (r"ذات\s+مسؤولية\s+محدودة", "llc"),
    (r"^\s*شركة\s+", ""),
    (r"^\s*مؤسسة\s+", "est"),
    (r"^\s*บริษัท\s*(.*?)\s*จำกัด\s*\(\s*มหาชน\s*\)\s*$", "pcl"),
    (r"^\s*บริษัท\s*(.*?)\s*จำกัด\s*$", "co ltd"),
    (r"^\s*ห้างหุ้นส่วนจำกัด\s*", "ltd partnership"),
    (r"प्रा\s*\.?\s*लि\s*\.?", "pvt ltd"),
    (r"प्राइवेट\s+लिमिटेड", "pvt ltd"),
    (r"लिमिटेड|लि\s*\.(?=\s|$)", "ltd"),
    (r"প্রাইভেট\s+লিমিটেড|প্রাঃ\s*লিঃ", "pvt ltd"),
    (r"লিমিটেড", "ltd"),
)
# Names are NFKC-normalised before matching, and NFKC changes some Thai vowels (SARA AM), so the
# patterns are normalised the same way.
_NATIVE_LEGAL_FORMS = tuple(
    (re.compile(unicodedata.normalize("NFKC", source)), form)
    for source, form in _NATIVE_LEGAL_FORM_SOURCES
)

# Latin legal forms, as token sequences after punctuation removal, mapped to a canonical form.
# The longest form at the end of the name wins, so "pvt ltd" beats "ltd".
_LATIN_LEGAL_FORMS: dict[tuple[str, ...], str] = {
    ("private", "limited"): "pvt ltd",
    ("private", "ltd"): "pvt ltd",
    ("pvt", "limited"): "pvt ltd",
    ("pvt", "ltd"): "pvt ltd",
    ("p", "ltd"): "pvt ltd",
    ("pvtltd",): "pvt ltd",
    ("pvt",): "pvt ltd",
    ("sdn", "bhd"): "sdn bhd",
    ("sdnbhd",): "sdn bhd",
    ("sendirian", "berhad"): "sdn bhd",
    ("bhd",): "bhd",
    ("berhad",): "bhd",
    ("wll",): "wll",
    ("llc",): "llc",
    ("fz", "llc"): "fz llc",
    ("co", "ltd"): "co ltd",
    ("coltd",): "co ltd",
    ("company", "limited"): "co ltd",
    ("company", "ltd"): "co ltd",
    ("co", "limited"): "co ltd",
    ("pte", "ltd"): "pte ltd",
    ("pteltd",): "pte ltd",
    ("pte",): "pte ltd",
    ("public", "company", "limited"): "pcl",
    ("pcl",): "pcl",
    ("ltd",): "ltd",
    ("limited",): "ltd",
    ("inc",): "inc",
    ("incorporated",): "inc",
    ("corp",): "corp",
    ("corporation",): "corp",
    ("fze",): "fze",
    ("fzco",): "fzco",
    ("jsc",): "jsc",
    ("plc",): "plc",
    ("est",): "est",
    ("establishment",): "est",
    ("spc",): "spc",
    ("co",): "co",
}
_MAX_FORM_LENGTH = max(len(form) for form in _LATIN_LEGAL_FORMS)
# Indonesian forms come first in the name: "PT Maju Jaya", "CV Sinar".
_LEADING_LEGAL_FORMS = {"pt": "pt", "cv": "cv"}
_LEADING_COURTESY = (("m", "s"), ("messrs",), ("ms",))

# "Sri" is not among them: it is a given name in Indonesia (Sri Rahayu) as often as an Indian
# honorific, and dropping a real name merges Sri Rahayu with Siti Rahayu.
_PERSON_COURTESY = frozenset({"mr", "mrs", "ms", "miss", "dr", "smt", "shrimati", "hajji", "haji"})
# Patronymic connectors carry no identity of their own (Ahmad bin Ismail, Siti binti Ali), nor
# does the Arabic article, which clerks write attached, hyphenated or not at all (Al-Hassan).
_PERSON_CONNECTORS = frozenset({"bin", "binti", "bt", "bte", "so", "do", "wo", "al", "el"})
# Abbreviations written in place of a full given name in passports and registers.
_PERSON_ABBREVIATIONS = {
    "md": "muhammad",
    "mohd": "muhammad",
    "muhd": "muhammad",
    "mhd": "muhammad",
}

_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_DROPPED = re.compile(r"[.'`]")  # applied after transliteration: curly quotes are ASCII by then


class OrgName(msgspec.Struct, frozen=True):
    """An organisation name ready for comparison."""

    original: str
    latin: str  # transliterated, lower case, legal form removed
    tokens: tuple[str, ...]  # in written order
    key: str  # sorted tokens joined by spaces: token order insensitive
    compact: str  # sorted tokens without spaces: "man power" = "manpower"
    legal_form: str  # canonical legal form, "" when none was written
    significant: tuple[str, ...]  # tokens that are not trade filler words
    phonetic: tuple[str, ...]  # phonetic codes of the significant tokens

    @property
    def core(self) -> str:
        """Sorted significant tokens: the distinctive part of the name."""
        return " ".join(sorted(self.significant))


class PersonName(msgspec.Struct, frozen=True):
    """A person name ready for comparison."""

    original: str
    tokens: tuple[str, ...]  # full tokens (two letters or more), written order
    initials: tuple[str, ...]  # single letters written as initials
    key: str  # sorted full tokens
    phonetic: tuple[str, ...]  # sorted phonetic codes of the full tokens

    @property
    def phonetic_key(self) -> str:
        return " ".join(self.phonetic)


def to_latin(text: str) -> str:
    """Lower-case Latin transliteration without accents (anyascii covers every script)."""
    return anyascii(unicodedata.normalize("NFKC", text)).lower()


def _tokens(latin: str) -> list[str]:
    # Dots and apostrophes vanish so that "A.B.C." = "ABC"; any other punctuation splits tokens.
    return _NON_ALNUM.sub(" ", _DROPPED.sub("", latin.replace("&", " and "))).split()


def _strip_native_forms(text: str) -> tuple[str, str]:
    form = ""
    for pattern, canonical in _NATIVE_LEGAL_FORMS:
        match = pattern.search(text)
        if match is None:
            continue
        kept = match.group(1) if pattern.groups else ""
        text = text[: match.start()] + " " + kept + " " + text[match.end() :]
        if canonical and not form:
            form = canonical
    return text, form


def _strip_latin_forms(tokens: list[str]) -> tuple[list[str], str]:
    forms: list[str] = []
    for courtesy in _LEADING_COURTESY:
        if len(tokens) > len(courtesy) and tuple(tokens[: len(courtesy)]) == courtesy:
            tokens = tokens[len(courtesy) :]
            break
    if len(tokens) > 1 and tokens[0] in _LEADING_LEGAL_FORMS:
        forms.append(_LEADING_LEGAL_FORMS[tokens[0]])
        tokens = tokens[1:]
    stripped = True
    while stripped and len(tokens) > 1:
        stripped = False
        for length in range(min(_MAX_FORM_LENGTH, len(tokens) - 1), 0, -1):
            form = _LATIN_LEGAL_FORMS.get(tuple(tokens[-length:]))
            if form is not None:
                forms.append(form)
                tokens = tokens[:-length]
                stripped = True
                break
    return tokens, forms[0] if forms else ""


# A misspelt trade word or legal form ("Corporatin", "hTenaga", "Limted") would otherwise count
# as a distinctive word of its own and make the mention look like another agency. Only words of
# six letters or more are corrected, and only to a word one edit away: shorter words ("ltd",
# "inc") are a typo away from too many real names.
_MIN_CORRECTED = 6
_CORRECTABLE_FILLERS = tuple(sorted(w for w in FILLER_WORDS if len(w) >= _MIN_CORRECTED))
_CORRECTABLE_FORMS = tuple(
    sorted(f[0] for f in _LATIN_LEGAL_FORMS if len(f) == 1 and len(f[0]) >= _MIN_CORRECTED)
)


def _one_edit_from(token: str, words: Collection[str]) -> str | None:
    if len(token) < _MIN_CORRECTED - 1:
        return None
    found = [w for w in words if OSA.distance(token, w, score_cutoff=1) <= 1]
    # "servics" is one edit from both "service" and "services": the same length wins.
    found.sort(key=lambda w: (abs(len(w) - len(token)), w))
    return found[0] if found else None


def _correct_trade_words(tokens: list[str]) -> list[str]:
    """Spell a token one edit from a trade word or, last in the name, from a legal form
    ("corporatin"), as that word."""
    corrected = []
    for position, token in enumerate(tokens):
        if token not in FILLER_WORDS:
            last = position == len(tokens) - 1 and position > 0
            form = _one_edit_from(token, _CORRECTABLE_FORMS) if last else None
            token = form or _one_edit_from(token, _CORRECTABLE_FILLERS) or token
        corrected.append(token)
    return corrected


# Legal forms of two or three words, joined ("pvtltd", "privatelimited"): a typo anywhere in
# them ("Pv Ltd", "gvt. Ltd.", "Pvt Lqtd", "Pirvate Limited") leaves the joined letters one edit
# away. Six letters at least: "Po Ltd" is one edit from "co ltd" and may be a real name.
_JOINED_FORMS = {
    "".join(form): form for form in _LATIN_LEGAL_FORMS if len(form) > 1 and len("".join(form)) >= 6
}


def _correct_legal_form(tokens: list[str]) -> list[str]:
    """Spell the last two or three tokens as a legal form of several words when their letters
    are one edit from it and the name does not already end in such a form ("gvt ltd" ends
    in "ltd", but is "pvt ltd")."""
    for length in range(2, _MAX_FORM_LENGTH + 1):
        if tuple(tokens[-length:]) in _LATIN_LEGAL_FORMS:
            return tokens
    for length in (2, 3):
        if len(tokens) <= length:
            break
        joined = "".join(tokens[-length:])
        found = [w for w in _JOINED_FORMS if OSA.distance(joined, w, score_cutoff=1) <= 1]
        if found:
            found.sort(key=lambda w: (abs(len(w) - len(joined)), w))
            return [*tokens[:-length], *_JOINED_FORMS[found[0]]]
    return tokens


def _merge_split_words(tokens: list[str]) -> list[str]:
    # "Man Power", "Over Seas": join neighbours whose concatenation is a known trade word.
    merged: list[str] = []
    for token in tokens:
        if merged and merged[-1] + token in FILLER_WORDS:
            merged[-1] += token
        else:
            merged.append(token)
    return merged


def normalise_org_name(name: str) -> OrgName:
    """Normalise an employer or agency name written in any script."""
    native, native_form = _strip_native_forms(unicodedata.normalize("NFKC", name).lower())
    tokens, latin_form = _strip_latin_forms(
        _correct_legal_form(_correct_trade_words(_tokens(to_latin(native))))
    )
    tokens = _merge_split_words(tokens)
    ordered = sorted(tokens)
    significant = tuple(t for t in tokens if t not in FILLER_WORDS)
    return OrgName(
        original=name,
        latin=" ".join(tokens),
        tokens=tuple(tokens),
        key=" ".join(ordered),
        compact="".join(ordered),
        legal_form=native_form or latin_form,
        significant=significant,
        phonetic=tuple(phonetic_code(t) for t in significant),
    )


def normalise_person_name(name: str) -> PersonName:
    """Normalise a person name: case, accents, script, courtesy titles, abbreviations, order."""
    tokens: list[str] = []
    initials: list[str] = []
    for token in _tokens(to_latin(name)):
        if token in _PERSON_COURTESY or token in _PERSON_CONNECTORS:
            continue
        token = _PERSON_ABBREVIATIONS.get(token, token)
        if len(token) == 1:
            initials.append(token)
        else:
            tokens.append(token)
    return PersonName(
        original=name,
        tokens=tuple(tokens),
        initials=tuple(initials),
        key=" ".join(sorted(tokens)),
        phonetic=tuple(sorted(phonetic_code(t) for t in tokens)),
    )


_INTERNATIONAL_PREFIX = re.compile(r"^\s*(?:00|\+\s*00)\s*")


def normalise_phone(raw: str, region: str | None = None) -> str | None:
    """E.164 form of a phone number, using `region` (ISO 3166 alpha-2) for national formats."""
    # "00" is the international call prefix of almost every corridor country (South Asia, the
    # Gulf, Malaysia, the Philippines), and people write "0062 812..." even where the carrier
    # prefix differs (Indonesia's 001/007): read it as "+" with or without a region hint, or
    # phonenumbers takes the leading 0 for a trunk prefix (+62 0062 812...).
    raw = _INTERNATIONAL_PREFIX.sub("+", raw)
    try:
        number = phonenumbers.parse(raw, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_subscriber(raw: str) -> str | None:
    """The last eight digits of a phone number that could not be put in E.164 form (a national
    number written without a country): enough to recognise the subscriber, never an exact
    match. None for fewer than seven digits."""
    digits = "".join(ch for ch in raw if ch.isdigit())
    return SUBSCRIBER_PREFIX + digits[-8:] if len(digits) >= 7 else None


# Marks a subscriber-only phone, so that it can never equal an E.164 number.
SUBSCRIBER_PREFIX = "~"


def normalise_identifier(raw: str) -> str:
    """Licence, registration, passport or national ID number: upper-case alphanumerics only."""
    return "".join(ch for ch in anyascii(raw).upper() if ch.isascii() and ch.isalnum())
