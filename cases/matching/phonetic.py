"""A small phonetic key for Latin-script names after transliteration.

Tuned for the spelling variation of the migration corridors (Mohammad / Muhammed / Mhmd,
Bijay / Vijay, Djoko / Joko, Chowdhury / Choudhury, Zaman / Jaman), not for English surnames.
"""

from __future__ import annotations

__all__ = ["phonetic_code"]

# Digraphs first: their letters would otherwise be coded one by one. Old Indonesian (Dutch)
# spellings dj/tj/oe and the aspirated consonants of South Asian romanisations collapse here.
_DIGRAPHS: tuple[tuple[str, str], ...] = (
    ("sch", "s"),
    ("dj", "j"),
    ("tj", "%"),
    ("ch", "%"),
    ("oe", "u"),
    ("ph", "f"),
    ("sh", "s"),
    ("kh", "k"),
    ("gh", "g"),
    ("th", "t"),
    ("dh", "d"),
    ("bh", "b"),
    ("jh", "j"),
    ("ck", "k"),
    ("x", "ks"),
)

# Consonant classes: letters that transliterations swap for one another share a code.
_CLASSES: dict[str, str] = {
    "b": "B",
    "p": "B",
    "f": "B",
    "v": "B",
    "w": "B",
    "c": "K",
    "k": "K",
    "q": "K",
    "g": "K",
    "j": "J",
    "z": "J",
    "s": "S",
    "d": "T",
    "t": "T",
    "l": "L",
    "m": "M",
    "n": "N",
    "r": "R",
    "%": "C",
}
_VOWELS = frozenset("aeiouy")
_MAX_LENGTH = 6


def phonetic_code(token: str) -> str:
    """Phonetic code of one lower-case ASCII token ("" for a token without letters)."""
    word = "".join(ch for ch in token.lower() if "a" <= ch <= "z")
    if not word:
        return ""
    if word == "y":
        return "J"  # the initial of Yusuf, Yuni, Youssef: codes like their full names
    for digraph, replacement in _DIGRAPHS:
        word = word.replace(digraph, replacement)
    first = word[0]
    if first in _VOWELS and not (first == "y" and len(word) > 1 and word[1] in _VOWELS):
        code = "A"
    elif first == "y":
        code = "J"  # Yadav / Jadav, Yusuf / Jusuf
    elif first == "h":
        code = "H"
    else:
        code = _CLASSES.get(first, first.upper())
    previous = code
    for position in range(1, len(word)):
        ch = word[position]
        following = word[position + 1] if position + 1 < len(word) else ""
        if ch in _VOWELS or (ch == "w" and following not in _VOWELS):
            # A w closing a syllable is a vowel glide (Chowdhury / Choudhury); before a vowel it is
            # a consonant that alternates with v (Dewi / Devi).
            previous = ""
            continue
        if ch == "h":
            # A non-initial h is mostly a romanisation artefact (Mohammad / Moammad). It counts as
            # a vowel gap so that vowel-less Arabic transliterations (mhmd) code like the rest.
            previous = ""
            continue
        mapped = _CLASSES.get(ch, "")
        if mapped and mapped != previous:
            code += mapped
        previous = mapped
        if len(code) >= _MAX_LENGTH:
            break
    return code
