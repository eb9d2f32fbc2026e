"""A worker's index drops a record when its report is amended, withdrawn or redacted: afterwards
the index must answer exactly as one built without that record (same candidates, same
term-frequency counts, so the same scores)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from bench.matching_data import entity_dataset, incident_dataset, person_dataset
from cases.matching import Matcher, entity_job, incident_job, person_job
from cases.matching.model import FrequencyTable


def _datasets() -> dict[str, tuple[Matcher[Any, Any], list[Any]]]:
    persons, _ = person_dataset(seed=5, workers=150, profile="v3")
    incidents, _ = incident_dataset(seed=5, incidents=150)
    registry, _, _ = entity_dataset(seed=5, registry_size=150, mentions=10, profile="v2")
    return {
        "person": (Matcher(person_job()), persons),
        "incident": (Matcher(incident_job()), incidents),
        "entity": (Matcher(entity_job()), registry),
    }


def _same_counts(a: FrequencyTable, b: FrequencyTable) -> None:
    assert {ns: t for ns, t in a.counts.items() if t} == {ns: t for ns, t in b.counts.items() if t}
    for table in ("totals", "sums", "squares"):
        left, right = getattr(a, table), getattr(b, table)
        assert {k: v for k, v in left.items() if v} == {k: v for k, v in right.items() if v}


@pytest.mark.parametrize("job", ["person", "incident", "entity"])
def test_an_index_after_discards_answers_as_one_built_without_them(job: str) -> None:
    matcher, records = _datasets()[job]
    rng = random.Random(7)
    index = matcher.new_index()
    position = {r.id: index.add(matcher.job.prepare(r)) for r in records}
    dropped = set(rng.sample(sorted(position), len(records) // 3))
    for record_id in sorted(dropped):
        index.discard(position[record_id])
        index.discard(position[record_id])  # a second discard of the same record is a no-op
    kept = [r for r in records if r.id not in dropped]
    fresh = matcher.new_index()
    for record in kept:
        fresh.add(matcher.job.prepare(record))

    assert len(index) == len(kept)
    _same_counts(index.frequencies, fresh.frequencies)
    for record in records:
        got = matcher.match_one(record, index, limit=5)
        want = matcher.match_one(record, fresh, limit=5)
        assert not {c.id for c in got} & dropped
        assert [(c.id, c.total_weight, c.decision) for c in got] == [
            (c.id, c.total_weight, c.decision) for c in want
        ]


def test_a_replaced_record_is_found_by_its_new_values_only() -> None:
    """An amendment: the old features are discarded and the new ones filed."""
    persons, _ = person_dataset(seed=6, workers=60, profile="v3")
    matcher = Matcher(person_job())
    index = matcher.new_index()
    position = {r.id: index.add(matcher.job.prepare(r)) for r in persons}
    target, other = persons[0], persons[1]
    index.discard(position[target.id])
    moved = type(target)(id=target.id, name=other.name, dob=other.dob, id_numbers=other.id_numbers)
    index.add(matcher.job.prepare(moved))
    found = {c.id for c in matcher.match_one(other, index, limit=10)}
    assert target.id in found
    probe = type(target)(id="probe", name=target.name, dob=target.dob, id_numbers=target.id_numbers)
    assert target.id not in {
        c.id for c in matcher.match_one(probe, index, limit=10) if c.decision != "no_link"
    }


def test_subtracting_a_value_never_counted_is_refused() -> None:
    table = FrequencyTable()
    table.add_set("token", {"ram"})
    stray = FrequencyTable()
    stray.add_set("token", {"sita"})
    with pytest.raises(ValueError, match="token:sita"):
        table.subtract(stray)
