"""Quality benchmark of the matching engine on seeded synthetic data (bench/matching_data.py):
each model is fitted (EM, no labels) on a training seed and evaluated on another seed.

Run: .venv/bin/python -m bench.matching_quality [--quick]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from bench.matching_data import Profile, entity_dataset, incident_dataset, person_dataset
from cases.matching import EntityRecord, Matcher, entity_job, incident_job, person_job
from cases.matching.engine import MatchExplanation

__all__ = ["main", "pairwise_scores", "write_section"]

R = TypeVar("R")
F = TypeVar("F")
RESULTS = Path(__file__).parent / "results" / "matching.md"


def _pairs(count: int) -> int:
    return count * (count - 1) // 2


def pairwise_scores(
    clusters: Iterable[Sequence[str]], truth: Mapping[str, str]
) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 of predicted clusters against true cluster labels."""
    predicted = 0
    correct = 0
    for cluster in clusters:
        predicted += _pairs(len(cluster))
        correct += sum(_pairs(n) for n in Counter(truth[r] for r in cluster).values())
    actual = sum(_pairs(n) for n in Counter(truth.values()).values())
    precision = correct / predicted if predicted else 1.0
    recall = correct / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _describe(explanation: MatchExplanation) -> str:
    return ", ".join(f"{f.field}={f.level}({f.contribution:+.1f})" for f in explanation.fields)


def _same(
    truth: Mapping[str, str], supervised: bool, linkage: bool = False
) -> Callable[[str, str], bool] | None:
    """Labels for supervised fitting: same true cluster (or, for linkage, the mention's
    registry id)."""
    if not supervised:
        return None
    if linkage:
        return lambda mention, entity: truth.get(mention) == entity
    return lambda a, b: truth[a] == truth[b]


_LINK_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.99)


def _choose_dedup_threshold(
    matcher: Matcher[R, F], train: Sequence[R], truth: Mapping[str, str]
) -> Matcher[R, F]:
    """The auto-link threshold with the best pairwise F1 on the training seed."""
    best, best_f1 = matcher, -1.0
    for link in _LINK_THRESHOLDS:
        candidate = matcher.with_thresholds(link, min(0.5, link))
        f1 = pairwise_scores(candidate.cluster(train), truth)[2]
        if f1 > best_f1:
            best, best_f1 = candidate, f1
    return best


def _link_scores(
    matcher: Matcher[EntityRecord, F],
    registry: Sequence[EntityRecord],
    mentions: Sequence[EntityRecord],
    truth: Mapping[str, str | None],
) -> tuple[float, float, float, list[tuple[EntityRecord, str]]]:
    index = matcher.build_index(registry)
    linked = correct = review = 0
    wrong: list[tuple[EntityRecord, str]] = []
    for mention in mentions:
        best = matcher.match_one(mention, index, limit=1)
        if best and best[0].decision == "link":
            linked += 1
            if best[0].id == truth[mention.id]:
                correct += 1
            else:
                wrong.append((mention, best[0].id))
        elif best and best[0].decision == "review":
            review += 1
    in_registry = sum(1 for t in truth.values() if t is not None)
    precision = correct / linked if linked else 1.0
    recall = correct / in_registry if in_registry else 1.0
    return precision, recall, review / max(len(mentions), 1), wrong


def evaluate_persons(workers: int, supervised: bool, profile: Profile = "v2") -> dict[str, float]:
    train, train_truth = person_dataset(seed=11, workers=workers, profile=profile)
    test, truth = person_dataset(seed=12, workers=workers, profile=profile)
    matcher = Matcher(person_job()).fit(train, same=_same(train_truth, supervised), seed=1)
    matcher = _choose_dedup_threshold(matcher, train, train_truth)
    started = time.perf_counter()
    clusters = matcher.cluster(test)
    elapsed = time.perf_counter() - started
    precision, recall, f1 = pairwise_scores(clusters, truth)
    return {
        "records": len(test),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "seconds": elapsed,
        "link_threshold": matcher.model.thresholds.link,
    }


def evaluate_incidents(incidents: int, supervised: bool) -> dict[str, float]:
    train, train_truth = incident_dataset(seed=31, incidents=incidents)
    test, truth = incident_dataset(seed=32, incidents=incidents)
    matcher = Matcher(incident_job()).fit(train, same=_same(train_truth, supervised), seed=1)
    matcher = _choose_dedup_threshold(matcher, train, train_truth)
    started = time.perf_counter()
    clusters = matcher.cluster(test)
    elapsed = time.perf_counter() - started
    precision, recall, f1 = pairwise_scores(clusters, truth)
    return {
        "records": len(test),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "seconds": elapsed,
        "link_threshold": matcher.model.thresholds.link,
    }


