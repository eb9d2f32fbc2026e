"""Matching decides the same in every process: Python salts the hash of strings per process
(PYTHONHASHSEED), so the order of a set of strings changes from one run to the next, and a
result that follows it would change when the worker re-runs matching after a restart or when
the benchmark is run again. The same workload runs in processes with different hash seeds and
must give the same models, scores and decisions, to the last bit."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from bench.matching_data import entity_dataset, person_dataset
from cases.matching import Matcher, entity_job, person_job
from cases.matching.comparators import weighted_token_similarity
from cases.matching.linkage import dedup_thresholds_for_f1, with_link_threshold_for_precision

ROOT = Path(__file__).resolve().parents[3]
HASH_SEEDS = ("0", "1", "2")


def _entity_rows() -> list[str]:
    """Entity resolution as an org gets it: an EM fit, the threshold from the model's own
    probabilities, then `match_one` on other mentions (the v2 profile: registry siblings that
    differ by a trade word or a typo)."""
    registry, mentions, _ = entity_dataset(seed=21, registry_size=300, mentions=500, profile="v2")
    fitted = Matcher(entity_job()).fit(mentions, against=registry, seed=1)
    matcher = with_link_threshold_for_precision(fitted, registry, mentions)
    rows = [f"entity model {_model(matcher)}"]
    registry, mentions, _ = entity_dataset(seed=22, registry_size=300, mentions=500, profile="v2")
    index = matcher.build_index(registry)
    for mention in mentions:
        found = matcher.match_one(mention, index, limit=3)
        shown = " ".join(f"{c.id}:{c.decision}:{c.total_weight!r}:{c.probability!r}" for c in found)
        rows.append(f"{mention.id} {shown}")
    return rows


def _person_rows() -> list[str]:
    """Person dedup: an EM fit, thresholds from the model's expected F1, the clusters of a
    batch, and each report's candidates as the worker meets them, one report at a time."""
    records, _ = person_dataset(seed=11, workers=200, profile="v2")
    fitted = Matcher(person_job()).fit(records, seed=1)
    batch = fitted.score_batch(records)
    matcher, _ = dedup_thresholds_for_f1(fitted, batch)
    rows = [f"person model {_model(matcher)}"]
    rows.extend(f"pair {a} {b} {weight!r}" for (a, b), weight in batch.weights.items())
    rows.extend(f"cluster {' '.join(group)}" for group in matcher.group(batch))
    index = matcher.new_index()
    for record in random.Random(5).sample(records, len(records)):
        found = matcher.match_one(record, index, limit=3)
        rows.append(f"{record.id} " + " ".join(f"{c.id}:{c.probability!r}" for c in found))
        index.add(matcher.job.prepare(record))
    return rows


def _model(matcher: Matcher[Any, Any]) -> str:
    return msgspec.json.encode(matcher.model).decode()


def main() -> None:
    """The workload, run in a subprocess: one line per model, score and decision."""
    print("\n".join([*_entity_rows(), *_person_rows()]))


def _run_with_hash_seeds() -> dict[str, list[str]]:
    code = "from tests.unit.matching.test_hash_order import main; main()"
    processes = {}
    for seed in HASH_SEEDS:
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        processes[seed] = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    outputs = {}
    for seed, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        outputs[seed] = stdout.splitlines()
    return outputs


def test_matching_does_not_depend_on_the_string_hash_seed() -> None:
    outputs = _run_with_hash_seeds()
    first, *others = HASH_SEEDS
    expected = outputs[first]
    assert len(expected) > 1000  # the workload ran: models, mentions, pairs, clusters
    for seed in others:
        rows = outputs[seed]
        differing = [
            (mine, theirs) for mine, theirs in zip(expected, rows, strict=False) if mine != theirs
        ]
        same = len(rows) == len(expected) and not differing
        assert same, (
            f"PYTHONHASHSEED={first} and {seed} differ in {len(differing)} rows "
            f"({len(expected)} and {len(rows)} in all), the first: {differing[:1]}"
        )


def test_equal_tokens_pair_before_a_typo_takes_their_partner() -> None:
    # "seri" is within a typo of "services" (Jaro-Winkler 0.88): were it paired first, the
    # mention's own "services" would be left without a partner, and the score would depend on
    # which token a set of strings happens to yield first.
    similarity = weighted_token_similarity(
        ("cahaya", "seri", "services"), ("murni", "cahaya", "services"), lambda _: 1.0
    )
    filler = 0.25  # "services" is a trade word
    shared = 1.0 + filler
    assert similarity == 2 * shared / ((2.0 + filler) * 2)
