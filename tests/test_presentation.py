"""The refusal page in the reader's language (the example app's Flask-Babel picks it from
Accept-Language), and Babel kept to the presentation package, the one place that words things for
people."""

from __future__ import annotations

import re
from datetime import datetime
from html import unescape
from pathlib import Path

from example_app import create_app
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.servers import required_module

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PACKAGE = Path(__file__).resolve().parent.parent / "src" / "flask_profile_billing"
# An import of Babel or Flask-Babel: a statement, or a module named to import it by name ("babel",
# "babel.dates", "flask_babel", f"babel.{module}").
BABEL_IMPORT = re.compile(
    r"^\s*(import|from) (flask_)?babel\b|[\"'](flask_)?babel([\"']|\.)", re.MULTILINE
)
TIME = re.compile(r'<time datetime="([^"]+)">([^<]+)</time>')


def example(database_url: str) -> Flask:
    return create_app(
        {"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, "WTF_CSRF_ENABLED": False}
    )


def refused(app: Flask, language: str) -> TestResponse:
    """Alice's analyses of the month used up in JSON, then one more asked for by her browser."""
    client: FlaskClient = app.test_client()
    login = client.post("/login", data={"email": "alice@example.com", "password": "alice"})
    assert login.status_code == 303
    for _ in range(100):
        if client.post("/analyze", headers={"Accept": "application/json"}).status_code == 429:
            break
    else:
        raise AssertionError("the free plan's analyses never ran out")
    page = client.post("/analyze", headers={**HTML, "Accept-Language": language})
    assert page.status_code == 429
    assert page.mimetype == "text/html"
    return page


def text_of(page: TestResponse) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", page.get_data(as_text=True))).split())


def test_the_refusal_page_in_russian(database_url: str) -> None:
    required_module("flask_babel")
    babel_dates = required_module("babel.dates")
    page = refused(example(database_url), "ru,en;q=0.5")
    markup = page.get_data(as_text=True)
    text = text_of(page)

    assert '<html lang="ru">' in markup
    assert "429 Слишком много запросов" in text
    assert "Достигнут лимит анализов (20 в месяц)" in text
    moment = TIME.search(markup)
    assert moment is not None, markup
    resets_at = datetime.fromisoformat(moment.group(1))
    # The day and time in Russian's own medium form, in the user's zone (UTC, as no profile set one).
    written = babel_dates.format_datetime(resets_at, format="medium", locale="ru")
    assert moment.group(2) == f"{written} (UTC)"
    assert f'Квота обновится <time datetime="{moment.group(1)}">{written} (UTC)</time>.' in markup
    assert re.search(r'<a href="/">Вернуться назад</a>', markup)
    assert "Ваш тариф и использование" in text
    for english in ("Too Many Requests", "Analysis limit reached", "Your quota resets", "Go back"):
        assert english not in text


def test_the_refusal_page_in_english(database_url: str) -> None:
    required_module("flask_babel")
    babel_dates = required_module("babel.dates")
    page = refused(example(database_url), "en")
    markup = page.get_data(as_text=True)
    text = text_of(page)

    assert '<html lang="en">' in markup
    assert "429 Too Many Requests" in text
    assert "Analysis limit reached (20 per month)" in text
    moment = TIME.search(markup)
    assert moment is not None, markup
    written = babel_dates.format_datetime(
        datetime.fromisoformat(moment.group(1)), format="medium", locale="en"
    )
    assert "Your quota resets on <time datetime=" in markup
    assert moment.group(2) == f"{written} (UTC)"
    assert '<a href="/">Go back</a>' in markup
    assert "Your plan and usage" in text


def test_babel_is_imported_only_by_the_presentation_package() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if BABEL_IMPORT.search(path.read_text(encoding="utf-8"))
    )
    # The check finds what it looks for: the package's own import of Babel.
    assert {"presentation/i18n.py", "presentation/formats.py"} <= set(importers)
    assert [path for path in importers if not path.startswith("presentation/")] == []
