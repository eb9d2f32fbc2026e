"""pyproject.toml declares every package of the source tree, so an installed image is complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_declared_packages_match_the_tree() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("server", "sync", "cases", "storage")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert declared == found


def test_sql_and_data_files_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = config["tool"]["setuptools"]["package-data"]
    assert data["storage.migrations"] == ["*.sql"]
    assert data["storage.sql"] == ["*.sql"]
    assert any((ROOT / "storage" / "migrations").glob("*.sql"))
