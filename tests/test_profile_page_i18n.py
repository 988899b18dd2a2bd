"""The profile page in Russian: the extension's own catalog (plural forms, dates, money), the
locale from BILLING_LOCALE or the host's Flask-Babel selector, and a catalog that is complete and
compiled from its current source."""

# Russian text is what these tests check: its letters are meant, not look-alikes of Latin ones.
# ruff: noqa: RUF001

from __future__ import annotations

import io
import subprocess
import sys
from gettext import NullTranslations
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from flask_profile_billing.presentation.i18n import DOMAIN, TRANSLATIONS_DIRECTORY
from flask_profile_billing.presentation.translator import Translator
from tests.support.host_app import AppFactory, billing_of
from tests.support.servers import required_module
from tests.test_profile_page import HTML, PAGE, Markup

required_module("babel.messages")
from babel.messages.mofile import write_mo  # noqa: E402
from babel.messages.pofile import read_po  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CATALOG = TRANSLATIONS_DIRECTORY / "ru" / "LC_MESSAGES" / f"{DOMAIN}.po"


def russian_page(make_app: AppFactory, **config: object) -> tuple[str, Markup]:
    app = make_app(BILLING_LOCALE="ru", PROFILE_PAYMENTS_CTA_EMAIL="sales@example.com", **config)
    with app.app_context():
        billing = billing_of(app)
        billing.change_plan("bob", "starter")
        billing.consume("bob", "analysis", 198)
        client: FlaskClient = app.test_client()
        html = client.get(PAGE, headers={"X-User": "bob", **HTML}).get_data(as_text=True)
    return html, Markup(html)


def test_the_page_in_russian(make_app: AppFactory) -> None:
    _, markup = russian_page(make_app)

    assert markup.elements[0] == ("html", {"lang": "ru"})
    assert "Купить" in markup.text
    assert "Изменить" in markup.text
    assert "Осталось всего 2 анализа до 1 ноября 2025 г. Купить" in markup.text
    assert "2 990 ₽ в месяц" in markup.text
    assert "Оплата будет доступна позже. Свяжитесь с нами для ручного расширения." in markup.text
    assert "Использовано 198 из 200 · осталось 2 · обновится 1 ноября 2025 г." in markup.text


def test_the_activity_timeline_in_russian(make_app: AppFactory) -> None:
    """The extension's own entries are told again in the reader's language from their metadata,
    with the time of day without seconds."""
    app = make_app(BILLING_LOCALE="ru")
    with app.app_context():
        billing = billing_of(app)
        billing.change_plan("bob", "starter")
        billing.cancel("bob")
        billing.resume("bob")
        billing.change_plan("bob", "starter")  # the same plan again: extended
        client: FlaskClient = app.test_client()
        html = client.get(PAGE, headers={"X-User": "bob", **HTML}).get_data(as_text=True)
    timeline = Markup(html).text

    assert "Тариф изменён: Free → Starter" in timeline
    assert "Подписка Starter отменена" in timeline
    assert "Подписка Starter возобновлена" in timeline
    assert "Тариф Starter продлён" in timeline
    assert "пользователь" in timeline  # the role
    assert "13 окт. 2025 г., 10:00" in timeline
    assert "10:00:00" not in timeline


def test_the_locale_follows_the_hosts_flask_babel_selector(make_app: AppFactory) -> None:
    flask_babel = required_module("flask_babel")
    app = make_app()
    flask_babel.Babel(app, locale_selector=lambda: "ru")
    with app.app_context():
        html = app.test_client().get(PAGE, headers={"X-User": "alice", **HTML}).get_data(True)

    assert '<html lang="ru">' in html
    assert "Квоты и использование" in html


@pytest.mark.parametrize(
    ("count", "words"),
    [(1, "1 анализ"), (2, "2 анализа"), (5, "5 анализов"), (11, "11 анализов"), (21, "21 анализ")],
)
def test_russian_plural_forms(app: object, count: int, words: str) -> None:
    from flask_profile_billing.page.model import counted
    from flask_profile_billing.presentation.i18n import file_catalog as _file_catalog

    translator = Translator("ru", _file_catalog("ru"))

    assert counted(translator, "analysis", count) == words


def test_english_without_a_catalog_formats_plainly() -> None:
    english = Translator("en", NullTranslations())

    assert english.ngettext("%(num)s day left", "%(num)s days left", 1) == "1 day left"


def test_the_catalog_is_complete_and_its_compiled_file_is_current() -> None:
    with CATALOG.open("rb") as source:
        catalog = read_po(source, locale="ru")
    untranslated = [
        message.id
        for message in catalog
        if message.id
        and (
            message.fuzzy
            or not (all(message.string) if isinstance(message.string, tuple) else message.string)
        )
    ]
    compiled = io.BytesIO()
    write_mo(compiled, catalog)

    assert not untranslated
    assert CATALOG.with_suffix(".mo").read_bytes() == compiled.getvalue()


def test_every_message_of_the_code_is_in_the_catalog(tmp_path: Path) -> None:
    template = tmp_path / "messages.pot"
    command = [
        sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
        "--no-default-keywords", "-k", "_pb", "-k", "_pbn:1,2", "-k", "gettext",
        "-k", "ngettext:1,2", "-k", "plural_forms:1,2", "-k", "translatable", "--no-location",
        "-o", str(template), ".",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with template.open("rb") as extracted, CATALOG.open("rb") as source:
        wanted = {message.id for message in read_po(extracted) if message.id}
        have = {message.id for message in read_po(source) if message.id}

    assert wanted - have == set()
