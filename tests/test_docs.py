"""The configuration reference names every key the code reads, with its default."""

from __future__ import annotations

from pathlib import Path

from flask_profile_billing.settings import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_configuration_key_is_documented_with_its_default() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
        for line in text.splitlines()
        if line.startswith("| `") and line.split("`")[1].isupper()
    }

    assert set(rows) == set(DEFAULTS)
    for key, default in DEFAULTS.items():
        assert rows[key] == repr(default).replace("'", '"'), key
