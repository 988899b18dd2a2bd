"""The floor job tests the floors pyproject.toml declares: every direct dependency pinned in
.ci/floor-constraints.txt is pinned at exactly its declared lowest version, and the main ones
are there, so a floor cannot move without the job testing the new one."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def declared_floors() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    floors = {}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if lower:
            floors[canonicalize_name(requirement.name)] = Version(lower[0])
    return floors


def pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "floor-constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_the_floor_job_pins_each_declared_floor_exactly() -> None:
    floors, pins = declared_floors(), pinned()

    for name in ("flask", "sqlalchemy", "alembic", "marshmallow", "flask-sqlalchemy", "apispec"):
        assert name in pins, name
    for name, version in pins.items():
        if name in floors:
            assert version == floors[name], f"{name}: floor {floors[name]}, floor job {version}"


def test_the_floor_job_runs_marshmallow_3() -> None:
    # The main environment has the latest marshmallow (4): the floor job covers the other major.
    assert pinned()["marshmallow"].major == 3
