"""The plan catalog: the four default plans with their prices, limits and features, seeding them
into the plans table, and a host's own catalog from config."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from flask_profile_billing import (
    BillingConfigError,
    Plan,
    PlanRow,
    ProfileBilling,
    QuotaExceeded,
)
from flask_profile_billing.domain.catalog import MetricKind, UnknownPlanError, default_catalog
from tests.support.host_app import AppFactory, billing_of, db

# --- the default catalog --------------------------------------------------------------------------

FREE_FEATURES = {"basic_analysis", "email_support", "excel_export"}
STARTER_FEATURES = FREE_FEATURES | {"advanced_filters"}
PROFESSIONAL_FEATURES = STARTER_FEATURES | {
    "api_access",
    "priority_support",
    "custom_reports",
    "bulk_operations",
    "webhook_notifications",
}
ENTERPRISE_FEATURES = PROFESSIONAL_FEATURES | {
    "team_collaboration",
    "personal_manager",
    "custom_integrations",
    "sla_guarantee",
    "onboarding_assistance",
}
ALL_FEATURES = ENTERPRISE_FEATURES


def plan_limits(vacancies: int | None, analyses: int | None, exports: int | None) -> dict:
    return {"active_vacancies": vacancies, "analysis": analyses, "export": exports}


# code: (name, monthly, yearly, limits, yearly discount %, enabled features)
DEFAULT_PLANS: dict[str, tuple[str, Decimal | None, Decimal | None, dict, int | None, set[str]]] = {
    "free": ("Free", Decimal(0), Decimal(0), plan_limits(1, 20, 5), 0, FREE_FEATURES),
    "starter": (
        "Starter",
        Decimal(2990),
        Decimal(29900),
        plan_limits(5, 200, 50),
        16,
        STARTER_FEATURES,
    ),
    "professional": (
        "Professional",
        Decimal(5990),
        Decimal(59900),
        plan_limits(20, 1000, 200),
        16,
        PROFESSIONAL_FEATURES,
    ),
    "enterprise": (
        "Enterprise",
        None,
        None,
        plan_limits(None, None, None),
        None,
        ENTERPRISE_FEATURES,
    ),
}


def test_default_catalog_has_the_default_plans_in_order(billing: ProfileBilling) -> None:
    catalog = billing.catalog
    assert list(catalog.plans) == ["free", "starter", "professional", "enterprise"]
    assert [plan.sort_order for plan in catalog.plans.values()] == [0, 1, 2, 3]
    assert catalog.default_plan.code == "free"
    assert set(catalog.feature_names) == ALL_FEATURES
    assert {name: metric.kind for name, metric in catalog.metrics.items()} == {
        "analysis": MetricKind.PERIODIC,
        "export": MetricKind.PERIODIC,
        "active_vacancies": MetricKind.GAUGE,
    }
    assert catalog.metric("analysis").limit_key == "analyses_per_month"
    assert catalog.metric("export").limit_key == "exports_per_month"


@pytest.mark.parametrize("code", list(DEFAULT_PLANS))
def test_default_plan_has_its_documented_prices_limits_and_features(
    billing: ProfileBilling, code: str
) -> None:
    name, monthly, yearly, limits, discount, enabled = DEFAULT_PLANS[code]
    plan = billing.catalog.plan(code)

    assert isinstance(plan, Plan)
    assert (plan.code, plan.name, plan.currency) == (code, name, "RUB")
    assert (plan.price_monthly, plan.price_yearly) == (monthly, yearly)
    assert plan.yearly_discount == discount
    assert dict(plan.limits) == limits
    for metric, limit in limits.items():
        assert plan.limit_for(metric) == limit
    # Every plan names every feature, switched on or off.
    assert dict(plan.features) == {feature: feature in enabled for feature in ALL_FEATURES}
    assert plan.is_default is (code == "free")


def test_only_free_is_free_and_enterprise_is_priced_on_request(billing: ProfileBilling) -> None:
    catalog = billing.catalog
    assert [code for code, plan in catalog.plans.items() if plan.is_free] == ["free"]
    enterprise = catalog.plan("enterprise")
    assert enterprise.price_for(1) is None
    assert enterprise.price_for(12) is None
    assert catalog.plan("starter").price_for(1) == Decimal(2990)
    assert catalog.plan("starter").price_for(12) == Decimal(29900)


@pytest.mark.parametrize(
    ("code", "feature", "expected"),
    [
        ("free", "basic_analysis", True),
        ("free", "email_support", True),
        ("free", "excel_export", True),
        ("free", "api_access", False),
        ("free", "priority_support", False),
        ("free", "advanced_filters", False),
        ("starter", "advanced_filters", True),
        ("starter", "api_access", False),
        ("professional", "api_access", True),
        ("professional", "webhook_notifications", True),
        ("professional", "team_collaboration", False),
        ("enterprise", "sla_guarantee", True),
        ("enterprise", "api_access", True),
        ("enterprise", "no_such_feature", False),
    ],
)
def test_plan_has_feature(code: str, feature: str, expected: bool) -> None:
    assert default_catalog().plan(code).has_feature(feature) is expected


def test_users_get_their_plans_features(billing: ProfileBilling) -> None:
    assert billing.has_feature("u-free", "api_access") is False
    assert billing.has_feature("u-free", "excel_export") is True
    billing.change_plan("u-pro", "professional")
    assert billing.has_feature("u-pro", "api_access") is True
    assert billing.has_feature("u-pro", "team_collaboration") is False


def test_unknown_plan_names_the_known_ones() -> None:
    with pytest.raises(UnknownPlanError, match="free, starter, professional, enterprise"):
        default_catalog().plan("platinum")


def test_feature_labels() -> None:
    catalog = default_catalog()
    assert catalog.feature_label("api_access") == "API access"
    assert catalog.feature_label("sla_guarantee") == "SLA guarantee"
    assert catalog.feature_label("some_host_feature") == "Some host feature"


def stored_plans() -> dict[str, PlanRow]:
    """The billing_plans rows, read through the host app's session (closed afterwards)."""
    try:
        return {row.code: row for row in db.session.scalars(select(PlanRow))}
    finally:
        db.session.remove()


