"""Field comparators: each turns two normalised values into a discrete agreement level.

Level 0 is the strongest agreement; `MISSING` means one side has no value, which the model
scores as no evidence either way. The level names are part of the model (they label m and u).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from datetime import date, datetime

from rapidfuzz.distance import OSA, JaroWinkler

from cases.matching.normalise import FILLER_WORDS, SUBSCRIBER_PREFIX, OrgName, PersonName
from cases.matching.phonetic import phonetic_code

__all__ = [
    "CATEGORY_LEVELS",
    "DISTANCE_LEVELS",
    "DOB_LEVELS",
    "EQUALITY_LEVELS",
    "IDENTIFIER_LEVELS",
    "ID_NUMBER_LEVELS",
    "MISSING",
    "ORG_NAME_LEVELS",
    "PERSON_NAME_LEVELS",
    "PHONE_LEVELS",
    "PLACEHOLDER_BIRTHDAYS",
    "PLACE_NAME_LEVELS",
    "TIME_GAP_LEVELS",
    "TOKEN_OVERLAP_LEVELS",
    "NamesApart",
    "TokenWeight",
    "align_person_names",
    "compare_categories",
    "compare_dates_of_birth",
    "compare_distance",
    "compare_equal",
    "compare_id_numbers",
    "compare_identifiers",
    "compare_org_names",
    "compare_person_names",
    "compare_phones",
    "compare_place_names",
    "compare_time_gap",
    "compare_token_overlap",
    "haversine_km",
    "is_placeholder_birthday",
    "ordered_by_length",
    "weighted_token_similarity",
]

MISSING = -1

# reordered: the same words, the distinctive ones in another order ("Capiz Tagalog" / "Tagalog
# Capiz": writers keep a name's order, registries may hold both); same_core: the same
# distinctive words, trade words added or dropped ("Bidda" / "Bidda Trading & Contracting");
# other_trade: the same distinctive words with contradicting trade words ("Sabari Human
# Resources" / "Sabari Consultants"), the way registry siblings differ.
ORG_NAME_LEVELS = (
    "exact",
    "reordered",
    "typo",
    "same_core",
    "other_trade",
    "partial",
    "weak",
    "disagree",
)
PERSON_NAME_LEVELS = (
    "exact",
    "phonetic",
    "close",
    "partial",
    "overlap",
    "relative",
    "disagree",
)
IDENTIFIER_LEVELS = ("exact", "one_edit", "disagree")
ID_NUMBER_LEVELS = ("exact", "one_edit", "disagree", "other_kind")
PHONE_LEVELS = ("exact", "same_subscriber", "disagree")
DOB_LEVELS = (
    "exact",
    "day_month_swapped",
    "year_off_by_one",
    "one_part_differs",
    "same_year_placeholder",
    "two_errors",
    "disagree",
)
DISTANCE_LEVELS = ("within_200m", "within_1km", "within_5km", "farther")
TIME_GAP_LEVELS = ("within_2h", "within_12h", "within_2d", "within_7d", "longer")
CATEGORY_LEVELS = ("equal", "most", "some", "none")
TOKEN_OVERLAP_LEVELS = ("high", "some", "none")
EQUALITY_LEVELS = ("equal", "different")
PLACE_NAME_LEVELS = ("equal", "close", "different")

TokenWeight = Callable[[str], float]

_CLOSE = 0.92  # Jaro-Winkler threshold for "close" strings
_TOKEN_CLOSE = 0.88  # per-token threshold when aligning names token by token
_FILLER_FACTOR = 0.25  # trade filler words count a quarter of their rarity weight


def _tokens_agree(a: str, b: str) -> bool:
    if a == b:
        return True
    if min(len(a), len(b)) < 4:
        return False
    return JaroWinkler.normalized_similarity(a, b) >= _TOKEN_CLOSE


def weighted_token_similarity(
    a: Sequence[str], b: Sequence[str], token_weight: TokenWeight
) -> float:
    """Dice similarity of two token sets where each token counts by its rarity weight.

    Tokens match when equal or within a small typo; filler words count less, so that two
    agencies sharing only "Overseas Manpower Services" score low.
    """
    if not a or not b:
        return 0.0

    left, right = set(a), set(b)
    weights = {
        token: (_FILLER_FACTOR if token in FILLER_WORDS else 1.0) * token_weight(token)
        for token in left | right
    }
    # Equal tokens pair first, then the others, in sorted order, each with its first typo
    # partner: a typo must not take an equal token's partner ("seri" / "services"), and
    # neither the pairs nor the sums may follow the order of a set of strings, which changes
    # with every process's hash seed (re-running matching must decide the same).
    equal = left & right
    paired = [weights[token] for token in equal]
    unmatched = sorted(right - equal)
    for token in sorted(left - equal):
        for index, other in enumerate(unmatched):
            if _tokens_agree(token, other):
                paired.append((weights[token] + weights[other]) / 2)
                del unmatched[index]
                break
    # fsum is exactly rounded, so the order of the terms cannot change the result.
    shared = math.fsum(paired)
    total = math.fsum(weights[t] for t in left) + math.fsum(weights[t] for t in right)
    return 2 * shared / total if total > 0 else 0.0


def _org_name_level(a: OrgName, b: OrgName, token_weight: TokenWeight) -> int:
    if not a.compact or not b.compact:
        return MISSING
    if a.compact == b.compact:
        return 0 if a.significant == b.significant else 1
    similarity = weighted_token_similarity(a.tokens, b.tokens, token_weight)
    if similarity >= 0.9 and JaroWinkler.normalized_similarity(a.compact, b.compact) >= _CLOSE:
        return 2  # every token agrees up to a typo
    if a.significant and b.significant:
        core = weighted_token_similarity(a.significant, b.significant, token_weight)
        if core >= 0.9:
            return 4 if _trade_words_conflict(a, b) else 3
    if similarity >= 0.6:
        return 5
    if similarity >= 0.3:
        return 6
    return 7


def _trade_words_conflict(a: OrgName, b: OrgName) -> bool:
    # Leaving trade words out is what writers do; writing other ones is what tells registry
    # siblings apart. A conflict: each side has a trade word the other lacks.
    trade_a = {t for t in a.tokens if t in FILLER_WORDS}
    trade_b = {t for t in b.tokens if t in FILLER_WORDS}
    return bool(trade_a - trade_b) and bool(trade_b - trade_a)


def compare_org_names(a: Sequence[OrgName], b: Sequence[OrgName], token_weight: TokenWeight) -> int:
    """Best agreement between any name or alias of one side and any of the other."""
    best = MISSING
    for name_a in a:
        for name_b in b:
            level = _org_name_level(name_a, name_b, token_weight)
            if level != MISSING and (best == MISSING or level < best):
                best = level
                if best == 0:
                    return 0
    return best


# Two tokens with one phonetic code must still look alike: the code drops vowels and classes
# consonants, so unrelated names collide ("Kumari" / "Ghimire", "Bhattarai" / "Bahadur": 0.53
# and 0.69) while the spelling variants it is for stay above this (Muhammad / Mhmd: 0.74).
_SOUND_ALIKE_FLOOR = 0.72


NamesApart = Callable[[str, str], bool]


def _short_typo(a: str, b: str, apart: NamesApart | None) -> bool:
    """A short name ("Ali", "Rao", "Tek") and one edit of it that is not itself an established
    name ("Ai", "Roa", "Tk"): similarity scores cannot tell a typo in three letters from
    another name, the counts can ("Ram" / "Rai" are both names). Without counts, no."""
    return (
        apart is not None
        and min(len(a), len(b)) < 4
        and a[0] == b[0]
        and OSA.distance(a, b, score_cutoff=1) <= 1
        and not apart(a, b)
    )


def _sound_alike(a: str, b: str, codes: dict[str, str], apart: NamesApart | None = None) -> bool:
    if _tokens_agree(a, b):
        # A typo, unless the two spellings sound different and are both established names
        # ("Rajesh" / "Ramesh", "Santos" / "Santiago"): two people, not one mistyped.
        return a == b or apart is None or codes.get(a) == codes.get(b) or not apart(a, b)
    if _short_typo(a, b, apart):
        return True
    code = codes.get(a, "")
    return (
        bool(code)
        and code == codes.get(b, "")
        and JaroWinkler.normalized_similarity(a, b) >= _SOUND_ALIKE_FLOOR
    )


def align_person_names(
    shorter: Sequence[str],
    longer: Sequence[str],
    codes: dict[str, str],
    apart: NamesApart | None = None,
) -> tuple[tuple[str, ...], int]:
    """Tokens of `shorter` that find a distinct partner in `longer`, and how many tokens of
    `longer` they used up.

    A partner is an equal token, a sound-alike spelling, a small typo, or two neighbouring
    tokens of `longer` written as one (Abdel Rahman / Abdelrahman, Dela Cruz / Delacruz).
    `apart(x, y)` tells two established names from a name and its typo (see
    `compare_person_names`).
    """
    remaining = list(longer)
    aligned: list[str] = []
    consumed = 0

    def joined_partner(token: str, exact: bool) -> int | None:
        for index in range(len(remaining) - 1):
            joined = remaining[index] + remaining[index + 1]
            if token == joined or (
                not exact
                and len(token) >= 6
                and JaroWinkler.normalized_similarity(token, joined) >= _CLOSE
            ):
                return index
        return None

    for token in shorter:
        # Strongest partner first: the same token, the same token split in two, then a
        # sound-alike or a typo ("abdelrahman" is close to "abdel" alone, but is "abdel rahman").
        if token in remaining:
            remaining.remove(token)
            aligned.append(token)
            consumed += 1
            continue
        split = joined_partner(token, exact=True)
        if split is None:
            partner = next((o for o in remaining if _sound_alike(token, o, codes, apart)), None)
            if partner is not None:
                remaining.remove(partner)
                aligned.append(token)
                consumed += 1
                continue
            split = joined_partner(token, exact=False)
        if split is not None:
            del remaining[split : split + 2]
            aligned.append(token)
            consumed += 2
    return tuple(aligned), consumed


def ordered_by_length(a: PersonName, b: PersonName) -> tuple[PersonName, PersonName]:
    """The name with fewer full tokens first (the first one on a tie)."""
    return (a, b) if len(a.tokens) <= len(b.tokens) else (b, a)


def compare_person_names(
    a: PersonName, b: PersonName, codes: dict[str, str], apart: NamesApart | None = None
) -> int:
    """Person names, insensitive to order, spelling variants, initials and a missing token.

    `codes` maps every token of both names to its phonetic code. Levels: the same tokens
    (exact), the same sounds (phonetic), every token agreeing up to a typo or a split (close),
    one side writing fewer names that the other contains (partial: a dropped middle name, an
    initial), all but one token of the shorter name agreeing and the odd one out still
    resembling its counterpart (overlap: a given name mistyped beyond recognition), the same
    but with a plainly different name or initial (relative: a family member sharing the
    surname, and often the phone and the district), or disagree.

    `apart(x, y)`, when given, says whether two spellings within a typo of each other are two
    established names (both carried by enough records) rather than a name and its misspelling:
    "Rajesh Kumar" / "Ramesh Kumar" is then relative, not close. A misspelling is rare; a
    name that many records carry is not one.
    """
    if not a.tokens or not b.tokens:
        return MISSING
    shorter, longer = ordered_by_length(a, b)
    aligned, consumed = align_person_names(shorter.tokens, longer.tokens, codes, apart)
    if len(aligned) == len(shorter.tokens) and consumed == len(longer.tokens):
        # Every full name agrees; contradicting initials ("T. Menon", "U. Menon") are two
        # people sharing a surname, not one person.
        if _initials_conflict(a, b):
            return 5
        return 0 if a.key == b.key else 1 if a.phonetic == b.phonetic else 2
    if len(aligned) == len(shorter.tokens):
        # One side wrote fewer names; its initials must not contradict the missing ones
        # (compared by sound: "V. Tamang" is "Bishnu Tamang" written as "Vishnu").
        leftover = _first_sounds(longer.tokens, codes) - _first_sounds(shorter.tokens, codes)
        initials = {phonetic_code(i)[:1] for i in shorter.initials}
        if not initials or initials & leftover or not leftover:
            return 3
        return 5
    if _initials_cover(shorter, longer, aligned, codes) or (
        len(shorter.tokens) == len(longer.tokens)
        and _initials_cover(
            longer,
            shorter,
            align_person_names(longer.tokens, shorter.tokens, codes, apart)[0],
            codes,
        )
    ):
        return 3  # "Reynaldo Ocampo" / "R. Luna Ocampo": an initial, a missing middle name
    if aligned and len(aligned) >= len(shorter.tokens) - 1:
        return 4 if _odd_tokens_resemble(shorter, longer, aligned, codes, apart) else 5
    return 6


def _first_sounds(tokens: Sequence[str], codes: dict[str, str]) -> set[str]:
    return {(codes.get(t) or phonetic_code(t))[:1] for t in tokens}


def _initials_cover(
    shorter: PersonName, longer: PersonName, aligned: Sequence[str], codes: dict[str, str]
) -> bool:
    """Whether every token of the shorter name left without a partner is one the longer name
    wrote as an initial (each initial used once)."""
    if not longer.initials:
        return False
    odd = [t for t in shorter.tokens if t not in aligned]
    initials = [phonetic_code(i)[:1] for i in longer.initials]
    for token in odd:
        sound = (codes.get(token) or phonetic_code(token))[:1]
        if sound not in initials:
            return False
        initials.remove(sound)
    return True


_RESEMBLE = 0.7  # Jaro-Winkler of a mangled name and its original ("Xiti" / "Siti": 0.83)


def _odd_tokens_resemble(
    shorter: PersonName,
    longer: PersonName,
    aligned: Sequence[str],
    codes: dict[str, str],
    apart: NamesApart | None = None,
) -> bool:
    """Whether a token of the shorter name left without a partner still looks like one of the
    longer name's unmatched tokens (a heavy typo) rather than another name (a relative)."""
    odd = [t for t in shorter.tokens if t not in aligned]
    unmatched = [
        t
        for t in longer.tokens
        if not any(t == x or _sound_alike(t, x, codes, apart) for x in aligned)
    ]
    return any(
        JaroWinkler.normalized_similarity(x, y) >= _RESEMBLE and (apart is None or not apart(x, y))
        for x in odd
        for y in unmatched
    )


