"""The incident taxonomy: versioned categories grounded in ILO indicators, with translated labels.

The data lives in ``cases/data/taxonomy.json`` so it can change without code and be synced to
devices as is; this module decodes it, checks its internal consistency and answers lookups.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Annotated, Final, Literal, NamedTuple

import msgspec

__all__ = [
    "CATEGORY_CODE_PATTERN",
    "LANGUAGES",
    "Category",
    "CategoryGroup",
    "CodeProblem",
    "CodeProblemReason",
    "Indicator",
    "Labels",
    "PriorityGroup",
    "Taxonomy",
    "TaxonomyDocument",
    "TaxonomyError",
    "load_taxonomy",
    "normalise_language",
    "parse_taxonomy",
]

CATEGORY_CODE_PATTERN: Final = r"^[A-Z]{2}\.[A-Z_]{2,40}$"
LANGUAGES: Final = ("en", "ne", "id", "tl", "ar", "th")

# Tags devices actually send that are not the ISO 639-1 code we store labels under:
# "fil" is Filipino (standardised Tagalog), "in" is the pre-1989 code Android still reports
# for Indonesian on old phones.
_LANGUAGE_ALIASES: Final = {"fil": "tl", "in": "id"}

CategoryCode = Annotated[str, msgspec.Meta(pattern=CATEGORY_CODE_PATTERN)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
CodeProblemReason = Literal["unknown_category", "retired_category"]


class TaxonomyError(ValueError):
    """The taxonomy data is malformed or internally inconsistent."""


class Labels(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One label per supported language; every language is required so no device shows a gap."""

    en: Label
    ne: Label
    id: Label
    tl: Label
    ar: Label
    th: Label

    def get(self, language: str) -> str:
        """The label in ``language`` (any BCP 47 tag), falling back to English."""
        code = normalise_language(language)
        if code in LANGUAGES:
            value: str = getattr(self, code)
            return value
        return self.en


