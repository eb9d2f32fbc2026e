"""Candidate generation: blocking keys per job and an incremental inverted index, so that a new
record is compared with the few records that share a key, not with all of them."""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import h3

from cases.matching.features import (
    EntityFeatures,
    IncidentFeatures,
    PersonFeatures,
    sound_pairs,
)
from cases.matching.model import FrequencyTable
from cases.matching.phonetic import phonetic_code

__all__ = [
    "CandidateIndex",
    "entity_keys",
    "incident_index_keys",
    "incident_query_keys",
    "person_keys",
]

F = TypeVar("F")


def incident_index_keys(features: IncidentFeatures) -> list[str]:
    """An incident is filed under its H3 cell and day."""
    if features.cell is None:
        return [f"d:{features.day}"]
    return [f"g:{features.cell}:{features.day}"]


def incident_query_keys(features: IncidentFeatures, window_days: int = 1) -> list[str]:
    """Look in the cell and its ring of neighbours (grid_disk k=1), day +/- window."""
    days = range(features.day - window_days, features.day + window_days + 1)
    if features.cell is None:
        return [f"d:{day}" for day in days]
    return [f"g:{cell}:{day}" for cell in h3.grid_disk(features.cell, 1) for day in days]


def entity_keys(features: EntityFeatures) -> list[str]:
    """Whole-name key, significant name tokens and their sounds, phones, licence and
    registration numbers. Trade filler words are never keys on their own."""
    keys: set[str] = set()
    for name in features.names:
        keys.add(f"n:{name.compact}")
        tokens = name.significant or name.tokens
        keys.update(f"t:{token}" for token in tokens if len(token) > 1)
        keys.update(f"p:{code}" for code in name.phonetic if len(code) > 1)
    keys.update(_subscriber_keys(features.phones))
    keys.update(f"l:{licence}" for licence in features.licences)
    keys.update(f"r:{number}" for number in features.registration)
    return sorted(keys)


def _subscriber_keys(phones: Iterable[str]) -> set[str]:
    # The subscriber digits, not the E.164 form: a number written without its country (or
    # under another one) must still meet its other spellings.
    return {f"ph:{phone[-8:]}" for phone in phones}


def _sound_with_initials(features: PersonFeatures) -> set[str]:
    # Each token's sound with the first sound of every other token or initial: "Rafjesh Kumar"
    # meets "Rajesh Kumar" (KMR|R), "M. Hassan" meets "Mohamed Hassan" (HSN|M) and "Meonn
    # Raejsh" meets "Rajesh Menon" (RJS|M), where a typo changed the other token's sound. Far
    # more selective than the token alone, so the record ranks above its namesakes.
    name = features.name
    sounds = [features.codes.get(token, "") for token in name.tokens]
    firsts = [code[:1] for code in sounds] + [phonetic_code(i)[:1] for i in name.initials]
    keys: set[str] = set()
    for position, code in enumerate(sounds):
        if not code:
            continue
        others = {first for index, first in enumerate(firsts) if index != position and first}
        keys.update(f"ci:{code}|{first}" for first in others)
    return keys


def person_keys(features: PersonFeatures) -> list[str]:
    """Name tokens, pairs of name sounds, each sound with the other tokens' first sounds,
    whole-name sound, identifiers, phones, date of birth with each initial. Pairs of sounds
    keep namesakes of a very common given name or surname reachable when the single token is
    too common to be a key ("Mohammad")."""
    name = features.name
    keys: set[str] = {f"t:{token}" for token in name.tokens}
    keys.update(f"pp:{pair}" for pair in sound_pairs(features.codes.values()))
    keys.update(_sound_with_initials(features))
    if features.district:
        # A common name within one home district: ranks a namesake from the same district
        # above the hundreds from elsewhere.
        keys.update(f"ds:{features.district}|{code}" for code in features.codes.values() if code)
    if name.phonetic:
        keys.add(f"pk:{name.phonetic_key}")
    keys.update(_subscriber_keys(features.phones))
    keys.update(f"id:{number}" for number in features.id_numbers)
    if features.dob is not None:
        dates = {features.dob.isoformat()}
        if features.dob.day <= 12 and features.dob.day != features.dob.month:
            dates.add(
                features.dob.replace(month=features.dob.day, day=features.dob.month).isoformat()
            )
        initials = {t[0] for t in name.tokens} | set(name.initials)
        keys.update(f"b:{day}:{initial}" for day in dates for initial in initials)
    return sorted(keys)


class CandidateIndex(Generic[F]):
    """Inverted index from blocking keys to indexed records, updated one record at a time.

    Keys with more than `max_postings` records are skipped at query time: a very common name
    token says little and would make the cost grow with the index. Candidates are ranked by the
    keys they share with the query, each key counting more the fewer records it holds (a shared
    passport number outranks a shared common surname), and the best `max_candidates` are kept.
    """

    def __init__(
        self,
        index_keys: Callable[[F], Iterable[str]],
        query_keys: Callable[[F], Iterable[str]],
        count_values: Callable[[F, FrequencyTable], None],
        *,
        max_postings: int = 2000,
        max_candidates: int = 100,
    ) -> None:
        self._index_keys = index_keys
        self._query_keys = query_keys
        self._count_values = count_values
        self.max_postings = max_postings
        self.max_candidates = max_candidates
        self.records: list[F] = []
        self.postings: dict[str, list[int]] = {}
        self.frequencies = FrequencyTable()
        self._discarded: set[int] = set()

    def __len__(self) -> int:
        return len(self.records) - len(self._discarded)

    def add(self, features: F) -> int:
        """File a prepared record; returns its position."""
        position = len(self.records)
        self.records.append(features)
        for key in self._index_keys(features):
            self.postings.setdefault(key, []).append(position)
        self._count_values(features, self.frequencies)
        return position

    def discard(self, position: int) -> None:
        """Take a filed record out (its report was amended, withdrawn or redacted): no query
        finds it again and its values leave the frequency counts. Positions are not reused, so
        a replacement is filed again with `add`."""
        if position in self._discarded:
            return
        self._discarded.add(position)
        features = self.records[position]
        for key in self._index_keys(features):  # as `add` filed it
            posting = self.postings[key]
            # Positions are appended in increasing order, so each posting list is sorted.
            del posting[bisect.bisect_left(posting, position)]
            if not posting:
                del self.postings[key]
        counted = FrequencyTable()
        self._count_values(features, counted)
        self.frequencies.subtract(counted)

    def candidates(self, features: F, *, before: int | None = None) -> list[int]:
        """Positions of indexed records sharing a key with `features`.

        With `before`, only positions lower than it are returned (each pair once in a
        from-scratch run).
        """
        shared: dict[int, float] = {}
        limit = len(self.records) if before is None else before
        for key in self._query_keys(features):
            posting = self.postings.get(key)
            if not posting or len(posting) > self.max_postings:
                continue
            weight = 1.0 / math.log2(2 + len(posting))
            for position in posting:
                if position < limit:
                    shared[position] = shared.get(position, 0.0) + weight
        if len(shared) <= self.max_candidates:
            return list(shared)
        return heapq.nlargest(self.max_candidates, shared, key=shared.__getitem__)
