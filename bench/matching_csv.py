"""Evaluate the person matcher on someone else's data: a CSV file of person records with a
column that says which records are the same person.

Run: .venv/bin/python -m bench.matching_quality --persons-csv FILE [--truth-column COLUMN]
     [--truth-regex REGEX] [--fit em|labels] [--region CC] [--link P]

Columns (header names are case-insensitive; the first listed alias present is used):

| field | accepted column names | format |
|---|---|---|
| record id | id, rec_id, record_id | any text (the row number when absent) |
| name | name, full_name; or given_name / first_name, middle_name, surname / last_name / family_name | any script; the parts are joined in that order |
| date of birth | date_of_birth, dob, birth_date | 1990-03-07, 19900307 (FEBRL), 07/03/1990 and 07.03.1990 (day first), or a year alone (1990, read as 1 January, the placeholder the matcher knows) |
| ID numbers | id_number, passport, passport_number, national_id, soc_sec_id; several columns and ";"-separated values allowed | letters and digits, punctuation ignored |
| phones | phone, phone_number, mobile, phones; ";"-separated values allowed | any format; E.164 or national with `country` / `--region` |
| home district | home_district, district, suburb, city, town | any text |
| country | country | ISO 3166 alpha-2, the region of national phone numbers |
| truth | `--truth-column` (default: cluster_id, then entity_id, then person_id) | records with the same value are the same person; `--truth-regex` keeps its first group (FEBRL: `--truth-column rec_id --truth-regex 'rec-(\\d+)'`) |

Empty cells are missing values. Fitting: `em` (the default) estimates the model on all
records without looking at the truth and links at `--link` (default: the auto-link and merge
thresholds the fitted model itself expects to give the best pairwise F1 over these records, as
an organisation's refit chooses them, `cases.matching.linkage.dedup_thresholds_for_f1`); `labels` splits the people in two halves (by a hash of the truth value), fits on
one half with its labels, chooses the auto-link and merge thresholds with the best pairwise
F1 on it (as the benchmark does), and evaluates on the other half. Both print pairwise precision, recall and F1 (the truth is used
for scoring only, and, with `labels`, for fitting on the training half).
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from bench.matching_quality import choose_dedup_thresholds, pairwise_scores
from cases.matching import Matcher, PersonRecord, person_job
from cases.matching.linkage import dedup_thresholds_for_f1

__all__ = [
    "CsvEvaluation",
    "evaluate_persons_csv",
    "parse_date_of_birth",
    "read_persons_csv",
]

_ID = ("id", "rec_id", "record_id")
_NAME = ("name", "full_name")
_NAME_PARTS = (
    ("given_name", "first_name"),
    ("middle_name",),
    ("surname", "last_name", "family_name"),
)
_DOB = ("date_of_birth", "dob", "birth_date")
_ID_NUMBERS = ("id_number", "passport", "passport_number", "national_id", "soc_sec_id")
_PHONES = ("phone", "phone_number", "mobile", "phones")
_DISTRICT = ("home_district", "district", "suburb", "city", "town")
_TRUTH = ("cluster_id", "entity_id", "person_id")

_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DAY_FIRST = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})$")
_YEAR = re.compile(r"^(\d{4})$")


def parse_date_of_birth(text: str) -> date | None:
    """A date of birth in one of the accepted formats; None when empty or impossible (an
    impossible date is a missing value, as a clerk's "30/02/1990" says nothing reliable)."""
    value = text.strip()
    if not value:
        return None
    for pattern, order in ((_ISO, "ymd"), (_COMPACT, "ymd"), (_DAY_FIRST, "dmy")):
        match = pattern.match(value)
        if match:
            first, second, third = (int(part) for part in match.groups())
            year, month, day = (first, second, third) if order == "ymd" else (third, second, first)
            try:
                return date(year, month, day)
            except ValueError:
                return None
    match = _YEAR.match(value)
    if match:
        return date(int(match.group(1)), 1, 1)
    return None


def _columns(header: Sequence[str]) -> dict[str, str]:
    """Lower-case column name -> the name as written in the file."""
    return {name.strip().lower(): name for name in header}


def _first(columns: Mapping[str, str], aliases: Sequence[str]) -> str | None:
    return next((columns[a] for a in aliases if a in columns), None)


def _values(row: Mapping[str, str], names: Sequence[str]) -> tuple[str, ...]:
    found: list[str] = []
    for name in names:
        found.extend(v.strip() for v in (row.get(name) or "").split(";") if v.strip())
    return tuple(found)


def read_persons_csv(
    path: Path,
    truth_column: str | None = None,
    truth_regex: str | None = None,
    region: str | None = None,
) -> tuple[list[PersonRecord], dict[str, str]]:
    """Person records and the truth (record id -> person) of a CSV file (see the module
    docstring for the columns). Raises ValueError for a file without names or truth."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        columns = _columns(reader.fieldnames or [])
        id_column = _first(columns, _ID)
        name_column = _first(columns, _NAME)
        parts = [_first(columns, aliases) for aliases in _NAME_PARTS]
        if name_column is None and not any(parts):
            raise ValueError(f"{path}: no name column ({', '.join(_NAME)}, given_name, ...)")
        truth_name = columns.get(truth_column.lower()) if truth_column else _first(columns, _TRUTH)
        if truth_name is None:
            raise ValueError(f"{path}: no truth column (use --truth-column)")
        pattern = re.compile(truth_regex) if truth_regex else None
        dob_column = _first(columns, _DOB)
        district_column = _first(columns, _DISTRICT)
        country_column = columns.get("country")
        id_columns = [columns[a] for a in _ID_NUMBERS if a in columns]
        phone_columns = [columns[a] for a in _PHONES if a in columns]
        records: list[PersonRecord] = []
        truth: dict[str, str] = {}
        for number, row in enumerate(reader, start=1):
            record_id = (row.get(id_column) or "").strip() if id_column else ""
            record_id = record_id or f"row-{number}"
            if name_column is not None:
                name = (row.get(name_column) or "").strip()
            else:
                name = " ".join((row.get(p) or "").strip() for p in parts if p).strip()
            label = (row.get(truth_name) or "").strip()
            if pattern is not None:
                match = pattern.search(label)
                label = match.group(1) if match and match.groups() else label
            country = (row.get(country_column) or "").strip() if country_column else ""
            records.append(
                PersonRecord(
                    id=record_id,
                    name=name,
                    dob=parse_date_of_birth(row.get(dob_column) or "") if dob_column else None,
                    id_numbers=_values(row, id_columns),
                    phones=_values(row, phone_columns),
                    home_district=(row.get(district_column) or "").strip() or None
                    if district_column
                    else None,
                    country=(country or region or "").upper() or None,
                )
            )
            # A record without a truth value is a person of its own.
            truth[record_id] = label or f"single:{record_id}"
    return records, truth


@dataclass(frozen=True)
class CsvEvaluation:
    """Pairwise scores of the person matcher on a CSV file."""

    fit: str
    records: int  # records evaluated (the test half with `labels`)
    true_pairs: int
    link_threshold: float
    precision: float
    recall: float
    f1: float


def _half(label: str) -> int:
    # A stable split by person, so that no person has records on both sides.
    return hashlib.sha256(label.encode()).digest()[0] % 2


def evaluate_persons_csv(
    records: Sequence[PersonRecord],
    truth: Mapping[str, str],
    fit: str = "em",
    link: float | None = None,
) -> CsvEvaluation:
    """Fit the person matcher (EM on all records, or labels on one half of the people) and
    score its clusters against the truth. Without `link`, EM's thresholds are the ones the
    fitted model expects to give the best F1 (`dedup_thresholds_for_f1`, as an organisation's
    refit chooses them), labels' the best F1 on the labelled half."""
    matcher = Matcher(person_job())
    if fit == "labels":
        train = [r for r in records if _half(truth[r.id]) == 0]
        test = [r for r in records if _half(truth[r.id]) == 1]
        fitted = matcher.fit(train, same=lambda a, b: truth[a] == truth[b], seed=1)
        if link is None:
            train_truth = {r.id: truth[r.id] for r in train}
            fitted = choose_dedup_thresholds(fitted, train, train_truth)
    elif fit == "em":
        test = list(records)
        fitted = matcher.fit(test, seed=1)
        if link is None:  # as an org's refit does: the thresholds of the best expected F1
            fitted, _ = dedup_thresholds_for_f1(fitted, fitted.score_batch(test))
    else:
        raise ValueError(f"unknown fit {fit!r}: em or labels")
    if link is not None:
        fitted = fitted.with_thresholds(link, min(fitted.model.thresholds.review, link))
    test_truth = {r.id: truth[r.id] for r in test}
    precision, recall, f1 = pairwise_scores(fitted.cluster(test), test_truth)
    sizes: dict[str, int] = {}
    for label in test_truth.values():
        sizes[label] = sizes.get(label, 0) + 1
    return CsvEvaluation(
        fit=fit,
        records=len(test),
        true_pairs=sum(n * (n - 1) // 2 for n in sizes.values()),
        link_threshold=fitted.model.thresholds.link,
        precision=precision,
        recall=recall,
        f1=f1,
    )