def test_seed_plans_writes_the_catalog(billing: ProfileBilling) -> None:
    result = billing.seed_plans()
    assert result.created == list(DEFAULT_PLANS)
    assert (result.updated, result.unchanged) == ([], [])

    rows = stored_plans()
    assert sorted(rows) == sorted(DEFAULT_PLANS)
    for code, (name, monthly, yearly, limits, _, enabled) in DEFAULT_PLANS.items():
        row = rows[code]
        assert (row.name, row.currency, row.is_default) == (name, "RUB", code == "free")
        assert row.price_monthly == monthly
        assert row.price_yearly == yearly
        if monthly is not None:
            assert isinstance(row.price_monthly, Decimal)
            assert isinstance(row.price_yearly, Decimal)
        assert row.limits == limits
        assert row.features == {feature: feature in enabled for feature in ALL_FEATURES}
        assert row.sort_order == list(DEFAULT_PLANS).index(code)


# --- a host's own catalog -------------------------------------------------------------------------

HOST_PLANS: dict[str, Any] = {
    "metrics": {
        "gpu_minutes": {"kind": "periodic", "message": "GPU limit reached ({limit} minutes)"},
    },
    "plans": [
        {
            "code": "hobby",
            "name": "Hobby",
            "default": True,
            "limits": {"gpu_minutes": 10},
            "features": {"shared_notebooks": False},
        },
        {
            "code": "lab",
            "name": "Lab",
            "price_monthly": 990,
            "price_yearly": 9900,
            "currency": "eur",
            "limits": {"gpu_minutes": None},
            "features": {"shared_notebooks": True},
        },
    ],
    "feature_labels": {"shared_notebooks": "Shared notebooks"},
}


def host_plans(**changes: Any) -> dict[str, Any]:
    """A copy of HOST_PLANS; ``hobby=``/``lab=`` update that plan's entry."""
    plans = copy.deepcopy(HOST_PLANS)
    for entry in plans["plans"]:
        entry.update(changes.get(entry["code"], {}))
    return plans


def as_dict(plans: dict[str, Any], tmp_path: Path) -> Any:
    return plans


def as_json_file(plans: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plans), encoding="utf-8")
    return str(path)


