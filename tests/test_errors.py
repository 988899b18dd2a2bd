"""Every error code the package raises has one HTTP status, from one table, and the API docs list
that table exactly."""

from __future__ import annotations

import re
from pathlib import Path

import flask_profile_billing
from flask_profile_billing import errors
from flask_profile_billing.domain.errors import BillingError
from flask_profile_billing.responses import STATUS_BY_ERROR_CODE

PACKAGE = Path(flask_profile_billing.__file__).parent
DOCS = Path(__file__).resolve().parent.parent / "docs"
# Codes of the host's own mistakes (configuration, a metric its code names wrongly): bugs, 500.
BUG_CODES = {"BILLING_ERROR", "CONFIGURATION_ERROR", "UNKNOWN_METRIC", "NOT_INITIALISED"}


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for subclass in list(found):
        found |= all_subclasses(subclass)
    return found


def codes_raised_in_the_source() -> set[str]:
    """Codes given by name where an error is raised: ``error_code="X"`` and ``ApiError("X"``."""
    pattern = re.compile(r'(?:error_code=|ApiError\(\s*)"([A-Z_]+)"')
    return {
        code
        for path in PACKAGE.rglob("*.py")
        for code in pattern.findall(path.read_text(encoding="utf-8"))
    }


def test_every_error_code_has_a_status_or_is_a_bug() -> None:
    class_codes = {cls.error_code for cls in all_subclasses(BillingError)}
    codes = class_codes | codes_raised_in_the_source()

    assert codes - BUG_CODES <= set(STATUS_BY_ERROR_CODE)
    assert not BUG_CODES & set(STATUS_BY_ERROR_CODE)


def test_the_werkzeug_refusals_agree_with_the_table() -> None:
    for refusal in (errors.QuotaExceeded, errors.FeatureNotAvailable):
        assert refusal.code == STATUS_BY_ERROR_CODE[refusal.error_code]


def test_the_api_docs_list_the_table_exactly() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\s*\| (\d{3}) \| `([A-Z_]+)` \|", text, re.MULTILINE)

    assert {code: int(status) for status, code in rows} == dict(STATUS_BY_ERROR_CODE)


def test_every_public_exception_is_exported() -> None:
    public = {
        cls.__name__
        for cls in all_subclasses(BillingError)
        if cls.__module__.startswith("flask_profile_billing")
    }

    assert public <= set(flask_profile_billing.__all__)
    assert public <= set(errors.__all__)
