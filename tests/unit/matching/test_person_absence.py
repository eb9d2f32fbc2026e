"""Whether a report gives a passport number or a phone at all is evidence for persons: a worker
without one gives none in any report. The person job compares that absence at levels of its
own, and the data decide what they weigh."""

import random

from cases.matching import Matcher, PersonRecord, person_job

_GIVEN = ["Ram", "Hari", "Sita", "Gita", "Bishnu", "Krishna", "Maya", "Kamal"]
_SURNAMES = ["Gurung", "Tamang", "Rai", "Thapa", "Magar"]


def _levels(a: PersonRecord, b: PersonRecord) -> dict[str, str]:
    explanation = Matcher(person_job()).explain(a, b)
    return {f.field: f.level for f in explanation.fields}


def test_one_and_both_missing_documents_are_levels_of_their_own() -> None:
    bare = PersonRecord(id="a", name="Ram Gurung")
    also_bare = PersonRecord(id="b", name="Ram Gurung")
    documented = PersonRecord(
        id="c", name="Ram Gurung", id_numbers=("PA1234567",), phones=("+9779801234567",)
    )
    assert _levels(bare, also_bare)["id_number"] == "both_missing"
    assert _levels(bare, also_bare)["phone"] == "both_missing"
    assert _levels(bare, documented)["id_number"] == "one_missing"
    assert _levels(documented, bare)["phone"] == "one_missing"
    # A missing date of birth or district stays "no evidence".
    assert _levels(bare, documented)["dob"] == "missing"
    assert _levels(documented, documented)["phone"] == "exact"


def _workers(seed: int) -> tuple[list[PersonRecord], dict[str, str]]:
    """Workers sharing a few names, each with two reports; a worker has a phone to give or
    not (then in neither report), and one who has it leaves it out of a report now and then."""
    rng = random.Random(seed)
    records, truth = [], {}
    for w in range(400):
        name = f"{rng.choice(_GIVEN)} {rng.choice(_SURNAMES)}"
        phone = f"+97798{rng.randrange(10**8):08d}" if rng.random() < 0.5 else None
        for r in range(2):
            phones = (phone,) if phone is not None and rng.random() < 0.7 else ()
            record = PersonRecord(id=f"w{w}-{r}", name=name, phones=phones)
            records.append(record)
            truth[record.id] = f"w{w}"
    return records, truth


def test_the_weights_of_absence_are_learnt_from_labels() -> None:
    records, truth = _workers(seed=7)
    matcher = Matcher(person_job()).fit(
        records, same=lambda a, b: truth[a] == truth[b], seed=1, random_pairs=2000
    )
    phone = next(f for f in matcher.model.fields if f.name == "phone")
    one, both = phone.levels.index("one_missing"), phone.levels.index("both_missing")
    # Two reports without a phone are more often one worker than two namesakes' reports are;
    # one report with a phone and one without are less often.
    assert phone.weight(both) > 0.3
    assert phone.weight(one) < -0.3
    bare = PersonRecord(id="x", name="Kamal Rai")
    silent = matcher.explain(bare, PersonRecord(id="y", name="Kamal Rai")).total_weight
    lopsided = matcher.explain(
        bare, PersonRecord(id="z", name="Kamal Rai", phones=("+9779801234567",))
    ).total_weight
    assert silent > lopsided + 0.6
