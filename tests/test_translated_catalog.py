"""A catalog in the host's languages and currency: plan names, descriptions, feature labels and
limit messages given as Flask-Babel lazy strings are shown in the locale of each request, and
BILLING_CURRENCY prices the plans that name no currency of their own."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string, request
from flask.testing import FlaskClient
from flask_babel import Babel, lazy_gettext

from flask_profile_billing import BillingConfigError, PlanRow
from tests.support.host_app import AppFactory, as_user, billing_of, create_host_app, db
from tests.support.translations import write_translations

RUSSIAN = {
    "Free": "Бесплатный",
    "For trying it out.": "Чтобы попробовать.",
    "Professional": "Профессиональный",
    "For agencies.": "Для агентств.",
    "API access": "Доступ к API",
    "Analysis limit reached ({limit} per month)": "Лимит анализов исчерпан ({limit} в месяц)",
}


def translated_plans() -> dict[str, Any]:
    """A host catalog whose every text shown to users goes through Flask-Babel."""
    return {
        "metrics": {
            "analysis": {
                "kind": "periodic",
                "message": lazy_gettext("Analysis limit reached ({limit} per month)"),
            }
        },
        "plans": [
            {
                "code": "free",
                "name": lazy_gettext("Free"),
                "description": lazy_gettext("For trying it out."),
                "default": True,
                "limits": {"analysis": 1},
                "features": {"api_access": False},
            },
            {
                "code": "pro",
                "name": lazy_gettext("Professional"),
                "description": lazy_gettext("For agencies."),
                "price_monthly": 990,
                "limits": {"analysis": None},
                "features": {"api_access": True},
            },
        ],
        "feature_labels": {"api_access": lazy_gettext("API access")},
    }


@pytest.fixture
def translated_app(make_app: AppFactory, tmp_path: Path) -> Flask:
    """A host app with Flask-Babel, English and Russian translations, and the locale of each
    request chosen from its Accept-Language header."""
    translations = tmp_path / "translations"
    write_translations(translations, "en", {source: source for source in RUSSIAN})
    write_translations(translations, "ru", RUSSIAN)
    app = make_app(
        BILLING_PLANS=translated_plans(), BABEL_TRANSLATION_DIRECTORIES=str(translations)
    )
    Babel(app, locale_selector=lambda: request.accept_languages.best_match(["en", "ru"]))
    return app


def in_russian(user: str | None = None) -> dict[str, str]:
    headers = {"Accept-Language": "ru"}
    return {**as_user(user), **headers} if user else headers


def in_english(user: str | None = None) -> dict[str, str]:
    headers = {"Accept-Language": "en-GB,en;q=0.9"}
    return {**as_user(user), **headers} if user else headers


def plans(client: FlaskClient, headers: dict[str, str]) -> list[tuple[str, str, str]]:
    response = client.get("/api/subscription/plans", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return [
        (plan["id"], plan["name"], plan["description"])
        for plan in response.get_json()["data"]["plans"]
    ]


# --- lazy texts: accepted, kept lazy, shown in the request's locale ---------------------------


def test_the_plans_api_answers_in_each_requests_locale(translated_app: Flask) -> None:
    client = translated_app.test_client()

    assert plans(client, in_russian()) == [
        ("free", "Бесплатный", "Чтобы попробовать."),
        ("pro", "Профессиональный", "Для агентств."),
    ]
    # The same catalog, the next request: nothing was translated once and for all.
    assert plans(client, in_english()) == [
        ("free", "Free", "For trying it out."),
        ("pro", "Professional", "For agencies."),
    ]
    assert plans(client, {}) == [
        ("free", "Free", "For trying it out."),
        ("pro", "Professional", "For agencies."),
    ]


def test_the_profile_names_the_plan_in_each_requests_locale(translated_app: Flask) -> None:
    """The profile read is cached for every locale; its plan name is rendered per request."""
    with translated_app.app_context():
        billing_of(translated_app).change_plan("alice", "pro")
    client = translated_app.test_client()

    def plan_name(headers: dict[str, str]) -> str:
        answer = client.get("/api/profile/me", headers={**as_user("alice"), **headers})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        name: str = answer.get_json()["data"]["plan"]["name"]
        return name

    assert plan_name(in_russian()) == "Профессиональный"
    assert plan_name(in_english()) == "Professional"
    assert plan_name(in_russian()) == "Профессиональный"  # from the cache, still in Russian


def test_the_quota_packages_are_named_in_the_requests_locale(translated_app: Flask) -> None:
    client = translated_app.test_client()

    russian = client.get("/api/billing/quotas/preview", headers=in_russian()).get_json()
    english = client.get("/api/billing/quotas/preview", headers=in_english()).get_json()

    assert [package["name"] for package in russian["data"]] == ["Профессиональный"]
    assert [package["name"] for package in english["data"]] == ["Professional"]


def test_refusals_name_the_feature_plan_and_limit_in_the_requests_locale(
    translated_app: Flask,
) -> None:
    client = translated_app.test_client()

    feature = client.get("/api/data", headers=in_russian("u1"))
    assert feature.status_code == 403
    assert feature.get_json()["message"] == "Доступ к API is not available on the Бесплатный plan"

    assert client.post("/analyze", headers=in_russian("u1")).status_code == 200
    limit = client.post("/analyze", headers=in_russian("u1"))
    assert limit.status_code == 429
    assert limit.get_json()["message"] == "Лимит анализов исчерпан (1 в месяц)"
    english = client.post("/analyze", headers=in_english("u1"))
    assert english.get_json()["message"] == "Analysis limit reached (1 per month)"


def test_templates_show_catalog_texts_in_the_requests_locale(translated_app: Flask) -> None:
    billing = billing_of(translated_app)
    template = "{{ plan.name }}: {{ plan.description }} ({{ label }})"

    with translated_app.test_request_context(headers=in_russian()):
        plan = billing.catalog.plan("pro")
        label = billing.catalog.feature_label("api_access")
        shown = render_template_string(template, plan=plan, label=label)

    assert shown == "Профессиональный: Для агентств. (Доступ к API)"


def test_the_catalog_keeps_the_texts_lazy_and_stores_their_source(translated_app: Flask) -> None:
    billing = billing_of(translated_app)

    with translated_app.test_request_context(headers=in_russian()):
        name = billing.catalog.plan("pro").name
        assert name == "Professional"  # as a str: the source text
        assert str(name) == "Профессиональный"  # shown: in the locale of the moment
        billing.seed_plans()
        row = db.session.get(PlanRow, "pro")
        assert row is not None
        assert (row.name, row.description) == ("Professional", "For agencies.")
        db.session.remove()
    # A cache pickles what it keeps; a copy keeps the source text.
    assert pickle.loads(pickle.dumps(name)) == "Professional"
    # The profile, which is cached, is served in any locale.
    client = translated_app.test_client()
    for _ in range(2):
        response = client.get("/api/profile/me", headers=in_russian("u1"))
        assert response.status_code == 200, response.get_json()


def test_the_cli_shows_the_source_texts_where_no_request_chooses_a_locale(
    translated_app: Flask,
) -> None:
    # The host's locale selector reads the request, which a command does not have.
    runner = translated_app.test_cli_runner()

    granted = runner.invoke(args=["billing", "grant", "u1", "pro"])
    report = runner.invoke(args=["billing", "report", "plans", "--format", "json"])

    assert granted.exit_code == 0, granted.output
    assert granted.output.startswith("User u1 is on Professional (active)")
    assert report.exit_code == 0, report.output
    assert [row["plan_name"] for row in json.loads(report.output)] == ["Free", "Professional"]


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        (lazy_gettext("Lab"), True),
        ("Lab", True),
        (42, False),
        (b"Lab", True),
        (["Lab"], False),
        (None, False),
    ],
    ids=["lazy", "str", "number", "bytes", "list", "none"],
)
def test_a_plan_name_is_text_or_a_lazy_translation(
    tmp_path: Path, name: object, accepted: bool
) -> None:
    catalog = {"plans": [{"code": "lab", "name": name, "default": True}]}
    if accepted:
        app = sqlite_host(tmp_path, BILLING_PLANS=catalog)
        with app.app_context():
            assert billing_of(app).catalog.plan("lab").name == "Lab"
        return
    with pytest.raises(BillingConfigError, match=r"BILLING_PLANS is invalid: .*'name'"):
        sqlite_host(tmp_path, BILLING_PLANS=catalog)


# --- the currency: BILLING_CURRENCY -----------------------------------------------------------


def sqlite_host(tmp_path: Path, **config: Any) -> Flask:
    """A host app on SQLite, for catalogs and settings that need no particular database."""
    return create_host_app(f"sqlite:///{tmp_path}/host.sqlite3", config)


def test_the_default_catalog_is_priced_in_the_configured_currency(make_app: AppFactory) -> None:
    client = make_app(BILLING_CURRENCY="eur").test_client()

    listed = client.get("/api/subscription/plans").get_json()["data"]["plans"]
    packages = client.get("/api/billing/quotas/preview").get_json()["data"]

    assert {plan["pricing"]["currency"] for plan in listed} == {"EUR"}
    assert {package["currency"] for package in packages} == {"EUR"}
    assert [plan["pricing"]["monthly"] for plan in listed] == [0, 2990, 5990, None]


def test_a_host_plan_without_a_currency_takes_the_configured_one(tmp_path: Path) -> None:
    catalog = {
        "plans": [
            {"code": "free", "name": "Free", "default": True},
            {"code": "pro", "name": "Pro", "price_monthly": 9},
            {"code": "us", "name": "US", "price_monthly": 10, "currency": "usd"},
        ]
    }
    app = sqlite_host(tmp_path, BILLING_PLANS=catalog, BILLING_CURRENCY="CHF")

    prices = app.test_client().get("/api/subscription/plans").get_json()["data"]["plans"]
    assert [(plan["id"], plan["pricing"]["currency"]) for plan in prices] == [
        ("free", "CHF"),
        ("pro", "CHF"),
        ("us", "USD"),
    ]


def test_the_currency_is_rub_unless_configured(tmp_path: Path) -> None:
    app = sqlite_host(tmp_path)
    billing = billing_of(app)
    with app.app_context():
        assert {plan.currency for plan in billing.catalog.plans.values()} == {"RUB"}


@pytest.mark.parametrize("currency", ["euro", "E1R", "", None, 978])
def test_a_currency_that_is_not_a_three_letter_code_is_refused(
    tmp_path: Path, currency: object
) -> None:
    with pytest.raises(BillingConfigError, match="BILLING_CURRENCY must be a three-letter"):
        sqlite_host(tmp_path, BILLING_CURRENCY=currency)
