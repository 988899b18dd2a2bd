"""What a host sees of ``flask billing ...`` beyond tests/test_cli.py: every command under Flask's
documented test runner with no app context pushed, users named by email through the host's
lookup, and the primary metric of a host's own catalog, which the reports default to."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import Result
from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import func, select, text

from flask_profile_billing import BillingConfigError, ProfileBilling, SubscriptionRow
from flask_profile_billing.state import get_state
from tests.support.host_app import AppFactory, User, as_user, billing_of, create_host_app, db
from tests.support.profile import me

# The commands run by test_every_billing_command_runs_under_the_test_runner, in that order (each
# acts on what the one before it did), and by test_the_db_commands_run_under_the_test_runner.
APP_COMMANDS: list[tuple[list[str], str]] = [
    (["seed-plans"], "Plans created: free, starter, professional, enterprise; updated: none"),
    (["grant", "u1", "starter"], "User u1 is on Starter (active) until 2025-11-13 10:00 UTC."),
    (["cancel", "u1"], "Cancelled: user u1 keeps Starter (cancelled) until 2025-11-13 10:00 UTC"),
    (["resume", "u1"], "Resumed: user u1 is on Starter (active) until 2025-11-13 10:00 UTC."),
    (["maintenance"], "Expired subscriptions moved to the free plan: 0 (paid periods: 0,"),
    (["report", "top-users"], "user_id  total"),
    (["report", "plans"], "plan_code     plan_name     users  average_used"),
    (
        ["accounts", "create", "--owner", "u1", "--name", "Acme", "--key", "acme"],
        "Team team:acme (Acme) created, owned by user u1.",
    ),
    (["accounts", "list"], "account_id  name  members  created_at"),
    (["members", "add", "acme", "u2"], "User u2 joined team:acme as member."),
    (["members", "role", "acme", "u2", "admin"], "User u2 is admin of team:acme."),
    (["caps", "set", "acme", "u2", "analysis", "3"], "User u2 may use 3 analysis per period"),
    (["caps", "clear", "acme", "u2", "analysis"], "User u2 has no cap on analysis"),
    (["accounts", "show", "acme"], "Team team:acme (Acme)"),
    (["members", "remove", "acme", "u2"], "User u2 removed from team:acme."),
    (["verify"], "No drift: team pools match their members' counters"),
]
# The subgroups whose commands APP_COMMANDS names by their first two words.
GROUPS = {"report", "accounts", "members", "caps"}
DB_COMMANDS = ["current", "upgrade", "downgrade", "check"]


def invoke(app: Flask, *args: str) -> Result:
    """``flask billing ARGS`` the way Flask documents testing commands: no context pushed."""
    assert not current_app, "these tests are about running without a pushed app context"
    return app.test_cli_runner().invoke(args=["billing", *args])


def succeeded(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def failed(result: Result) -> str:
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return result.output


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    commands: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            commands |= leaf_commands(command, (*path, name))
        else:
            commands.add((*path, name))
    return commands


# --- every command under app.test_cli_runner() -------------------------------------------------


def test_the_runner_tests_cover_every_billing_command(make_app: AppFactory) -> None:
    group = make_app().cli.commands["billing"]
    assert isinstance(group, click.Group)

    tested = {tuple(args[:2] if args[0] in GROUPS else args[:1]) for args, _ in APP_COMMANDS}
    tested |= {("scheduler",)}  # test_the_scheduler_command_runs_under_the_test_runner
    assert leaf_commands(group) == tested | {("db", name) for name in DB_COMMANDS}


def test_every_billing_command_runs_under_the_test_runner(make_app: AppFactory) -> None:
    app = make_app()

    for args, expected in APP_COMMANDS:
        output = succeeded(invoke(app, *args))
        assert output.startswith(expected), (args, output)

    with app.app_context():
        billing = billing_of(app)
        assert billing.plan("u1").code == "starter"


def test_the_scheduler_command_runs_under_the_test_runner_until_stopped(
    make_app: AppFactory,
) -> None:
    """``flask billing scheduler`` runs in the foreground, its first tick at once, and stops
    cleanly on SIGTERM (as a process manager stops it)."""
    app = make_app(BILLING_SCHEDULER_INTERVAL_SECONDS=3600, BILLING_SCHEDULER_JITTER_SECONDS=0)
    stopper = threading.Timer(3, os.kill, (os.getpid(), signal.SIGTERM))
    stopper.start()
    try:
        output = succeeded(invoke(app, "scheduler"))
    finally:
        stopper.cancel()
    assert output.startswith("Running maintenance every 3600 s (jitter up to 0 s)")
    with app.app_context(), db.engine.connect() as connection:
        lease = connection.execute(
            text("SELECT lease_until, last_finished_at FROM billing_job_leases")
        ).one()
    assert lease.lease_until is None  # released
    assert lease.last_finished_at is not None  # the tick at start ran


def test_the_db_commands_run_under_the_test_runner(database_url: str) -> None:
    app = Flask("bare_host")
    app.config.update(TESTING=True, SQLALCHEMY_DATABASE_URI=database_url)
    SQLAlchemy(app)
    ProfileBilling(app)

    assert succeeded(invoke(app, "db", "current")).strip() == "none (not migrated)"
    assert succeeded(invoke(app, "db", "check")).startswith("This app has no Flask-Migrate")
    upgraded = succeeded(invoke(app, "db", "upgrade")).strip()
    assert upgraded.startswith("Billing tables at revision ")
    head = upgraded.removeprefix("Billing tables at revision ").rstrip(".")
    assert succeeded(invoke(app, "db", "current")).strip() == head
    assert succeeded(invoke(app, "db", "downgrade", "base")).startswith("Billing tables at")
    assert succeeded(invoke(app, "db", "current")).strip() == "none (not migrated)"


def test_expected_errors_stay_one_line_under_the_test_runner(make_app: AppFactory) -> None:
    app = make_app()

    assert failed(invoke(app, "grant", "ghost-1", "starter")) == (
        "Error: no user with id 'ghost-1'\n"
    )
    assert "unknown metric 'gpu_minutes'" in failed(
        invoke(app, "report", "plans", "--metric", "gpu_minutes")
    )


# --- users named by email: BILLING_USER_LOOKUP ------------------------------------------------

KNOWN_IDS = {"u1", "u7"}
EMAILS = {"ann@example.com": "u7"}


def by_email_host(make_app: AppFactory, lookups: list[str]) -> Flask:
    """A host whose user ids are u1 and u7, and whose lookup knows Ann's email."""

    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in KNOWN_IDS else None

    def find_user(identifier: str) -> User | None:
        lookups.append(identifier)
        user_id = EMAILS.get(identifier.lower())
        return None if user_id is None else User(user_id)

    return make_app(BILLING_USER_LOADER=load_user, BILLING_USER_LOOKUP=find_user)