def _initials_conflict(a: PersonName, b: PersonName) -> bool:
    """Both names carry initials and none of them sounds alike (V. and B. do)."""
    if not a.initials or not b.initials:
        return False
    left = {phonetic_code(i) for i in a.initials}
    return not left & {phonetic_code(i) for i in b.initials}


def _id_shape(number: str) -> str:
    return "".join("9" if ch.isdigit() else "A" for ch in number)


def compare_id_numbers(a: Collection[str], b: Collection[str]) -> int:
    """Passport and national ID numbers: like `compare_identifiers`, but two numbers of
    different shapes (a passport "A1234567" and a citizenship number "2701721234") are
    probably different documents of one person, not a contradiction: their own level."""
    level = compare_identifiers(a, b)
    if level != 2:
        return level
    shapes = {_id_shape(x) for x in a}
    return 2 if any(_id_shape(y) in shapes for y in b) else 3


def compare_identifiers(a: Collection[str], b: Collection[str]) -> int:
    """Licence, registration, passport or ID numbers: equal, one typo apart (a changed, added,
    dropped or transposed character), or different."""
    if not a or not b:
        return MISSING
    if set(a) & set(b):
        return 0
    for left in a:
        for right in b:
            if OSA.distance(left, right, score_cutoff=1) <= 1:
                return 1
    return 2