class Indicator(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An ILO indicator or principle that categories map to."""

    id: Annotated[str, msgspec.Meta(pattern=r"^ILO-(FL-\d{2}|FR-GP\d{2})$")]
    source: str
    name: str


class CategoryGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A theme that groups categories in pickers and reports."""

    code: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{2,40}$")]
    labels: Labels


class Category(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One incident category.

    Codes are stable forever: a category that is no longer offered is marked ``retired`` (and
    may name its successor) rather than deleted, so old reports keep a valid code.
    """

    code: CategoryCode
    group: str
    severity_hint: Annotated[int, msgspec.Meta(ge=1, le=5)]
    indicators: tuple[str, ...]
    retired: bool
    since_version: Annotated[int, msgspec.Meta(ge=1)]
    labels: Labels
    retired_in_version: Annotated[int, msgspec.Meta(ge=1)] | None = None
    replaced_by: CategoryCode | None = None


class PriorityGroup(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A set of categories that raises case priority and that the risk scan watches closely."""

    code: Annotated[str, msgspec.Meta(pattern=r"^[a-z_]{2,40}$")]
    escalates_to: Literal["critical", "high"]
    categories: tuple[CategoryCode, ...]
    rationale: str


class TaxonomyDocument(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The taxonomy file as decoded; this is also what devices receive on pull."""

    version: Annotated[int, msgspec.Meta(ge=1)]
    languages: tuple[str, ...]
    indicators: tuple[Indicator, ...]
    groups: tuple[CategoryGroup, ...]
    categories: tuple[Category, ...]
    priority_groups: tuple[PriorityGroup, ...]


class CodeProblem(NamedTuple):
    """Why a category code in a report is not acceptable."""

    code: str
    reason: CodeProblemReason


def normalise_language(language: str) -> str:
    """The two-letter code for a BCP 47 tag such as ``ne-NP``, ``fil_PH`` or ``EN``."""
    primary = language.strip().replace("_", "-").split("-", 1)[0].lower()
    return _LANGUAGE_ALIASES.get(primary, primary)


class Taxonomy:
    """A checked, indexed taxonomy. Build it with `load_taxonomy` or `parse_taxonomy`."""

    __slots__ = ("_by_code", "_groups", "_priority_groups", "content_hash", "document")

    def __init__(self, document: TaxonomyDocument) -> None:
        _check_consistency(document)
        self.document: Final = document
        self.content_hash: Final = _content_hash(document)
        self._by_code: Final[Mapping[str, Category]] = {c.code: c for c in document.categories}
        self._groups: Final[Mapping[str, CategoryGroup]] = {g.code: g for g in document.groups}
        self._priority_groups: Final[Mapping[str, PriorityGroup]] = {
            g.code: g for g in document.priority_groups
        }

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def categories(self) -> tuple[Category, ...]:
        """All categories, retired ones included, in file order."""
        return self.document.categories

    def active_categories(self) -> tuple[Category, ...]:
        """The categories a monitor may choose today."""
        return tuple(c for c in self.document.categories if not c.retired)

    def category(self, code: str) -> Category:
        """The category with this code; raises KeyError when there is none."""
        return self._by_code[code]

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def validate_codes(self, codes: Iterable[str]) -> list[CodeProblem]:
        """Problems with the given codes, in input order; an empty list means all are usable."""
        problems: list[CodeProblem] = []
        for code in codes:
            category = self._by_code.get(code)
            if category is None:
                problems.append(CodeProblem(code, "unknown_category"))
            elif category.retired:
                problems.append(CodeProblem(code, "retired_category"))
        return problems

    def canonical_code(self, code: str) -> str:
        """The code a retired category was folded into, or the code itself.

        Statistics and scans count old reports under today's categories through this.
        """
        # Successors are always active (checked on load), so one hop is enough.
        category = self._by_code[code]
        return category.replaced_by or category.code

    def label(self, code: str, language: str) -> str:
        """The category's label in ``language``, falling back to English."""
        return self._by_code[code].labels.get(language)

    def group(self, code: str) -> CategoryGroup:
        return self._groups[code]

    def priority_group(self, code: str) -> PriorityGroup:
        return self._priority_groups[code]

    @property
    def priority_groups(self) -> tuple[PriorityGroup, ...]:
        return self.document.priority_groups

    def priority_groups_of(self, code: str) -> tuple[PriorityGroup, ...]:
        """The high-priority groups a (possibly retired) category belongs to."""
        canonical = self.canonical_code(code)
        return tuple(g for g in self.document.priority_groups if canonical in g.categories)

    def __repr__(self) -> str:
        return f"Taxonomy(version={self.version}, content_hash={self.content_hash!r})"


_decoder: Final = msgspec.json.Decoder(TaxonomyDocument)


def parse_taxonomy(data: bytes | str) -> Taxonomy:
    """Decode and check taxonomy JSON; raises TaxonomyError on any problem."""
    try:
        document = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise TaxonomyError(f"invalid taxonomy: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise TaxonomyError(f"taxonomy is not valid JSON: {exc}") from exc
    return Taxonomy(document)


@functools.cache
def load_taxonomy() -> Taxonomy:
    """The taxonomy shipped with Fairwatch, read once from package data."""
    data = resources.files("cases").joinpath("data", "taxonomy.json").read_bytes()
    return parse_taxonomy(data)


def _content_hash(document: TaxonomyDocument) -> str:
    # Hash a canonical encoding rather than the file bytes, so reformatting the JSON does not
    # make every device think the taxonomy changed.
    canonical = msgspec.json.encode(document, order="sorted")
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _check_consistency(doc: TaxonomyDocument) -> None:
    problems: list[str] = []
    if tuple(doc.languages) != LANGUAGES:
        problems.append(f"languages must be {list(LANGUAGES)}")
    problems += _duplicates("indicator id", [i.id for i in doc.indicators])
    problems += _duplicates("group code", [g.code for g in doc.groups])
    problems += _duplicates("category code", [c.code for c in doc.categories])
    problems += _duplicates("priority group code", [g.code for g in doc.priority_groups])

    indicator_ids = {i.id for i in doc.indicators}
    group_codes = {g.code for g in doc.groups}
    by_code = {c.code: c for c in doc.categories}
    for category in doc.categories:
        problems += _category_problems(category, doc.version, indicator_ids, group_codes, by_code)
    for group in doc.priority_groups:
        for code in group.categories:
            member = by_code.get(code)
            if member is None or member.retired:
                problems.append(f"priority group {group.code}: {code} is not an active category")
    if problems:
        raise TaxonomyError("inconsistent taxonomy: " + "; ".join(problems))


def _category_problems(
    category: Category,
    version: int,
    indicator_ids: set[str],
    group_codes: set[str],
    by_code: Mapping[str, Category],
) -> list[str]:
    code = category.code
    problems = [
        f"{code}: unknown indicator {i}" for i in category.indicators if i not in indicator_ids
    ]
    if category.group not in group_codes:
        problems.append(f"{code}: unknown group {category.group}")
    if category.since_version > version:
        problems.append(f"{code}: since_version is later than the taxonomy version")
    if category.retired:
        if category.retired_in_version is None or category.retired_in_version > version:
            problems.append(f"{code}: retired needs retired_in_version <= taxonomy version")
        if category.replaced_by is not None:
            successor = by_code.get(category.replaced_by)
            # A successor that is itself retired would make canonical_code chase chains.
            if successor is None or successor.retired:
                problems.append(f"{code}: replaced_by must name an active category")
    elif category.retired_in_version is not None or category.replaced_by is not None:
        problems.append(f"{code}: only retired categories carry retired_in_version/replaced_by")
    return problems


def _duplicates(what: str, values: list[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for value in values:
        if value in seen:
            problems.append(f"duplicate {what} {value}")
        seen.add(value)
    return problems
