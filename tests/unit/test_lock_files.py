"""The two lock files stay in step: requirements-runtime.lock (what the image and a host install
get) is requirements.lock (what `make` installs) without the test and lint tools, at the same
versions and hashes, and holds every runtime dependency of what it holds."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FULL_LOCK = ROOT / "requirements.lock"
RUNTIME_LOCK = ROOT / "requirements-runtime.lock"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)")
_HASH = re.compile(r"--hash=(\S+)")


class Pin:
    def __init__(self, version: str) -> None:
        self.version = version
        self.hashes: set[str] = set()

    def __repr__(self) -> str:
        return f"Pin({self.version!r}, {len(self.hashes)} hashes)"


def parse_lock(path: Path) -> dict[str, Pin]:
    """The pins of a `uv pip compile --generate-hashes` file: canonical name -> version and
    hashes (a pin's hashes follow it on continuation lines)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if match := _PIN.match(line):
            name = canonicalize_name(match[1])
            assert name not in pins, f"{path.name}: {name} pinned twice"
            current = pins[name] = Pin(match[2])
        assert current is not None, f"{path.name}: {line!r} before any pin"
        current.hashes.update(_HASH.findall(line))
    return pins


def _project() -> dict[str, object]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project: dict[str, object] = tomllib.load(file)["project"]
    return project


def _runtime_requirements() -> list[Requirement]:
    dependencies = _project()["dependencies"]
    assert isinstance(dependencies, list)
    return [Requirement(r) for r in dependencies]


def _dev_tools() -> set[str]:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    return {canonicalize_name(Requirement(r).name) for r in extras["dev"]}


def test_parse_lock_reads_names_versions_and_hashes() -> None:
    pins = parse_lock(FULL_LOCK)
    assert pins["msgspec"].version and len(pins["msgspec"].hashes) >= 1
    assert all(h.startswith("sha256:") for pin in pins.values() for h in pin.hashes)
    assert all(pin.hashes for pin in pins.values())  # --require-hashes needs one for each


def test_the_runtime_lock_pins_what_requirements_lock_pins() -> None:
    full, runtime = parse_lock(FULL_LOCK), parse_lock(RUNTIME_LOCK)
    assert runtime, "requirements-runtime.lock pins nothing"
    assert sorted(set(runtime) - set(full)) == []
    differ = {
        name: (pin, full[name])
        for name, pin in runtime.items()
        if (pin.version, pin.hashes) != (full[name].version, full[name].hashes)
    }
    assert differ == {}, "run `make lock` (the runtime lock is compiled against requirements.lock)"


def test_the_runtime_lock_holds_no_test_or_lint_tool() -> None:
    runtime = parse_lock(RUNTIME_LOCK)
    dev_tools = _dev_tools()
    assert {"pytest", "mypy", "ruff", "hypothesis", "schemathesis"} <= dev_tools
    assert sorted(dev_tools & set(runtime)) == []


def test_the_runtime_lock_holds_every_runtime_dependency() -> None:
    """pyproject's dependencies and, through the installed distributions' metadata, what each
    of them needs on Python 3.11 without extras: a package missing here would fail at import
    in the image, not in the test suite (which runs with the full lock)."""
    runtime = parse_lock(RUNTIME_LOCK)
    missing: set[str] = set()
    seen: set[tuple[str, str]] = set()  # (package, extra), "" for the package itself
    todo = [r for r in _runtime_requirements() if r.marker is None or r.marker.evaluate()]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in runtime:
            missing.add(name)
            continue
        assert requirement.specifier.contains(runtime[name].version, prereleases=True), (
            requirement,
            runtime[name],
        )
        for extra in {"", *requirement.extras} - {e for n, e in seen if n == name}:
            seen.add((name, extra))
            for text in importlib.metadata.requires(name) or []:
                needed = Requirement(text)
                if needed.marker is None or needed.marker.evaluate({"extra": extra}):
                    todo.append(needed)
    assert sorted(missing) == []
    needed_names = {name for name, _ in seen}
    assert needed_names == set(runtime), "the runtime lock pins packages nothing at run time needs"


def test_the_image_installs_the_runtime_lock_only() -> None:
    lines = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8").splitlines()
    instructions = [line for line in lines if not line.lstrip().startswith("#")]
    assert any("requirements-runtime.lock" in line for line in instructions)
    assert [line for line in instructions if "requirements.lock" in line] == []