def compare_phones(a: Collection[str], b: Collection[str]) -> int:
    """E.164 phones: equal, same subscriber digits (under another country code, or a national
    number whose country was not known: `phone_subscriber`), or different."""
    if not a or not b:
        return MISSING
    if any(not p.startswith(SUBSCRIBER_PREFIX) for p in set(a) & set(b)):
        return 0
    if {p[-8:] for p in a} & {p[-8:] for p in b}:
        return 1
    return 2


# Day and month that registers write when only the year of birth is known: 1 January almost
# everywhere (refugee and civil registers, passports issued on declared ages), 1 July in some.
PLACEHOLDER_BIRTHDAYS = frozenset({(1, 1), (7, 1)})


def is_placeholder_birthday(value: date) -> bool:
    """True for a date of birth that probably stands for "born in this year"."""
    return (value.month, value.day) in PLACEHOLDER_BIRTHDAYS


def compare_dates_of_birth(a: date | None, b: date | None) -> int:
    """Dates of birth with the usual clerical errors as their own levels: day and month
    swapped (US against day-first order), the year off by one (an age converted to a year),
    one part differing (a mistyped day, month or year digit), a placeholder date (1 January
    for an unknown birthday) against a full date of the same year, and two of those errors
    together (`_two_errors_apart`), apart from dates that share nothing (disagree)."""
    if a is None or b is None:
        return MISSING
    if a == b:
        return 0
    if a.year == b.year and a.day == b.month and a.month == b.day:
        return 1
    if abs(a.year - b.year) == 1 and a.month == b.month and a.day == b.day:
        return 2
    parts_equal = (a.year == b.year) + (a.month == b.month) + (a.day == b.day)
    if parts_equal == 2:
        return 3
    if a.year == b.year and (is_placeholder_birthday(a) or is_placeholder_birthday(b)):
        return 4
    if _two_errors_apart(a, b):
        return 5
    return 6