def evaluate_entities(
    registry_size: int, mentions: int, supervised: bool, verbose: bool, profile: Profile = "v2"
) -> dict[str, float]:
    registry, train_mentions, train_truth = entity_dataset(
        seed=21, registry_size=registry_size, mentions=mentions, profile=profile
    )
    labels = {m: t for m, t in train_truth.items() if t is not None}
    matcher = Matcher(entity_job()).fit(
        train_mentions, against=registry, same=_same(labels, supervised, linkage=True), seed=1
    )
    best, best_recall = matcher, -1.0
    for link in _LINK_THRESHOLDS:  # highest recall at precision >= 0.98 on the training seed
        candidate = matcher.with_thresholds(link, min(0.3, link))
        precision, recall, _, _ = _link_scores(candidate, registry, train_mentions, train_truth)
        if precision >= 0.98 and recall > best_recall:
            best, best_recall = candidate, recall
    matcher = best
    registry, test_mentions, truth = entity_dataset(
        seed=22, registry_size=registry_size, mentions=mentions, profile=profile
    )
    precision, recall, review_share, wrong = _link_scores(matcher, registry, test_mentions, truth)
    if verbose:
        by_id = {e.id: e for e in registry}
        index = matcher.build_index(registry)
        for mention, target in wrong[:10]:
            print("false link:", mention.legal_name, "->", by_id[target].legal_name)
            print("   ", _describe(matcher.explain(mention, by_id[target], index)))
    return {
        "mentions": len(test_mentions),
        "precision": precision,
        "recall": recall,
        "review_share": review_share,
        "link_threshold": matcher.model.thresholds.link,
    }


def write_section(name: str, body: str) -> None:
    """Replace one marked section of bench/results/matching.md, keeping the others."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else "# Matching engine benchmarks\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data sets (about a minute)")
    parser.add_argument("--verbose", action="store_true", help="print false entity links")
    parser.add_argument("--no-write", action="store_true", help="do not update the results file")
    args = parser.parse_args(argv)
    scale = 1 if args.quick else 4
    rows = []
    review_shares = []
    # Profile v2 is the benchmark; v1 (the first noise model) is kept for before/after
    # comparisons. Incidents have one noise model only.
    runs: tuple[tuple[Profile, str, bool], ...] = (
        ("v2", "labels", True),
        ("v2", "EM", False),
        ("v1", "labels", True),
    )
    for profile, method, supervised in runs:
        persons = evaluate_persons(2500 * scale, supervised, profile)
        print(profile, method, "persons", persons, flush=True)
        if profile == "v2":
            incidents = evaluate_incidents(2500 * scale, supervised)
            print(method, "incidents", incidents, flush=True)
            rows.append(
                f"| incident dedup (pairwise) | - | {method} | {incidents['link_threshold']} | "
                f"{incidents['records']:.0f} | "
                f"{incidents['precision']:.4f} | {incidents['recall']:.4f} | "
                f"{incidents['f1']:.4f} | F1 >= 0.95 |"
            )
        entities = evaluate_entities(1500 * scale, 2500 * scale, supervised, args.verbose, profile)
        print(profile, method, "entities", entities, flush=True)
        review_shares.append(f"{profile} {method}: {entities['review_share']:.1%}")
        rows += [
            f"| person dedup (pairwise) | {profile} | {method} | {persons['link_threshold']} | "
            f"{persons['records']:.0f} | "
            f"{persons['precision']:.4f} | {persons['recall']:.4f} | {persons['f1']:.4f} | "
            "F1 >= 0.97 |",
            f"| entity resolution (auto-links) | {profile} | {method} | "
            f"{entities['link_threshold']} | {entities['mentions']:.0f} | "
            f"{entities['precision']:.4f} | {entities['recall']:.4f} | - | "
            "P >= 0.98 at R >= 0.95 |",
        ]
    command = "python -m bench.matching_quality" + (" --quick" if args.quick else "")
    table = "\n".join(rows)
    body = f"""## Quality (synthetic data: fitted on one seed, evaluated on another)

Command: `{command}` on {platform.machine()} / Python {sys.version.split()[0]}.
The auto-link threshold is chosen on the training seed (best pairwise F1 for dedup; highest
recall at precision >= 0.98 for entity resolution). Fitting: "labels" counts m and u on labelled candidate pairs of the training seed and
calibrates the probability on them; "EM" uses no labels at all.
Noise model: see the docstring of `bench/matching_data.py` (typos, transliteration variants,
legal-suffix variants, swapped and missing fields, phone format variants, changed SIMs,
renewed passports, licence typos, time and place jitter). Profile v2 is the benchmark; v1 is
the first noise model, kept so that numbers before and after engine changes compare.

| job | noise profile | fit | link threshold | records | precision | recall | F1 | target |
|---|---|---|---|---|---|---|---|---|
{table}

Entity mentions sent to human review: {", ".join(review_shares)}.
"""
    print(body)
    if not args.no_write:
        write_section("quality", body)


if __name__ == "__main__":
    main()
