"""A package the tests need that is not installed: skipped on a developer's machine, a failure
under CI=true (a silent skip there would leave a feature untested), and asked for in one way only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import required_module

TESTS = Path(__file__).resolve().parent
ABSENT = "flask_profile_billing_tests_absent_module"


def test_an_installed_module_is_imported() -> None:
    assert required_module("json").dumps([1]) == "[1]"


def test_a_missing_module_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT}.*CI=true"):
        required_module(ABSENT)


def test_a_missing_module_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"install the test extra"):
        required_module(ABSENT)


def test_no_test_skips_a_missing_package_silently() -> None:
    # pytest.importorskip skips even under CI=true: required_module is the way to ask.
    callers = [
        str(path.relative_to(TESTS))
        for path in TESTS.rglob("*.py")
        if path != Path(__file__).resolve() and "importorskip(" in path.read_text()
    ]
    assert callers == []