def as_yaml_file(plans: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "plans.yaml"
    path.write_text(yaml.safe_dump(plans), encoding="utf-8")
    return path


SOURCES = pytest.mark.parametrize("source", [as_dict, as_json_file, as_yaml_file])


@SOURCES
def test_host_catalog_from_config(
    make_app: AppFactory, tmp_path: Path, source: Callable[..., Any]
) -> None:
    app = make_app(BILLING_PLANS=source(HOST_PLANS, tmp_path))
    billing = billing_of(app)
    with app.app_context():
        catalog = billing.catalog

    assert list(catalog.plans) == ["hobby", "lab"]
    assert catalog.default_plan.code == "hobby"
    assert list(catalog.metrics) == ["gpu_minutes"]
    gpu = catalog.metric("gpu_minutes")
    assert (gpu.kind, gpu.limit_key) == (MetricKind.PERIODIC, "gpu_minutes")
    assert gpu.limit_message(10) == "GPU limit reached (10 minutes)"
    hobby, lab = catalog.plan("hobby"), catalog.plan("lab")
    assert hobby.is_free
    assert (hobby.limit_for("gpu_minutes"), lab.limit_for("gpu_minutes")) == (10, None)
    assert (lab.price_monthly, lab.price_yearly, lab.currency) == (
        Decimal(990),
        Decimal(9900),
        "EUR",
    )
    assert lab.yearly_discount == 16
    assert (hobby.has_feature("shared_notebooks"), lab.has_feature("shared_notebooks")) == (
        False,
        True,
    )
    assert catalog.feature_label("shared_notebooks") == "Shared notebooks"


@SOURCES
def test_host_catalog_limits_are_enforced(
    make_app: AppFactory, tmp_path: Path, source: Callable[..., Any]
) -> None:
    app = make_app(BILLING_PLANS=source(HOST_PLANS, tmp_path))
    billing = billing_of(app)
    with app.app_context():
        assert billing.plan("u1").code == "hobby"
        billing.consume("u1", "gpu_minutes", 5)
        billing.consume("u1", "gpu_minutes", 5)
        with pytest.raises(QuotaExceeded) as refused:
            billing.consume("u1", "gpu_minutes", 5)
        assert refused.value.metric == "gpu_minutes"
        assert refused.value.message == "GPU limit reached (10 minutes)"
        # The refusal charged nothing.
        allowance = billing.allowance("u1", "gpu_minutes")
        assert (allowance.limit, allowance.used, allowance.remaining) == (10, 10, 0)

        # The unlimited plan is not stopped.
        billing.change_plan("u2", "lab")
        for _ in range(5):
            billing.consume("u2", "gpu_minutes", 100)
        assert billing.allowance("u2", "gpu_minutes").used == 500


def write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def without_defaults(plans: dict[str, Any]) -> dict[str, Any]:
    plans["plans"][0]["default"] = False
    return plans


INVALID_CATALOGS = [
    pytest.param(
        lambda tmp: without_defaults(host_plans()),
        r"exactly one default plan, found none",
        id="no-default",
    ),
    pytest.param(
        lambda tmp: host_plans(lab={"default": True}),
        r"exactly one default plan, found \['hobby', 'lab'\]",
        id="two-defaults",
    ),
    pytest.param(
        lambda tmp: host_plans(lab={"limits": {"cpu_hours": 3}}),
        r"plan 'lab' limits unknown metrics: \['cpu_hours'\]",
        id="unknown-metric",
    ),
    pytest.param(
        lambda tmp: host_plans(hobby={"limits": {"gpu_minutes": -1}}),
        r"gpu_minutes.*greater than or equal to 0",
        id="negative-limit",
    ),
    pytest.param(
        lambda tmp: host_plans(lab={"code": "Lab Plan"}),
        r"code.*lower-case letters, digits",
        id="bad-code",
    ),
    pytest.param(
        lambda tmp: host_plans(lab={"code": "hobby"}),
        r"plan codes must be unique",
        id="duplicate-codes",
    ),
    pytest.param(
        lambda tmp: str(tmp / "missing.json"),
        r"cannot read .*missing\.json",
        id="missing-file",
    ),
    pytest.param(
        lambda tmp: write_file(tmp / "broken.json", "{plans: ["),
        r"broken\.json is not valid JSON",
        id="invalid-json",
    ),
]


@pytest.mark.parametrize(("make_source", "message"), INVALID_CATALOGS)
def test_invalid_catalog_is_refused_at_init_app(
    make_app: AppFactory, tmp_path: Path, make_source: Callable[[Path], Any], message: str
) -> None:
    with pytest.raises(BillingConfigError, match=message) as refused:
        make_app(BILLING_PLANS=make_source(tmp_path))
    assert "BILLING_PLANS" in str(refused.value)
