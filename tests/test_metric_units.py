"""A metric's words come from the catalog: a host's metric carries its unit's forms (English's one
and other, a language's own plural categories: Russian's one, few, many and other), and the
default catalog's metrics theirs; every text that counts a metric (the guards' refusal, the
limits check, the profile page's quota card and banner, the activity feed) picks the form by the
language's plural rule."""

# Russian text is what these tests check: its letters are meant, not look-alikes of Latin ones.
# ruff: noqa: RUF001

from __future__ import annotations

from gettext import NullTranslations
from typing import Any

import pytest
from flask import Flask

from flask_profile_billing import BillingConfigError, QuotaExceeded
from flask_profile_billing.catalog_config import load_catalog
from flask_profile_billing.domain.catalog import Metric, default_catalog
from flask_profile_billing.presentation.i18n import file_catalog
from flask_profile_billing.presentation.translator import Translator, counted, metric_title
from tests.support.host_app import AppFactory, billing_of
from tests.support.servers import required_module
from tests.test_profile_page import PAGE, Markup

POST_UNIT = {
    "one": "post",
    "other": "posts",
    "ru": {"one": "пост", "few": "поста", "many": "постов", "other": "поста"},
}
CATALOG: dict[str, Any] = {
    "metrics": {"post": {"kind": "periodic", "unit": POST_UNIT}},
    "plans": [{"code": "free", "name": "Free", "default": True, "limits": {"post": 5}}],
}
ENGLISH = Translator("en", NullTranslations())
RUSSIAN = Translator("ru", file_catalog("ru"))
COUNTS = [1, 2, 5, 21]


def post_metric() -> Metric:
    return load_catalog(CATALOG, "RUB").metric("post")


@pytest.mark.parametrize(
    ("translator", "words"),
    [
        (ENGLISH, ["1 post", "2 posts", "5 posts", "21 posts"]),
        (RUSSIAN, ["1 пост", "2 поста", "5 постов", "21 пост"]),
    ],
    ids=["en", "ru"],
)
def test_a_hosts_metric_is_counted_in_its_units_forms(
    translator: Translator, words: list[str]
) -> None:
    assert [counted(translator, post_metric(), n) for n in COUNTS] == words


def test_a_locale_of_the_language_takes_its_forms_and_one_without_forms_takes_english() -> None:
    assert counted(Translator("ru_RU", file_catalog("ru")), post_metric(), 21) == "21 пост"
    assert counted(Translator("de", NullTranslations()), post_metric(), 1) == "1 post"


@pytest.mark.parametrize(
    ("translator", "words"),
    [
        (ENGLISH, ["1 analysis", "2 analyses", "5 analyses", "21 analyses"]),
        (RUSSIAN, ["1 анализ", "2 анализа", "5 анализов", "21 анализ"]),
    ],
    ids=["en", "ru"],
)
def test_the_default_catalogs_metrics_take_their_forms_from_the_catalog(
    translator: Translator, words: list[str]
) -> None:
    analysis = default_catalog().metric("analysis")
    assert analysis.unit is not None
    assert analysis.unit.messages == ("%(num)s analysis", "%(num)s analyses")
    assert [counted(translator, analysis, n) for n in COUNTS] == words
    assert metric_title(RUSSIAN, default_catalog().metric("export")) == "Экспорты"


def test_the_title_is_the_units_plural_unless_the_catalog_names_one() -> None:
    assert metric_title(ENGLISH, post_metric()) == "Posts"
    titled = {**CATALOG, "metrics": {"post": {"unit": POST_UNIT, "title": "Blog posts"}}}
    assert metric_title(ENGLISH, load_catalog(titled, "RUB").metric("post")) == "Blog posts"
    bare = {**CATALOG, "metrics": {"post": {}}}
    assert metric_title(ENGLISH, load_catalog(bare, "RUB").metric("post")) == "Post"


@pytest.mark.parametrize(
    "unit",
    [
        "posts",
        {"one": "post"},
        {"one": "post", "other": ""},
        {"one": "post", "other": "posts", "ru": {"one": "пост"}},
        {"one": "post", "other": "posts", "ru": {"one": "пост", "several": "поста", "other": "a"}},
        {"one": "post", "other": "posts", "Russian!": {"other": "поста"}},
        {"one": "post", "other": "posts", "ru": ["пост"]},
    ],
)
def test_a_malformed_unit_is_refused_at_init_app(make_app: AppFactory, unit: object) -> None:
    with pytest.raises(BillingConfigError, match=r"BILLING_PLANS is invalid.*unit"):
        make_app(BILLING_PLANS={**CATALOG, "metrics": {"post": {"unit": unit}}})


# --- in the app: the guards' refusal, the limits check, the page, the activity feed ------------


@pytest.fixture
def posts_app(make_app: AppFactory) -> Flask:
    return make_app(BILLING_PLANS=CATALOG, BILLING_PRIMARY_METRIC="post")