def test_grant_cancel_and_resume_find_a_user_by_email(make_app: AppFactory) -> None:
    lookups: list[str] = []
    app = by_email_host(make_app, lookups)

    assert succeeded(invoke(app, "grant", "ann@example.com", "professional")).strip() == (
        "User u7 (ann@example.com) is on Professional (active) until 2025-11-13 10:00 UTC."
    )
    assert succeeded(invoke(app, "cancel", "Ann@Example.com")).startswith(
        "Cancelled: user u7 (Ann@Example.com) keeps Professional (cancelled)"
    )
    assert succeeded(invoke(app, "resume", "ann@example.com")).startswith(
        "Resumed: user u7 (ann@example.com) is on Professional (active)"
    )
    with app.app_context():
        billing = billing_of(app)
        assert billing.plan("u7").code == "professional"
        assert billing.subscription("u7").cancelled_at is None
    assert lookups == ["ann@example.com", "Ann@Example.com", "ann@example.com"]


def test_a_known_user_id_is_taken_as_is_without_a_lookup(make_app: AppFactory) -> None:
    lookups: list[str] = []
    app = by_email_host(make_app, lookups)

    assert succeeded(invoke(app, "grant", "u1", "starter")).startswith("User u1 is on Starter")
    assert lookups == []


def test_an_identifier_nobody_knows_is_refused_and_writes_nothing(make_app: AppFactory) -> None:
    lookups: list[str] = []
    app = by_email_host(make_app, lookups)

    for command in (["grant", "bob@example.com", "starter"], ["cancel", "bob@example.com"]):
        assert failed(invoke(app, *command)) == (
            "Error: no user with id or identifier 'bob@example.com'\n"
        )
    with app.app_context():
        rows = select(func.count()).select_from(SubscriptionRow)
        assert db.session.execute(rows).scalar_one() == 0
        db.session.remove()


def test_the_account_commands_find_users_by_email(make_app: AppFactory) -> None:
    app = by_email_host(make_app, [])

    created = invoke(app, "accounts", "create", "--owner", "ann@example.com", "--name", "Acme")
    assert succeeded(created).endswith("owned by user u7 (ann@example.com).\n")
    account_id = succeeded(created).split()[1]
    assert succeeded(invoke(app, "members", "add", account_id, "u1")).startswith("User u1 joined")
    assert succeeded(invoke(app, "members", "role", account_id, "u1", "owner")).startswith(
        "User u1 is owner"
    )
    assert succeeded(invoke(app, "members", "remove", account_id, "Ann@Example.com")) == (
        f"User u7 (Ann@Example.com) removed from {account_id}.\n"
    )
    assert failed(invoke(app, "members", "add", account_id, "bob@example.com")) == (
        "Error: no user with id or identifier 'bob@example.com'\n"
    )


