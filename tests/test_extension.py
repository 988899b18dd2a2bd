"""The extension object as a host developer meets it: init_app, configuration, several apps, and
the guards' checks as plain functions for code that is not a view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy

import flask_profile_billing
from flask_profile_billing import (
    BillingConfigError,
    FeatureNotAvailable,
    NotInitialisedError,
    ProfileBilling,
    QuotaExceeded,
    requires_quota,
)
from flask_profile_billing.domain.catalog import UnknownMetricError
from flask_profile_billing.settings import DEFAULTS
from flask_profile_billing.state import get_state
from tests.support.host_app import AppFactory, as_user, create_host_app


def bare_app(tmp_path: Path, name: str = "bare") -> Flask:
    app = Flask(name)
    app.config["TESTING"] = True
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/{name}.sqlite3"
    return app


def test_public_api_is_exported() -> None:
    for name in flask_profile_billing.__all__:
        assert getattr(flask_profile_billing, name) is not None
    assert {"ProfileBilling", "requires_quota", "requires_feature", "requires_capacity"} <= set(
        flask_profile_billing.__all__
    )


def test_init_app_sets_every_default_and_keeps_the_hosts_values(make_app: AppFactory) -> None:
    app = make_app(BILLING_PERIOD_RULE="rolling_30_days")

    for key, default in DEFAULTS.items():
        assert key in app.config
        if key not in {"BILLING_PERIOD_RULE", "BILLING_CLOCK"}:
            assert app.config[key] == default
    assert app.config["BILLING_PERIOD_RULE"] == "rolling_30_days"
    assert app.extensions["profile_billing"] is get_state(app)


def test_one_extension_object_serves_several_apps_independently(tmp_path: Path) -> None:
    db = SQLAlchemy()
    billing = ProfileBilling(db=db)
    apps = [bare_app(tmp_path, "first"), bare_app(tmp_path, "second")]
    apps[1].config["BILLING_PLANS"] = {
        "metrics": {"analysis": {}},
        "plans": [{"code": "basic", "name": "Basic", "default": True, "limits": {"analysis": 3}}],
    }
    for app in apps:
        db.init_app(app)
        billing.init_app(app)
        with app.app_context():
            billing.create_all()

    with apps[0].app_context():
        billing.consume("u1", "analysis", 5)
        assert billing.plan("u1").code == "free"
        assert billing.allowance("u1", "analysis").used == 5
    with apps[1].app_context():
        assert billing.plan("u1").code == "basic"
        assert billing.allowance("u1", "analysis").used == 0
        with pytest.raises(QuotaExceeded):
            billing.consume("u1", "analysis", 4)


def test_using_the_extension_on_an_app_without_init_app_is_a_clear_error(tmp_path: Path) -> None:
    billing = ProfileBilling()
    with bare_app(tmp_path).app_context(), pytest.raises(NotInitialisedError, match="init_app"):
        billing.subscription("u1")
    with pytest.raises(NotInitialisedError, match="application context"):
        billing.subscription("u1")


def test_a_guarded_view_on_an_uninitialised_app_fails_loudly(tmp_path: Path) -> None:
    app = bare_app(tmp_path)

    @app.post("/analyze")
    @requires_quota("analysis")
    def analyze() -> Any:
        return jsonify(success=True)

    with pytest.raises(NotInitialisedError):
        app.test_client().post("/analyze")


def test_init_app_needs_flask_sqlalchemy(tmp_path: Path) -> None:
    with pytest.raises(BillingConfigError, match="Flask-SQLAlchemy"):
        ProfileBilling(bare_app(tmp_path))


def test_init_app_twice_on_one_app_is_refused(tmp_path: Path) -> None:
    app = bare_app(tmp_path)
    SQLAlchemy(app)
    ProfileBilling(app)
    with pytest.raises(BillingConfigError, match="already initialised"):
        ProfileBilling(app)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("BILLING_PERIOD_RULE", "fortnightly", "BILLING_PERIOD_RULE"),
        ("BILLING_PERIOD_TIMEZONE", "Mars/Olympus_Mons", "time zone"),
        ("BILLING_QUOTA_LOW_THRESHOLD", 1.5, "THRESHOLD"),
        ("BILLING_PROFILE_API_PREFIX", "api/profile", "BILLING_PROFILE_API_PREFIX"),
        ("BILLING_API_NAME", "billing.api", "BILLING_API_NAME"),
        ("BILLING_CACHE_SOCKET_TIMEOUT", 0, "BILLING_CACHE_SOCKET_TIMEOUT"),
        ("BILLING_IDEMPOTENCY_TTL_SECONDS", "a day", "BILLING_IDEMPOTENCY_TTL_SECONDS"),
    ],
)
def test_invalid_settings_fail_at_init_app(
    tmp_path: Path, key: str, value: Any, message: str
) -> None:
    app = bare_app(tmp_path)
    app.config[key] = value
    SQLAlchemy(app)
    with pytest.raises(BillingConfigError, match=message):
        ProfileBilling(app)


def test_a_deprecated_key_still_works_and_says_which_name_replaces_it(
    tmp_path: Path,
) -> None:
    app = bare_app(tmp_path)
    app.config["BILLING_BILLING_API_PREFIX"] = "/billing-v1"
    SQLAlchemy(app)

    with pytest.warns(DeprecationWarning, match="BILLING_API_PREFIX"):
        ProfileBilling(app)

    assert app.config["BILLING_API_PREFIX"] == "/billing-v1"
    assert app.test_client().get("/billing-v1/quotas/preview").status_code == 200


def test_plain_functions_charge_and_refund_like_the_guard(
    app: Flask, billing: ProfileBilling
) -> None:
    reservation = billing.consume("job-user", "analysis", 3, metadata={"score": 0.9})
    assert reservation.allowance.used == 3

    billing.release(reservation)
    assert billing.allowance("job-user", "analysis").used == 0

    with pytest.raises(RuntimeError), billing.charge("job-user", "analysis", 2):
        raise RuntimeError("the background job failed")
    assert billing.allowance("job-user", "analysis").used == 0

    with billing.charge("job-user", "analysis", 2):
        pass
    assert billing.allowance("job-user", "analysis").used == 2

    with pytest.raises(QuotaExceeded, match="Analysis limit reached"):
        billing.consume("job-user", "analysis", 19)
    assert billing.allowance("job-user", "analysis").used == 2


def test_an_idempotency_key_makes_a_repeated_job_free(billing: ProfileBilling) -> None:
    first = billing.consume("job-user", "export", idempotency_key="export-2025-10")
    again = billing.consume("job-user", "export", idempotency_key="export-2025-10")

    assert not first.replayed
    assert again.replayed
    billing.release(again)  # releasing a replay gives nothing back
    assert billing.allowance("job-user", "export").used == 1


def test_feature_and_capacity_checks_as_functions(app: Flask, billing: ProfileBilling) -> None:
    assert not billing.has_feature("u1", "api_access")
    with pytest.raises(FeatureNotAvailable, match="API access"):
        billing.require_feature("u1", "api_access")

    allowance = billing.require_capacity("u1", "active_vacancies")
    assert (allowance.limit, allowance.used, allowance.remaining) == (1, 0, 1)
    app.test_client().post("/vacancies", headers=as_user("u1"))
    with pytest.raises(QuotaExceeded, match="Active vacancy limit reached"):
        billing.require_capacity("u1", "active_vacancies")


def test_metric_mistakes_are_reported_clearly(billing: ProfileBilling) -> None:
    with pytest.raises(UnknownMetricError, match="known metrics: analysis, export"):
        billing.consume("u1", "gpu_minutes")
    with pytest.raises(BillingConfigError, match="gauge"):
        billing.consume("u1", "active_vacancies")
    with pytest.raises(ValueError, match="positive integer"):
        billing.consume("u1", "analysis", 0)


def test_a_gauge_without_a_capacity_loader_is_a_clear_error(tmp_path: Path) -> None:
    app = bare_app(tmp_path)
    SQLAlchemy(app)
    billing = ProfileBilling(app)
    with app.app_context():
        billing.create_all()
        with pytest.raises(BillingConfigError, match="capacity_loader"):
            billing.capacity("u1", "active_vacancies")


def test_the_host_overrides_a_template_by_file_name(tmp_path: Path, database_url: str) -> None:
    override = tmp_path / "templates" / "profile_billing"
    override.mkdir(parents=True)
    (override / "error.html").write_text("host page: {{ error.message }}")
    app = create_host_app(database_url)
    app.template_folder = str(tmp_path / "templates")
    client = app.test_client()
    browser = {"X-User": "alice", "Accept": "text/html"}

    for _ in range(20):
        client.post("/analyze", headers=browser)
    response = client.post("/analyze", headers=browser)

    assert response.get_data(as_text=True) == "host page: Analysis limit reached (20 per month)"


def test_async_views_can_be_guarded(app: Flask, billing: ProfileBilling) -> None:
    @app.post("/async-analyze")
    @requires_quota("analysis")
    async def async_analyze() -> Any:
        return jsonify(success=True)

    response = app.test_client().post("/async-analyze", headers=as_user("u1"))

    assert response.status_code == 200
    assert billing.allowance("u1", "analysis").used == 1