def test_the_refusal_and_the_limits_check_count_in_the_units_words(posts_app: Flask) -> None:
    billing = billing_of(posts_app)
    with posts_app.app_context():
        billing.consume("alice", "post", 5)
        with pytest.raises(QuotaExceeded) as refused:
            billing.consume("alice", "post")
    assert refused.value.message == "Limit reached: 5 posts"

    answer = posts_app.test_client().get(
        "/api/subscription/limits/check", headers={"X-User": "alice"}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["data"]["messages"]["post"] == "Limit reached: 5 posts"


def page_text(app: Flask, user: str) -> str:
    answer = app.test_client().get(PAGE, headers={"X-User": user, "Accept": "text/html"})
    assert answer.status_code == 200
    return Markup(answer.get_data(as_text=True)).text


@pytest.mark.parametrize(
    ("locale", "used", "banner"),
    [
        ("en", 4, "Only 1 post left until November 1, 2025."),
        ("en", 3, "Only 2 posts left until November 1, 2025."),
        ("ru", 4, "Осталось всего 1 пост до 1 ноября 2025 г."),
        ("ru", 3, "Осталось всего 2 поста до 1 ноября 2025 г."),
        ("en", 5, "Limit reached: 5 posts of this period are used."),
        ("ru", 5, "Лимит исчерпан: использовано 5 постов за этот период."),
    ],
)
def test_the_page_counts_in_the_units_words(
    make_app: AppFactory, locale: str, used: int, banner: str
) -> None:
    app = make_app(BILLING_PLANS=CATALOG, BILLING_PRIMARY_METRIC="post", BILLING_LOCALE=locale)
    billing = billing_of(app)
    with app.app_context():
        billing.consume("alice", "post", used)
        text = page_text(app, "alice")

    assert banner in text
    assert "Posts" in text  # the quota card's and the chart's title


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("en", ["2 posts", "3 posts", "Posts refused: limit reached"]),
        ("ru", ["2 поста", "3 поста", "Posts: отказ, лимит исчерпан"]),
    ],
)
def test_the_activity_feed_counts_in_the_units_words(
    make_app: AppFactory, locale: str, words: list[str]
) -> None:
    app = make_app(BILLING_PLANS=CATALOG, BILLING_PRIMARY_METRIC="post", BILLING_LOCALE=locale)
    billing = billing_of(app)
    with app.app_context():
        billing.consume("alice", "post", 2)
        billing.consume("alice", "post", 3)
        with pytest.raises(QuotaExceeded):
            billing.consume("alice", "post")
        text = page_text(app, "alice")

    for expected in words:
        assert expected in text


def test_the_emails_count_in_the_units_words(make_app: AppFactory) -> None:
    """The low-quota and limit-reached emails, in English and Russian, for a host's metric."""
    mailman = required_module("flask_mailman")
    users = {"alice": None, "ivan": "ru"}
    app = make_app(
        BILLING_PLANS=CATALOG,
        MAIL_BACKEND="locmem",
        MAIL_DEFAULT_SENDER="billing@example.com",
        BILLING_USER_INFO=lambda user: {"email": f"{user.id}@example.com"},
        BILLING_EMAIL_LOCALE=lambda user: users[user.id],
    )
    mailman.Mail(app)
    billing = billing_of(app)
    with app.app_context():
        for user in users:
            billing.consume(user, "post", 4)
        billing.run_maintenance()  # "only 1 left" goes out before the last unit is used
        for user in users:
            billing.consume(user, "post")
            with pytest.raises(QuotaExceeded):
                billing.consume(user, "post")
        billing.run_maintenance()
    subjects = sorted(email.subject for email in app.extensions["mailman"].outbox)
    bodies = " ".join(email.body for email in app.extensions["mailman"].outbox)

    assert subjects == [
        "Limit reached: Posts",
        "Only 1 post left this period",
        "Лимит исчерпан: Posts",
        "Осталось всего 1 пост в этом периоде",
    ]
    assert "Limit reached: 5 posts of this period are used." in bodies
    assert "Лимит исчерпан: использовано 5 постов за этот период." in bodies


SEAT_UNIT = {
    "one": "seat",
    "other": "seats",
    "ru": {"one": "место", "few": "места", "many": "мест", "other": "места"},
}


@pytest.mark.parametrize(
    ("locale", "summary"), [("en", "2 of 5 seats"), ("ru", "2 из 5 мест")], ids=["en", "ru"]
)
def test_a_hosts_gauge_card_counts_its_cap_in_the_units_words(
    make_app: AppFactory, locale: str, summary: str
) -> None:
    """A gauge's card words its cap as its unit does, whatever the metric is called (the default
    catalog's active vacancies are no special case)."""
    catalog = {
        "metrics": {**CATALOG["metrics"], "seat": {"kind": "gauge", "unit": SEAT_UNIT}},
        "plans": [
            {"code": "free", "name": "Free", "default": True, "limits": {"post": 5, "seat": 5}}
        ],
    }
    app = make_app(BILLING_PLANS=catalog, BILLING_PRIMARY_METRIC="post", BILLING_LOCALE=locale)
    billing = billing_of(app)
    billing.capacity_loader("seat")(lambda user_id: 2)

    assert summary in page_text(app, "alice")
