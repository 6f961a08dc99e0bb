"""The `lowest` CI job tests the floors pyproject.toml claims: its constraints must be those floors."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NOT_AT_FLOOR = {"torch"}
"""Pinned to the CPU wheel the other jobs use, not to its floor (see .ci/lowest.txt)."""


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([\w.+]+)", line).groups()
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _runtime_dependencies() -> list[Requirement]:
    """``[project] dependencies`` of pyproject.toml (read by hand: no tomllib on Python 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', block)]


def test_lowest_constraints_pin_every_runtime_dependency_to_its_floor() -> None:
    deps = _runtime_dependencies()
    assert len(deps) >= 10
    pins = _pins()
    assert set(pins) == {canonicalize_name(r.name) for r in deps}
    for req in deps:
        name = canonicalize_name(req.name)
        floors = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(floors) == 1, f"{req}: one >= floor expected"
        assert pins[name] in req.specifier, (req, pins[name])
        if name not in NOT_AT_FLOOR:
            assert pins[name] == floors[0], f"{name}: .ci/lowest.txt pins {pins[name]}, pyproject's floor is {floors[0]}"
