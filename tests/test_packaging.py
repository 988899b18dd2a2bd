"""The built wheel: the package's data files are inside, the project's tests and demo are not."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "flask_profile_billing"
SOURCE = PROJECT_ROOT / "src" / PACKAGE
DIST_INFO = f"{PACKAGE}-0.1.0.dist-info"

DATA_FILES = [
    f"{PACKAGE}/py.typed",
    f"{PACKAGE}/migrations/env.py",
    f"{PACKAGE}/migrations/script.py.mako",
    f"{PACKAGE}/templates/profile_billing/error.html",
    f"{PACKAGE}/templates/profile_billing/base.html",
    f"{PACKAGE}/templates/profile_billing/profile.html",
    f"{PACKAGE}/templates/profile_billing/profile/_dialog_buy.html",
    f"{PACKAGE}/templates/profile_billing/email/quota_low.txt",
    f"{PACKAGE}/templates/profile_billing/email/_base.html",
    f"{PACKAGE}/page/static/profile.css",
    f"{PACKAGE}/page/static/profile.js",
    f"{PACKAGE}/translations/ru/LC_MESSAGES/flask_profile_billing.mo",
]


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once for this module without build isolation (hatchling)."""
    out = tmp_path_factory.mktemp("wheel")
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--quiet",
        "-w",
        str(out),
        str(PROJECT_ROOT),
    ]
    build = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def wheel(wheel_path: Path) -> Iterator[zipfile.ZipFile]:
    with zipfile.ZipFile(wheel_path) as archive:
        yield archive


@pytest.fixture(scope="module")
def names(wheel: zipfile.ZipFile) -> list[str]:
    return wheel.namelist()


def test_wheel_is_named_for_the_project(wheel_path: Path) -> None:
    assert wheel_path.name == f"{PACKAGE}-0.1.0-py3-none-any.whl"


@pytest.mark.parametrize("name", DATA_FILES)
def test_wheel_holds_the_data_files(wheel: zipfile.ZipFile, names: list[str], name: str) -> None:
    assert name in names
    assert wheel.read(name) == (SOURCE / name.removeprefix(f"{PACKAGE}/")).read_bytes()


def test_wheel_holds_the_migration_revisions(names: list[str]) -> None:
    versions = [name for name in names if name.startswith(f"{PACKAGE}/migrations/versions/")]
    assert any(Path(name).name.startswith("0001_") for name in versions), versions
    assert all(name.endswith(".py") for name in versions), versions


def test_wheel_holds_every_module_of_the_package(names: list[str]) -> None:
    modules = {
        f"{PACKAGE}/{path.relative_to(SOURCE).as_posix()}"
        for path in SOURCE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert modules <= set(names), sorted(modules - set(names))


def test_wheel_holds_nothing_but_the_package(names: list[str]) -> None:
    outside = [name for name in names if not name.startswith((f"{PACKAGE}/", f"{DIST_INFO}/"))]
    assert outside == []
    assert not [name for name in names if "tests/" in name or "example_app" in name]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    metadata = Parser().parsestr(wheel.read(f"{DIST_INFO}/METADATA").decode())
    assert metadata["Name"] == "flask-profile-billing"
    assert metadata["Version"] == "0.1.0"
    assert metadata["Requires-Python"] == ">=3.11"
    requirements = metadata.get_all("Requires-Dist") or []
    assert "flask>=2.3" in [requirement.lower() for requirement in requirements]
    assert any(requirement.startswith("alembic") for requirement in requirements)
    extras = {"postgresql", "redis", "yaml", "stripe", "yookassa", "mailman", "flask-mail", "mail"}
    assert extras <= set(metadata.get_all("Provides-Extra") or [])


def test_migrations_in_the_wheel_are_usable(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    wheel.extractall(tmp_path)
    scripts = ScriptDirectory(str(tmp_path / PACKAGE / "migrations"))
    assert scripts.get_current_head() == "0009"
    assert [revision.revision for revision in scripts.walk_revisions()] == [
        "0009",
        "0008",
        "0007",
        "0006",
        "0005",
        "0004",
        "0003",
        "0002",
        "0001",
    ]


RENDER_IN_RUSSIAN = """
import sys
from pathlib import Path

import flask_profile_billing
from flask import Flask
from flask_babel import Babel
from flask_login import LoginManager, UserMixin
from flask_sqlalchemy import SQLAlchemy

installed = Path(flask_profile_billing.__file__).resolve()
assert installed.is_relative_to(Path(sys.argv[1]).resolve()), installed  # the wheel's, not src/


class User(UserMixin):
    def __init__(self, user_id):
        self.id = user_id


app = Flask(__name__)
app.config.update(
    SECRET_KEY="test", SQLALCHEMY_DATABASE_URI=f"sqlite:///{sys.argv[1]}/db.sqlite3"
)
db = SQLAlchemy(app)
login = LoginManager(app)
login.user_loader(User)
login.request_loader(lambda request: User("1"))
Babel(app, locale_selector=lambda: "ru")
billing = flask_profile_billing.ProfileBilling(app, db)
with app.app_context():
    billing.upgrade_database()
page = app.test_client().get("/profile/")
assert page.status_code == 200, page.status_code
sys.stdout.write(page.get_data(as_text=True))
"""


def test_the_installed_wheel_renders_the_page_in_russian(wheel_path: Path, tmp_path: Path) -> None:
    """The wheel alone (installed into a folder of its own, ahead of the source tree) carries the
    templates, the static files, the migrations and the compiled Russian catalog."""
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    render = subprocess.run(
        [sys.executable, "-c", RENDER_IN_RUSSIAN, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert render.returncode == 0, render.stderr
    page = render.stdout
    assert '<html lang="ru"' in page
    assert "Профиль и оплата" in page
    assert "Изменить" in page  # the Edit button, in the profile document's wording
