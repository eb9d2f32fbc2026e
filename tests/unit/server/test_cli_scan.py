"""``fairwatch scan-files``: SaTScan-format files in, the scan's clusters out, bad lines named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.cli import main

NYCFEVER = Path(__file__).parents[2] / "data" / "nycfever"
FILES = ["--cases", str(NYCFEVER / "cases.tsv"), "--coordinates", str(NYCFEVER / "locations.tsv")]
PERIOD = ["--start", "2001/11/1", "--end", "2001/11/24"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["scan-files", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_nycfever_files_give_satscans_clusters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, *FILES, *PERIOD, "--max-radius-km", "3", "--replicas", "99", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["total_cases"] == 194
    top = result["clusters"][:3]
    # SaTScan 10.3.2 on the same files and settings (tests/data/nycfever/SOURCE.md).
    assert [c["centre"] for c in top] == ["11418", "11372", "10472"]
    assert [round(c["llr"], 6) for c in top] == [3.845418, 3.164201, 2.137259]
    assert [(c["start_date"], c["end_date"]) for c in top] == [
        ("2001-11-22", "2001-11-24"),
        ("2001-11-24", "2001-11-24"),
        ("2001-11-23", "2001-11-24"),
    ]
    assert top[0]["locations"][:2] == ["11418", "11415"]


def test_comma_separated_files_read_like_whitespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("cases.tsv", "locations.tsv"):
        text = (NYCFEVER / name).read_text()
        (tmp_path / name).write_text(text.replace("\t", ","))
    commas = [
        "--cases",
        str(tmp_path / "cases.tsv"),
        "--coordinates",
        str(tmp_path / "locations.tsv"),
    ]
    plain = _run(capsys, *FILES, *PERIOD, "--replicas", "0", "--json")
    comma = _run(capsys, *commas, *PERIOD, "--replicas", "0", "--json")
    assert plain[0] == comma[0] == 0
    assert json.loads(plain[1]) == json.loads(comma[1])


@pytest.mark.parametrize(
    ("case_line", "message"),
    [
        ("99999 1 2001/11/3", "cases.tsv:2: location '99999' is not in the coordinates file"),
        ("11418 1 2001/12/3", "cases.tsv:2: 2001-12-03 is outside the study period"),
        ("11418 two 2001/11/3", "cases.tsv:2: the count 'two' is not a whole number"),
        ("11418 1 2001/13/40", "cases.tsv:2: '2001/13/40' is not a date"),
        ("11418 1", "cases.tsv:2: expected 3 fields, found 2"),
    ],
)
def test_a_bad_case_line_is_named_and_nothing_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, case_line: str, message: str
) -> None:
    (tmp_path / "cases.tsv").write_text(f"11418 2 2001/11/2\n{case_line}\n")
    argv = ["--cases", str(tmp_path / "cases.tsv"), "--coordinates", FILES[3], *PERIOD]
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err


def test_a_repeated_or_impossible_location_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for text, message in (
        ("a 1.0 2.0\na 1.5 2.5\n", "locations.tsv:2: location 'a' appears twice"),
        ("a 95.0 2.0\n", "locations.tsv:1: (95.0, 2.0) is not a latitude/longitude"),
        ("# nothing here\n", "no locations"),
    ):
        (tmp_path / "locations.tsv").write_text(text)
        argv = ["--cases", FILES[1], "--coordinates", str(tmp_path / "locations.tsv"), *PERIOD]
        code, _, err = _run(capsys, *argv)
        assert code == 2
        assert message in err
