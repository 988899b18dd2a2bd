"""The import contracts catch what they promise to catch: each rule broken on purpose, in a copy of
the package checked with the project's own contracts, is reported by name.

Two runs of the linter (a copy as it is, then a copy with every break at once), so the test stays
fast; each break is asserted in the report, under the rule it breaks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "flask_profile_billing"

LAYERS = "Layers: faces call services, services use the store, everything rests on the domain"
FACES = "No face reaches into the store: faces ask services"
ABOVE_SERVICES = (
    "Above the services nothing touches the database: only services and migrations use the store"
)
DOMAIN = "The domain is pure Python: no Flask, no SQLAlchemy"
CYCLES = "No import cycles inside the package"

STORE = f"{PACKAGE}.store.models"
# Per rule, the imports that break it: (module of the copy, module it is made to import).
BREAKS: dict[str, list[tuple[str, str]]] = {
    ABOVE_SERVICES: [("responses", STORE), ("csrf", STORE)]
    + [(m, "sqlalchemy") for m in ("presenters", "profile_fields", "extension", "state")],
    FACES: [("page.views", "sqlalchemy")],
    DOMAIN: list(
        zip(
            [f"domain.{m}" for m in ("catalog", "limits", "periods", "activity", "subscriptions")],
            ["jinja2", "markupsafe", "marshmallow", "babel", "flask_babel"],
            strict=True,
        )
    ),
    # The version module is a leaf: importing anything of the package puts it above the domain.
    LAYERS: [("_version", f"{PACKAGE}.domain.catalog")],
}
# An import for the type checker only is an import: it closes a cycle like any other.
TYPE_CHECKING_CYCLE = (
    "services/activity_receivers.py",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .activity import ActivityService\n",
    ".activity_receivers -> .activity",
)


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(cwd / "src"),
        # Wide enough that no module path of the report is wrapped.
        "COLUMNS": "400",
    }
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())",
            "--no-cache",
            "--no-logo",
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and the project's contracts, in a folder of their own (no templates: the
    linter reads only Python)."""
    root = tmp_path
    shutil.copytree(
        ROOT / "src" / PACKAGE,
        root / "src" / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "templates", "static", "translations"),
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_package_as_it_is_keeps_every_contract(copy: Path) -> None:
    result = lint_imports(copy)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def append(copy: Path, module: str, line: str) -> None:
    path = copy / "src" / PACKAGE / module
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_each_deliberate_break_is_reported_under_its_rule(copy: Path) -> None:
    for breaks in BREAKS.values():
        for module, imported in breaks:
            append(copy, module.replace(".", "/") + ".py", f"import {imported}")
    cycle_module, cycle_lines, cycle_report = TYPE_CHECKING_CYCLE
    append(copy, cycle_module, cycle_lines)

    result = lint_imports(copy)

    report = result.stdout
    assert result.returncode != 0, report
    expected = {
        contract: [f"{PACKAGE}.{module} -> {imported}" for module, imported in breaks]
        for contract, breaks in BREAKS.items()
    }
    expected[CYCLES] = [cycle_report]
    broken = report[report.index("Broken contracts") :]
    for contract, lines in expected.items():
        assert f"{contract} BROKEN" in " ".join(report.split()), contract
        section = broken[broken.index(contract) :]
        following = [c for c in expected if c != contract]
        end = min((i for c in following if (i := section.find(c, 1)) > 0), default=len(section))
        for line in lines:
            assert line in section[:end], f"{line!r} not reported under {contract!r}"
