"""Where the quality is lost: blocking recall and oracle bounds on the benchmark data, for each
noise profile of bench/matching_data.py. The oracles use the ground truth, so they say what any
matcher could reach with the evidence the records carry, not what ours reaches.

Run: .venv/bin/python -m bench.matching_bounds [--quick]
"""

from __future__ import annotations

import argparse
import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

from bench.matching_data import PROFILES, Profile, entity_dataset, person_dataset
from bench.matching_quality import pairwise_scores, write_section
from cases.matching import Matcher, entity_job, person_job
from cases.matching import comparators as cmp
from cases.matching.features import PersonFeatures

__all__ = ["entity_bounds", "main", "person_bounds"]


def _closure(size: int, links: Iterable[tuple[int, int]]) -> list[list[int]]:
    parent = list(range(size))

    def find(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in links:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = defaultdict(list)
    for item in range(size):
        groups[find(item)].append(item)
    return list(groups.values())


def person_bounds(workers: int, profile: Profile) -> dict[str, float]:
    """Blocking recall, and the pairwise F1 of two oracles that link true pairs only, then
    close transitively: (1) pairs sharing evidence beyond the name (date of birth up to a
    swap or a year, ID number up to a typo, phone subscriber); (2) those plus name-only pairs
    whose name (by sound) no other worker of the data set carries."""
    records, truth = person_dataset(seed=12, workers=workers, profile=profile)
    matcher = Matcher(person_job())
    index = matcher.build_index(records)
    features = index.records
    members: dict[str, list[int]] = defaultdict(list)
    for position, item in enumerate(features):
        members[truth[item.id]].append(position)
    true_pairs = [pair for group in members.values() for pair in itertools.combinations(group, 2)]
    candidates = {
        (j, i) for i, item in enumerate(features) for j in index.candidates(item, before=i)
    }
    blocked = sum(1 for pair in true_pairs if pair in candidates)

    def evidence(a: int, b: int) -> bool:
        left, right = features[a], features[b]
        return (
            cmp.compare_dates_of_birth(left.dob, right.dob) in (0, 1, 2)
            or cmp.compare_identifiers(left.id_numbers, right.id_numbers) in (0, 1)
            or cmp.compare_phones(left.phones, right.phones) in (0, 1)
        )

    owners: dict[str, set[str]] = defaultdict(set)
    for item in features:
        owners[item.name.phonetic_key].add(truth[item.id])

    def unique_name(a: int, b: int) -> bool:
        keys = {features[a].name.phonetic_key, features[b].name.phonetic_key}
        return len(set().union(*(owners[k] for k in keys))) == 1

    with_evidence = [pair for pair in true_pairs if evidence(*pair)]
    name_only = [pair for pair in true_pairs if not evidence(*pair) and unique_name(*pair)]
    # Why the other true pairs share only a name: each field missing on either side, or
    # present on both and disagreeing (a pair can count under several causes).
    without = [pair for pair in true_pairs if not evidence(*pair)]

    def share(test: Callable[[PersonFeatures, PersonFeatures], bool]) -> float:
        return sum(test(features[a], features[b]) for a, b in without) / max(len(without), 1)

    causes = {
        "dob_missing": share(lambda x, y: x.dob is None or y.dob is None),
        "dob_differs": share(lambda x, y: x.dob is not None and y.dob is not None),
        "id_missing": share(lambda x, y: not x.id_numbers or not y.id_numbers),
        "id_differs": share(lambda x, y: bool(x.id_numbers and y.id_numbers)),
        "phone_missing": share(lambda x, y: not x.phones or not y.phones),
        "phone_differs": share(lambda x, y: bool(x.phones and y.phones)),
        "name_shared": 1 - len(name_only) / max(len(without), 1),
    }
    ids = [item.id for item in features]

    def scores(links: Sequence[tuple[int, int]]) -> float:
        clusters = [[ids[i] for i in group] for group in _closure(len(features), links)]
        return pairwise_scores(clusters, truth)[2]

    return {
        "records": len(features),
        "true_pairs": len(true_pairs),
        "blocking_recall": blocked / len(true_pairs),
        "evidence_share": len(with_evidence) / len(true_pairs),
        "oracle_evidence_f1": scores(with_evidence),
        "oracle_unique_name_f1": scores(with_evidence + name_only),
        **{f"cause_{name}": value for name, value in causes.items()},
    }


# Name levels the rule oracle links on: exact, typo and the same distinctive words (whatever
# the trade words).
_ORACLE_NAME_LEVEL = cmp.ORG_NAME_LEVELS.index("other_trade")


def entity_bounds(registry_size: int, mentions: int, profile: Profile) -> dict[str, float]:
    """Blocking recall (the mention's entity among its candidates), and a rule oracle: link to
    the one candidate agreeing on licence or phone, else to the one candidate with the best
    name level when that level is exact, reordered, typo or the same distinctive words
    (candidates contradicted by an identifier or the country are dropped). Also the share of
    registry entries whose distinctive words another entry of their country shares: siblings
    that a name without trade words cannot tell apart."""
    registry, mention_records, truth = entity_dataset(
        seed=22, registry_size=registry_size, mentions=mentions, profile=profile
    )
    matcher = Matcher(entity_job())
    index = matcher.build_index(registry)
    position = {item.id: i for i, item in enumerate(index.records)}

    def rarity(token: str) -> float:
        return index.frequencies.rarity("org_token", token)

    blocked = linked = correct = 0
    for mention in mention_records:
        features = matcher.job.prepare(mention)
        candidates = index.candidates(features)
        target = truth[mention.id]
        if target is not None and position[target] in candidates:
            blocked += 1
        ranked = []
        for j in candidates:
            entity = index.records[j]
            licence = cmp.compare_identifiers(features.licences, entity.licences)
            phone = cmp.compare_phones(features.phones, entity.phones)
            agrees = licence in (0, 1) or phone in (0, 1)
            country = cmp.compare_equal(features.country, entity.country)
            if not agrees and (licence == 2 or phone == 2 or country == 1):
                continue
            level = cmp.compare_org_names(features.names, entity.names, rarity)
            ranked.append(((0 if agrees else 1, level if level >= 0 else 9), entity.id))
        if not ranked:
            continue
        top = min(key for key, _ in ranked)
        tied = [entity_id for key, entity_id in ranked if key == top]
        if len(tied) == 1 and (top[0] == 0 or top[1] <= _ORACLE_NAME_LEVEL):
            linked += 1
            correct += tied[0] == target
    in_registry = sum(1 for t in truth.values() if t is not None)
    # Registry siblings: entries of one country with the same distinctive words (the same
    # core), told apart by trade words and legal form alone.
    keys = [(e.country, e.names[0].core) for e in index.records if e.names and e.names[0].core]
    cores = Counter(keys)
    siblings = sum(1 for key in keys if cores[key] > 1)
    return {
        "mentions": len(mention_records),
        "sibling_share": siblings / len(index.records),
        "blocking_recall": blocked / in_registry,
        "oracle_precision": correct / linked if linked else 1.0,
        "oracle_recall": correct / in_registry,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick benchmark's sizes")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    scale = 1 if args.quick else 4
    rows = []
    cause_rows = []
    for profile in PROFILES:
        persons = person_bounds(2500 * scale, profile)
        print(profile, "persons", persons, flush=True)
        rows.append(
            f"| person dedup | {profile} | {persons['records']:.0f} records, "
            f"{persons['true_pairs']:.0f} true pairs | {persons['blocking_recall']:.4f} | "
            f"{persons['evidence_share']:.1%} of true pairs share evidence beyond the name; "
            f"F1 {persons['oracle_evidence_f1']:.4f} (evidence), "
            f"{persons['oracle_unique_name_f1']:.4f} (+ names no other worker has) |"
        )
        cause_rows.append(
            f"| {profile} | {1 - persons['evidence_share']:.1%} | "
            f"{persons['cause_dob_missing']:.0%} / {persons['cause_dob_differs']:.0%} | "
            f"{persons['cause_id_missing']:.0%} / {persons['cause_id_differs']:.0%} | "
            f"{persons['cause_phone_missing']:.0%} / {persons['cause_phone_differs']:.0%} | "
            f"{persons['cause_name_shared']:.0%} |"
        )
        entities = entity_bounds(1500 * scale, 2500 * scale, profile)
        print(profile, "entities", entities, flush=True)
        rows.append(
            f"| entity resolution | {profile} | {entities['mentions']:.0f} mentions | "
            f"{entities['blocking_recall']:.4f} | rule oracle P {entities['oracle_precision']:.4f}"
            f" at R {entities['oracle_recall']:.4f}; {entities['sibling_share']:.1%} of the "
            "registry share their distinctive words with another entry |"
        )
    command = "python -m bench.matching_bounds" + (" --quick" if args.quick else "")
    body = f"""## Where the loss is: blocking recall and oracle bounds

Command: `{command}` (test seeds of the quality benchmark, same sizes). Blocking recall: share
of true pairs (persons) or of in-registry mentions (entities) that blocking makes candidates.
Oracles use the ground truth: see the docstrings of `bench/matching_bounds.py`.

| job | noise profile | data | blocking recall | upper bound |
|---|---|---|---|---|
{chr(10).join(rows)}

True person pairs that share nothing but a name, and why: for each field, the share of those
pairs where it is missing on either report / present on both and disagreeing (a changed SIM,
a renewed passport, a wrong date); last, the share whose name another worker also carries.

| noise profile | true pairs with only a name | date of birth | ID number | phone | name shared |
|---|---|---|---|---|---|
{chr(10).join(cause_rows)}
"""
    print(body)
    if not args.no_write:
        write_section("bounds", body)


if __name__ == "__main__":
    main()
