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

# (module of the copy, line appended to it, contract it breaks, words of the report naming it)
BREAKS: list[tuple[str, str, str, str]] = [
    ("responses.py", "from .store.models import Base", ABOVE_SERVICES, "responses -> "),
    ("presenters.py", "import sqlalchemy", ABOVE_SERVICES, "presenters -> sqlalchemy"),
    ("profile_fields.py", "import sqlalchemy", ABOVE_SERVICES, "profile_fields -> sqlalchemy"),
    ("csrf.py", "from .store import models", ABOVE_SERVICES, "csrf -> "),
    ("extension.py", "import sqlalchemy", ABOVE_SERVICES, "extension -> sqlalchemy"),
    ("state.py", "import sqlalchemy", ABOVE_SERVICES, "state -> sqlalchemy"),
    ("page/views.py", "import sqlalchemy", FACES, "page.views -> sqlalchemy"),
    ("domain/catalog.py", "import jinja2", DOMAIN, "catalog -> jinja2"),
    ("domain/limits.py", "import markupsafe", DOMAIN, "limits -> markupsafe"),
    ("domain/periods.py", "import marshmallow", DOMAIN, "periods -> marshmallow"),
    ("domain/activity.py", "import babel", DOMAIN, "activity -> babel"),
    ("domain/subscriptions.py", "import flask_babel", DOMAIN, "subscriptions -> flask_babel"),
    # The version module is a leaf: importing anything of the package puts it above the domain.
    ("_version.py", "from .domain import catalog", LAYERS, "_version -> "),
    # An import for the type checker only is an import: it closes a cycle like any other.
    (
        "services/activity_receivers.py",
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .activity import ActivityService",
        CYCLES,
        ".activity_receivers -> .activity",
    ),
]


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


def test_each_deliberate_break_is_reported_under_its_rule(copy: Path) -> None:
    for module, line, _, _ in BREAKS:
        path = copy / "src" / PACKAGE / module
        path.write_text(path.read_text() + "\n" + line + "\n")

    result = lint_imports(copy)

    report = result.stdout
    assert result.returncode != 0, report
    for contract in {contract for _, _, contract, _ in BREAKS}:
        assert f"{contract} BROKEN" in " ".join(report.split()), contract
    broken = report[report.index("Broken contracts") :]
    for module, _, contract, names in BREAKS:
        section = broken[broken.index(contract) :]
        following = [c for c in (LAYERS, FACES, ABOVE_SERVICES, DOMAIN, CYCLES) if c != contract]
        end = min((i for c in following if (i := section.find(c, 1)) > 0), default=len(section))
        assert names in section[:end], f"{module}: {names!r} not reported under {contract!r}"