def _two_errors_apart(a: date, b: date) -> bool:
    """Whether two of the clerical errors above, together, turn one date into the other: the
    year off by one and the day and month swapped, or either of them and one more part
    mistyped ("1990-01-21" / "1991-01-13", "1990-03-07" / "1990-07-09")."""
    crossed = a.day == b.month or a.month == b.day
    if a.year == b.year:
        return crossed
    if abs(a.year - b.year) == 1:
        swapped = a.day == b.month and a.month == b.day
        return a.day == b.day or a.month == b.month or swapped
    return False


def haversine_km(lat_a: float, lon_a: float, lat_b: float, lon_b: float) -> float:
    """Great-circle distance in kilometres."""
    phi_a, phi_b = math.radians(lat_a), math.radians(lat_b)
    d_phi = phi_b - phi_a
    d_lambda = math.radians(lon_b - lon_a)
    h = math.sin(d_phi / 2) ** 2 + math.cos(phi_a) * math.cos(phi_b) * math.sin(d_lambda / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def compare_distance(a: tuple[float, float] | None, b: tuple[float, float] | None) -> int:
    """Distance between two points (lat, lon)."""
    if a is None or b is None:
        return MISSING
    km = haversine_km(a[0], a[1], b[0], b[1])
    if km <= 0.2:
        return 0
    if km <= 1.0:
        return 1
    if km <= 5.0:
        return 2
    return 3


def compare_time_gap(a: datetime | None, b: datetime | None) -> int:
    """Gap between two occurrence times."""
    if a is None or b is None:
        return MISSING
    hours = abs((a - b).total_seconds()) / 3600
    for level, limit in enumerate((2.0, 12.0, 48.0, 168.0)):
        if hours <= limit:
            return level
    return 4


def compare_categories(a: Collection[str], b: Collection[str]) -> int:
    """Overlap (Jaccard) of two category sets."""
    if not a or not b:
        return MISSING
    left, right = set(a), set(b)
    jaccard = len(left & right) / len(left | right)
    if jaccard == 1.0:
        return 0
    if jaccard >= 0.5:
        return 1
    if jaccard > 0:
        return 2
    return 3


def compare_token_overlap(a: Collection[str], b: Collection[str]) -> int:
    """Overlap coefficient of two token sets (narrative keywords)."""
    if not a or not b:
        return MISSING
    left, right = set(a), set(b)
    overlap = len(left & right) / min(len(left), len(right))
    if overlap >= 0.5:
        return 0
    if overlap > 0:
        return 1
    return 2


def compare_equal(a: str | None, b: str | None) -> int:
    """Plain equality of a categorical value (country, district, legal form, monitor)."""
    if not a or not b:
        return MISSING
    return 0 if a == b else 1


def compare_place_names(a: str | None, b: str | None, apart: NamesApart | None = None) -> int:
    """Districts and towns: equal, a spelling variant (Jaro-Winkler >= 0.92, or one typo in a
    name of four letters or more: "Qena" / "Qega", "Saran" / "Sarfn"), or different.

    `apart(x, y)`, when given, says whether two spellings are both established place names
    (both written by enough records): one typo apart, they are then two places."""
    if not a or not b:
        return MISSING
    if a == b:
        return 0
    if JaroWinkler.normalized_similarity(a, b) >= _CLOSE:
        return 1
    one_typo = min(len(a), len(b)) >= 4 and OSA.distance(a, b, score_cutoff=1) <= 1
    return 1 if one_typo and (apart is None or not apart(a, b)) else 2
