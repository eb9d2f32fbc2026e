"""Job specifications: which fields each matching job compares, with which comparator, how it
blocks, and its starting thresholds. One engine runs all three jobs from these specs."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from cases.matching import comparators as cmp
from cases.matching.blocking import (
    entity_keys,
    incident_index_keys,
    incident_query_keys,
    person_keys,
)
from cases.matching.features import (
    EntityFeatures,
    IncidentFeatures,
    PersonFeatures,
    prepare_entity,
    prepare_incident,
    prepare_person,
    sound_pairs,
    sound_set,
    sound_sets,
)
from cases.matching.model import FrequencyTable, Thresholds
from cases.matching.normalise import OrgName
from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord

__all__ = [
    "ABSENCE_LEVELS",
    "JOB_NAMES",
    "FieldSpec",
    "JobName",
    "JobSpec",
    "TermFrequency",
    "entity_job",
    "incident_job",
    "job_spec",
    "person_job",
]

R = TypeVar("R")
F = TypeVar("F")


class TermFrequency(NamedTuple):
    """How common the value two records agree on is (share of records holding it), and the
    typical frequency it is judged against (None: the level's u)."""

    frequency: float | None
    reference: float | None = None


@dataclass(frozen=True)
class FieldSpec(Generic[F]):
    """One compared field: its levels, its comparator and, for names and dates, the frequency
    of the agreeing value used by the term-frequency adjustment."""

    name: str
    levels: tuple[str, ...]
    compare: Callable[[F, F, FrequencyTable], int]
    tf_levels: tuple[int, ...] = ()
    tf_frequency: Callable[[F, F, int, FrequencyTable], TermFrequency] | None = None


@dataclass(frozen=True)
class JobSpec(Generic[R, F]):
    """Everything that makes one matching job different from another."""

    name: str
    prepare: Callable[[R], F]
    fields: tuple[FieldSpec[F], ...]
    index_keys: Callable[[F], Iterable[str]]
    query_keys: Callable[[F], Iterable[str]]
    count_values: Callable[[F, FrequencyTable], None]
    thresholds: Thresholds = field(default_factory=Thresholds)
    linkage: bool = False  # True: match records against a reference set (the registry)
    max_postings: int = 2000
    max_candidates: int = 100


def _org_tokens(names: Iterable[OrgName]) -> set[str]:
    return {token for name in names for token in name.tokens}


def _org_rarity(frequencies: FrequencyTable) -> cmp.TokenWeight:
    return partial(frequencies.rarity, "org_token")


# Incident dedup ----------------------------------------------------------------------------


def _incident_employer(a: IncidentFeatures, b: IncidentFeatures, freq: FrequencyTable) -> int:
    if a.employer_ids and b.employer_ids:
        return 0 if a.employer_ids & b.employer_ids else len(cmp.ORG_NAME_LEVELS) - 1
    return cmp.compare_org_names(a.employer_names, b.employer_names, _org_rarity(freq))


def _count_incident(features: IncidentFeatures, freq: FrequencyTable) -> None:
    freq.add_set("org_token", _org_tokens(features.employer_names))


def incident_job(
    resolution: int = 7, window_days: int = 1
) -> JobSpec[IncidentRecord, IncidentFeatures]:
    """Two reports of one incident: close in time and place, same employer, same story."""
    fields: tuple[FieldSpec[IncidentFeatures], ...] = (
        FieldSpec(
            "time",
            cmp.TIME_GAP_LEVELS,
            lambda a, b, _: cmp.compare_time_gap(a.occurred_at, b.occurred_at),
        ),
        FieldSpec(
            "place", cmp.DISTANCE_LEVELS, lambda a, b, _: cmp.compare_distance(a.point, b.point)
        ),
        FieldSpec(
            "categories",
            cmp.CATEGORY_LEVELS,
            lambda a, b, _: cmp.compare_categories(a.categories, b.categories),
        ),
        FieldSpec("employer", cmp.ORG_NAME_LEVELS, _incident_employer),
        FieldSpec(
            "narrative",
            cmp.TOKEN_OVERLAP_LEVELS,
            lambda a, b, _: cmp.compare_token_overlap(a.narrative_tokens, b.narrative_tokens),
        ),
        FieldSpec(
            "monitor",
            cmp.EQUALITY_LEVELS,
            lambda a, b, _: cmp.compare_equal(a.monitor_id, b.monitor_id),
        ),
    )
    return JobSpec(
        name="incident",
        prepare=partial(prepare_incident, resolution=resolution),
        fields=fields,
        index_keys=incident_index_keys,
        query_keys=partial(incident_query_keys, window_days=window_days),
        count_values=_count_incident,
        thresholds=Thresholds(link=0.9, review=0.5),
    )


# Entity resolution -------------------------------------------------------------------------


def _entity_name_frequency(
    a: EntityFeatures, b: EntityFeatures, level: int, freq: FrequencyTable
) -> TermFrequency:
    # Exact names: how common is the whole name; same core: how common are its distinctive
    # words ("Doha" is shared by many registry entries, "Sagarmatha Kantipur" by few).
    whole = cmp.ORG_NAME_LEVELS[level] in {"exact", "reordered"}
    namespace, attribute = ("org_key", "compact") if whole else ("org_core", "core")
    shared = {getattr(n, attribute) for n in a.names} & {getattr(n, attribute) for n in b.names}
    shared.discard("")
    frequencies = [f for f in (freq.frequency(namespace, key) for key in shared) if f is not None]
    return TermFrequency(min(frequencies) if frequencies else None)


def _count_entity(features: EntityFeatures, freq: FrequencyTable) -> None:
    freq.add_set("org_key", {n.compact for n in features.names})
    freq.add_set("org_core", {n.core for n in features.names if n.core})
    freq.add_set("org_token", _org_tokens(features.names))


def entity_job(default_region: str | None = None) -> JobSpec[EntityRecord, EntityFeatures]:
    """A free-text employer or recruiter against the registry. Identifiers beat names."""
    fields: tuple[FieldSpec[EntityFeatures], ...] = (
        FieldSpec(
            "name",
            cmp.ORG_NAME_LEVELS,
            lambda a, b, freq: cmp.compare_org_names(a.names, b.names, _org_rarity(freq)),
            tf_levels=tuple(
                cmp.ORG_NAME_LEVELS.index(level)
                for level in ("exact", "reordered", "same_core", "other_trade")
            ),
            tf_frequency=_entity_name_frequency,
        ),
        FieldSpec(
            "licence",
            cmp.IDENTIFIER_LEVELS,
            lambda a, b, _: cmp.compare_identifiers(a.licences, b.licences),
        ),
        FieldSpec(
            "registration",
            cmp.IDENTIFIER_LEVELS,
            lambda a, b, _: cmp.compare_identifiers(a.registration, b.registration),
        ),
        FieldSpec(
            "phone", cmp.PHONE_LEVELS, lambda a, b, _: cmp.compare_phones(a.phones, b.phones)
        ),
        FieldSpec(
            "country", cmp.EQUALITY_LEVELS, lambda a, b, _: cmp.compare_equal(a.country, b.country)
        ),
        FieldSpec(
            "legal_form",
            cmp.EQUALITY_LEVELS,
            lambda a, b, _: cmp.compare_equal(a.legal_form, b.legal_form),
        ),
    )
    return JobSpec(
        name="entity",
        prepare=partial(prepare_entity, default_region=default_region),
        fields=fields,
        index_keys=entity_keys,
        query_keys=entity_keys,
        count_values=_count_entity,
        thresholds=Thresholds(link=0.95, review=0.3),
        linkage=True,
    )


# Person dedup ------------------------------------------------------------------------------


# Two spellings within a typo of each other are two names, not a name and its misspelling,
# when both are carried by at least this many records and the rarer by at least this share
# of the commoner's records: a given misspelling of a name is far rarer than that.
_ESTABLISHED_NAME_RECORDS = 3
_ESTABLISHED_NAME_SHARE = 0.05


def _names_apart(freq: FrequencyTable, namespace: str = "person_token") -> cmp.NamesApart | None:
    """Whether two name tokens (or two place names, `namespace` "district") are both
    established (see `compare_person_names`); None while too few records are counted to tell."""
    if not freq.is_counted(namespace):
        return None

    def apart(a: str, b: str) -> bool:
        left, right = freq.count(namespace, a), freq.count(namespace, b)
        rarer = min(left, right)
        return rarer >= _ESTABLISHED_NAME_RECORDS and rarer >= _ESTABLISHED_NAME_SHARE * max(
            left, right
        )

    return apart


def _compare_person_names(a: PersonFeatures, b: PersonFeatures, freq: FrequencyTable) -> int:
    return cmp.compare_person_names(a.name, b.name, a.codes | b.codes, _names_apart(freq))


def _person_name_frequency(
    a: PersonFeatures, b: PersonFeatures, level: int, freq: FrequencyTable
) -> TermFrequency:
    if level == 0:
        # The same names: how many records carry all of their sounds, alone or inside a longer
        # name ("Ram Gurung" is also how a "Ram Bahadur Gurung" is written).
        whole = sound_set(a.codes.values())
        if whole is not None:
            return TermFrequency(
                freq.frequency("person_within", whole), freq.typical("person_within")
            )
    if level <= 1:
        left = freq.frequency("person_sound", a.name.phonetic_key)
        right = freq.frequency("person_sound", b.name.phonetic_key)
        if left is None or right is None:
            return TermFrequency(None)
        return TermFrequency(max(left, right), freq.typical("person_sound"))
    # Partial agreements: how many people carry the names both sides agree on. Pairs of sounds
    # are counted per record, so "Ram Gurung" inside "Ram Bahadur Gurung" is counted too. Each
    # side's spelling is looked up and the commoner one counts: a typo ("Kumaar") has a rare
    # sound of its own, but the name it stands for is as common as ever.
    codes = a.codes | b.codes
    apart = _names_apart(freq)
    readings = [
        _rarest_sounds(cmp.align_person_names(x.tokens, y.tokens, codes, apart)[0], codes, freq)
        for x, y in ((a.name, b.name), (b.name, a.name))
    ]
    known = [r for r in readings if r.frequency is not None and r.reference is not None]
    if not known:
        return TermFrequency(None)
    # The reading with the smaller shift: frequency highest against its reference.
    return max(known, key=lambda r: (r.frequency or 0.0) / (r.reference or 1.0))


def _rarest_sounds(
    aligned: Iterable[str], codes: dict[str, str], freq: FrequencyTable
) -> TermFrequency:
    sounds = {codes[t] for t in aligned if codes.get(t)}
    if len(sounds) == 1:
        (sound,) = sounds
        return TermFrequency(freq.frequency("person_code", sound), freq.typical("person_code"))
    frequencies = [freq.frequency("person_pair", pair) for pair in sound_pairs(sounds)]
    known = [f for f in frequencies if f is not None]
    if not known:
        return TermFrequency(None)
    return TermFrequency(min(known), freq.typical("person_pair"))


def _value_frequency(
    namespace: str, value: Callable[[PersonFeatures], str | None]
) -> Callable[[PersonFeatures, PersonFeatures, int, FrequencyTable], TermFrequency]:
    def frequency(
        a: PersonFeatures, _: PersonFeatures, level: int, freq: FrequencyTable
    ) -> TermFrequency:
        key = value(a)
        if key is None:
            return TermFrequency(None)
        return TermFrequency(freq.frequency(namespace, key), freq.typical(namespace))

    return frequency


def _dob_key(features: PersonFeatures) -> str | None:
    return features.dob.isoformat() if features.dob else None


def _count_person(features: PersonFeatures, freq: FrequencyTable) -> None:
    if features.name.tokens:
        freq.add_set("person_token", set(features.name.tokens))
        freq.add("person_sound", features.name.phonetic_key)
        codes = {code for code in features.codes.values() if code}
        freq.add_set("person_code", codes)
        freq.add_set("person_pair", sound_pairs(codes))
        freq.add_set("person_within", sound_sets(codes))
    # Dates of birth are far from uniform in real registers (1 January stands in for an
    # unknown birthday), so an agreeing date weighs by how common it is.
    if features.dob is not None:
        freq.add("dob", features.dob.isoformat())
    if features.district:
        freq.add("district", features.district)


# Whether a report gives a passport number or a phone at all says something too: a worker whose
# passport the employer holds, or who has no phone, gives none in any report, so two reports
# of one worker lack it together more often than two workers' reports do, and one report
# giving it and the other not is then weaker evidence than silence. Both are levels of their
# own, after the comparator's, and the data decide their weights (near 0 where absence is
# chance). The other fields keep "missing" as no evidence.
ABSENCE_LEVELS = ("one_missing", "both_missing")


def _with_absence(
    compare: Callable[[Collection[str], Collection[str]], int],
    values: Callable[[PersonFeatures], Collection[str]],
    levels: int,
) -> Callable[[PersonFeatures, PersonFeatures, FrequencyTable], int]:
    """`compare` on two records' values, with `ABSENCE_LEVELS` (numbered after the
    comparator's `levels`) when one or both records give none."""

    def level(a: PersonFeatures, b: PersonFeatures, _: FrequencyTable) -> int:
        left, right = values(a), values(b)
        if left and right:
            return compare(left, right)
        return levels + (0 if left or right else 1)

    return level


def person_job(default_region: str | None = None) -> JobSpec[PersonRecord, PersonFeatures]:
    """The same worker across reports. Passport and ID numbers beat names."""
    fields: tuple[FieldSpec[PersonFeatures], ...] = (
        FieldSpec(
            "name",
            cmp.PERSON_NAME_LEVELS,
            _compare_person_names,
            tf_levels=(0, 1, 2, 3, 4, 5),
            tf_frequency=_person_name_frequency,
        ),
        FieldSpec(
            "dob",
            cmp.DOB_LEVELS,
            lambda a, b, _: cmp.compare_dates_of_birth(a.dob, b.dob),
            tf_levels=(0,),
            tf_frequency=_value_frequency("dob", _dob_key),
        ),
        FieldSpec(
            "id_number",
            cmp.ID_NUMBER_LEVELS + ABSENCE_LEVELS,
            _with_absence(
                cmp.compare_id_numbers, lambda f: f.id_numbers, len(cmp.ID_NUMBER_LEVELS)
            ),
        ),
        FieldSpec(
            "phone",
            cmp.PHONE_LEVELS + ABSENCE_LEVELS,
            _with_absence(cmp.compare_phones, lambda f: f.phones, len(cmp.PHONE_LEVELS)),
        ),
        FieldSpec(
            "district",
            cmp.PLACE_NAME_LEVELS,
            lambda a, b, freq: cmp.compare_place_names(
                a.district, b.district, _names_apart(freq, "district")
            ),
            tf_levels=(0,),
            tf_frequency=_value_frequency("district", lambda f: f.district),
        ),
    )
    return JobSpec(
        name="person",
        prepare=partial(prepare_person, default_region=default_region),
        fields=fields,
        index_keys=person_keys,
        query_keys=person_keys,
        count_values=_count_person,
        thresholds=Thresholds(link=0.95, review=0.5),
    )


# The three matching jobs by the names the API, the job queue and stored models use.
JobName = Literal["incident", "entity", "person"]
JOB_NAMES: tuple[JobName, ...] = ("incident", "entity", "person")


def job_spec(name: JobName) -> JobSpec[Any, Any]:
    """The job of that name with its default settings."""
    if name == "incident":
        return incident_job()
    if name == "entity":
        return entity_job()
    return person_job()
