"""Evaluating the person matcher on someone else's CSV file (bench/matching_csv.py), on the
synthetic files of tests/data/persons (see SOURCE.md there)."""

import random
from datetime import date
from pathlib import Path

import pytest

from bench.matching_csv import evaluate_persons_csv, parse_date_of_birth, read_persons_csv
from bench.matching_quality import main

DATA = Path(__file__).resolve().parents[2] / "data" / "persons"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1990-03-07", date(1990, 3, 7)),
        ("19900307", date(1990, 3, 7)),
        ("07/03/1990", date(1990, 3, 7)),
        ("7.3.1990", date(1990, 3, 7)),
        ("1990", date(1990, 1, 1)),  # a year alone: the placeholder birthday
        ("30/02/1990", None),  # impossible: missing, not a guess
        ("  ", None),
        ("March 1990", None),
    ],
)
def test_dates_of_birth_in_the_accepted_formats(text: str, expected: date | None) -> None:
    assert parse_date_of_birth(text) == expected


def test_febrl_style_columns_and_truth_pattern_are_read() -> None:
    records, truth = read_persons_csv(
        DATA / "febrl_style.csv", truth_column="rec_id", truth_regex=r"rec-(\d+)", region="np"
    )
    by_id = {r.id: r for r in records}
    assert [r.id for r in records][:2] == ["rec-1-org", "rec-1-dup-0"]
    first = by_id["rec-1-org"]
    assert first.name == "ram bahadur gurung"  # given name and surname joined
    assert first.dob == date(1990, 1, 5)
    assert first.id_numbers == ("4321765",)
    assert first.phones == ("02 9876 5432",)
    assert first.home_district == "kaski"
    assert first.country == "NP"
    assert by_id["rec-1-dup-0"].phones == ()  # an empty cell is a missing value
    assert by_id["rec-2-org"].dob == date(1985, 1, 1)
    assert by_id["rec-4-org"].dob is None
    assert truth["rec-1-org"] == truth["rec-1-dup-0"] == "1"
    assert truth["rec-3-org"] != truth["rec-4-org"]


def test_semicolons_separate_several_values_and_a_missing_truth_is_a_person_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(
        "Name,Passport,National_ID,Phone,person_id\n"
        "Ram Gurung,PA1234567,27-01-72-12345,+977 9841234567; 9801234567,w1\n"
        "Ram Gurung,,,,\n",
        encoding="utf-8",
    )
    records, truth = read_persons_csv(path)
    assert records[0].id_numbers == ("PA1234567", "27-01-72-12345")
    assert records[0].phones == ("+977 9841234567", "9801234567")
    assert truth == {"row-1": "w1", "row-2": "single:row-2"}


def test_a_file_without_names_or_truth_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("dob,cluster_id\n1990-01-01,a\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no name column"):
        read_persons_csv(path)
    path.write_text("name,dob\nRam,1990-01-01\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no truth column"):
        read_persons_csv(path)


@pytest.mark.parametrize("fit", ["em", "labels"])
def test_the_matcher_finds_the_people_of_the_sample(fit: str) -> None:
    records, truth = read_persons_csv(DATA / "sample.csv")
    assert len(records) == 233
    result = evaluate_persons_csv(records, truth, fit=fit)
    assert result.true_pairs > 40
    assert result.precision >= 0.9
    assert result.recall >= 0.8
    # The same records with the truth labels shuffled among them (same cluster sizes, wrong
    # members) must score badly: the scores come from the truth, not from the matcher.
    labels = [truth[r.id] for r in records]
    random.Random(0).shuffle(labels)
    shuffled = {r.id: label for r, label in zip(records, labels, strict=True)}
    assert evaluate_persons_csv(records, shuffled, fit="em").precision < 0.2


def test_command_line_prints_pairwise_scores(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--persons-csv", str(DATA / "sample.csv"), "--truth-column", "cluster_id"])
    out = capsys.readouterr().out
    assert "233 records" in out
    assert "pairwise precision" in out
    assert "F1" in out
