"""Two established names a typo apart ("Rajesh" / "Ramesh") are two people's names, not a name
and its misspelling: the person matcher learns which spellings are names from its index."""

import itertools

from cases.matching import Matcher, PersonRecord, person_job
from cases.matching import comparators as cmp
from cases.matching.normalise import normalise_person_name
from cases.matching.phonetic import phonetic_code


def _level(a: str, b: str, apart: cmp.NamesApart | None) -> str:
    left, right = normalise_person_name(a), normalise_person_name(b)
    codes = {t: phonetic_code(t) for t in (*left.tokens, *right.tokens)}
    return cmp.PERSON_NAME_LEVELS[cmp.compare_person_names(left, right, codes, apart)]


def test_a_typo_between_two_established_names_makes_them_relatives() -> None:
    names = {"rajesh", "ramesh", "santos", "santiago"}

    def established(x: str, y: str) -> bool:
        return x in names and y in names

    assert _level("Rajesh Kumar", "Ramesh Kumar", None) == "close"  # without counts
    assert _level("Rajesh Kumar", "Ramesh Kumar", established) == "relative"
    assert _level("Juan Santos", "Juan Santiago", established) == "relative"
    # A misspelling of an established name is still the name.
    assert _level("Rajesh Kumar", "Rajesj Kumar", established) == "close"
    # Sound-alike spellings are the same name whatever their counts.
    assert _level("Mohammad Khan", "Muhammed Khan", lambda x, y: True) == "phonetic"


def _population() -> list[PersonRecord]:
    given = ["Rajesh", "Ramesh", "Sunil", "Anil", "Bishnu", "Krishna", "Gita", "Sita"]
    surnames = ["Kumar", "Sharma", "Gurung", "Tamang", "Rai", "Thapa", "Shrestha"]
    records = [
        PersonRecord(id=f"p{k}-{n}", name=f"{g} {s}")
        for k, (g, s) in enumerate(itertools.product(given, surnames))
        for n in range(5)
    ]
    records.append(PersonRecord(id="typo", name="Rajesj Thapa"))
    return records


def test_the_matcher_tells_names_from_misspellings_by_their_counts() -> None:
    matcher = Matcher(person_job())
    index = matcher.build_index(_population())

    def level(a: str, b: str) -> str:
        explanation = matcher.explain(
            PersonRecord(id="a", name=a), PersonRecord(id="b", name=b), index
        )
        return next(f.level for f in explanation.fields if f.field == "name")

    assert level("Rajesh Kumar", "Ramesh Kumar") == "relative"
    assert level("Rajesh Thapa", "Rajesj Thapa") == "close"  # one record: a misspelling
    assert level("Sunil Rai", "Anil Rai") == "relative"
    # Without an index nothing is known about the spellings: a typo, as before.
    loose = matcher.explain(
        PersonRecord(id="a", name="Rajesh Kumar"), PersonRecord(id="b", name="Ramesh Kumar")
    )
    assert next(f.level for f in loose.fields if f.field == "name") == "close"


def test_an_exact_short_name_counts_the_longer_names_that_contain_it() -> None:
    # "Ram Gurung" is written by two records, but it is also how any of the hundred "Ram
    # Bahadur Gurung" may be written; "Sagar Bhattarai" is written by two records and by no
    # longer name. The same exact agreement is far weaker evidence for the first.
    records = [PersonRecord(id=f"r{i}", name="Ram Bahadur Gurung") for i in range(100)]
    records += [PersonRecord(id=f"w{i}", name=f"Worker{i} Tamang") for i in range(200)]
    records += [PersonRecord(id=f"g{i}", name="Ram Gurung") for i in range(2)]
    records += [PersonRecord(id=f"s{i}", name="Sagar Bhattarai") for i in range(2)]
    matcher = Matcher(person_job())
    index = matcher.build_index(records)

    def name_weight(name: str) -> float:
        explanation = matcher.explain(
            PersonRecord(id="a", name=name), PersonRecord(id="b", name=name), index
        )
        return next(f.contribution for f in explanation.fields if f.field == "name")

    assert name_weight("Sagar Bhattarai") > name_weight("Ram Gurung") + 3


def test_a_typo_does_not_make_a_common_name_rare() -> None:
    # "Ktmar" is a typo of the commonest surname: its sound is rare, the name is not. The
    # agreement is weighed by the commoner of the two spellings, whichever side has the typo.
    records = [PersonRecord(id=f"r{i}", name="Rajesh Kumar") for i in range(100)]
    syllables = ["ba", "de", "gi", "ho", "lu", "ma", "ne", "po", "ri", "su", "ta", "vo"]
    words = ["".join(w).capitalize() for w in itertools.permutations(syllables, 3)]
    records += [
        PersonRecord(id=f"w{i}", name=f"{words[2 * i]} {words[2 * i + 1]}") for i in range(400)
    ]
    matcher = Matcher(person_job())
    index = matcher.build_index(records)
    for left, right in (("Rajesh Ktmar", "Rajesh Kumar"), ("Rajesh Kumar", "Rajesh Ktmar")):
        explanation = matcher.explain(
            PersonRecord(id="a", name=left), PersonRecord(id="b", name=right), index
        )
        name = next(f for f in explanation.fields if f.field == "name")
        assert name.level == "close"
        assert name.tf_adjustment < 0  # commoner than a typical agreement