def test_a_lookup_that_is_not_callable_is_refused_at_init_app(tmp_path: Path) -> None:
    with pytest.raises(BillingConfigError, match="BILLING_USER_LOOKUP must be a callable"):
        sqlite_host(tmp_path, BILLING_USER_LOOKUP="email")


# --- the primary metric of a host catalog -----------------------------------------------------

GPU_CATALOG: dict[str, Any] = {
    "metrics": {"seats": {"kind": "gauge"}, "gpu_minutes": {"kind": "periodic"}},
    "plans": [
        {"code": "hobby", "name": "Hobby", "default": True, "limits": {"gpu_minutes": 10}},
        {"code": "lab", "name": "Lab", "price_monthly": 990, "limits": {"gpu_minutes": 600}},
    ],
}


def sqlite_host(tmp_path: Path, **config: Any) -> Flask:
    """A host app on SQLite, for settings that init_app refuses before any database work."""
    return create_host_app(f"sqlite:///{tmp_path}/host.sqlite3", config)


def test_a_host_catalog_defaults_to_its_first_periodic_metric(make_app: AppFactory) -> None:
    app = make_app(BILLING_PLANS=GPU_CATALOG)
    client = app.test_client()
    with app.app_context():
        billing_of(app).consume("u1", "gpu_minutes", 4)

    quota = me(client, "u1")["quota"]
    assert (quota["limit"], quota["used"], quota["available"]) == (10, 4, 6)
    packages = client.get("/api/billing/quotas/preview").get_json()["data"]
    assert [(package["id"], package["tokens"]) for package in packages] == [("lab", 600)]
    # Both reports default to it.
    top = json.loads(succeeded(invoke(app, "report", "top-users", "--format", "json")))
    assert top == [{"user_id": "u1", "total": 4}]
    plans = json.loads(succeeded(invoke(app, "report", "plans", "--format", "json")))
    assert [(row["plan_code"], row["users"], row["average_used"]) for row in plans] == [
        ("hobby", 1, 4.0),
        ("lab", 0, 0.0),
    ]


def test_the_default_catalog_keeps_analysis_as_its_primary_metric(make_app: AppFactory) -> None:
    app = make_app()
    assert get_state(app).runtime.settings.primary_metric == "analysis"
    app.test_client().post("/analyze", headers=as_user("u1"))

    assert me(app.test_client(), "u1")["quota"]["used"] == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"BILLING_PRIMARY_METRIC": "analysis", "BILLING_PLANS": GPU_CATALOG},
            "BILLING_PRIMARY_METRIC: unknown metric 'analysis'; known periodic metrics: "
            "gpu_minutes",
        ),
        (
            {"BILLING_PRIMARY_METRIC": "seats", "BILLING_PLANS": GPU_CATALOG},
            "BILLING_PRIMARY_METRIC: 'seats' is a gauge metric, not a periodic one; known "
            "periodic metrics: gpu_minutes",
        ),
        (
            {"BILLING_PRIMARY_METRIC": "active_vacancies"},
            "BILLING_PRIMARY_METRIC: 'active_vacancies' is a gauge metric, not a periodic one; "
            "known periodic metrics: analysis, export",
        ),
    ],
    ids=["unknown", "gauge-of-a-host-catalog", "gauge-of-the-default-catalog"],
)
def test_a_primary_metric_that_is_not_a_periodic_metric_is_refused_at_init_app(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    with pytest.raises(BillingConfigError) as refused:
        sqlite_host(tmp_path, **config)
    assert str(refused.value) == message


def test_a_catalog_without_periodic_metrics_has_no_primary_metric(make_app: AppFactory) -> None:
    seats_only = {
        "metrics": {"seats": {"kind": "gauge"}},
        "plans": [{"code": "team", "name": "Team", "default": True, "limits": {"seats": 3}}],
    }
    app = make_app(BILLING_PLANS=seats_only)

    assert me(app.test_client(), "u1")["quota"] is None
    assert failed(invoke(app, "report", "plans")) == (
        "Error: the catalog has no periodic metric: name one with --metric\n"
    )
    with pytest.raises(BillingConfigError, match="PROFILE_DEFAULT_QUOTA"):
        make_app(BILLING_PLANS=seats_only, PROFILE_DEFAULT_QUOTA=5)
