"""``flask billing ...``: the plan catalog, manual plan changes, maintenance, reports, migrations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from flask.cli import AppGroup

from .domain.errors import UnknownMetricError, UnknownPlanError
from .domain.subscriptions import Subscription
from .errors import BillingConfigError, BillingError, UnknownUserError
from .services.subscriptions import ALLOWED_DURATIONS
from .services.users import load_host_user
from .state import get_state


def build_cli_group(name: str) -> click.Group:
    group = AppGroup(name, help="Plans, subscriptions and usage of flask-profile-billing.")
    group.add_command(seed_plans)
    group.add_command(grant)
    group.add_command(cancel)
    group.add_command(resume)
    group.add_command(maintenance)
    group.add_command(report)
    group.add_command(database)
    return group


@click.command("seed-plans")
def seed_plans() -> None:
    """Write the configured plan catalog to the database (idempotent)."""
    result = get_state().plans.seed()
    click.echo(
        f"Plans created: {_names(result.created)}; updated: {_names(result.updated)}; "
        f"unchanged: {_names(result.unchanged)}."
    )


@click.command()
@click.argument("user_id")
@click.argument("plan")
@click.option(
    "--months",
    type=click.Choice([str(m) for m in ALLOWED_DURATIONS]),
    default="1",
    show_default=True,
    help="Length of the paid period; granting the user's current plan extends it.",
)
def grant(user_id: str, plan: str, months: str) -> None:
    """Put USER_ID on PLAN by hand, without payment (a manual extension)."""
    state = get_state()
    with _clear_errors():
        state.runtime.catalog.plan(plan)
        load_host_user(state.runtime, user_id)
        subscription = state.subscriptions.change_plan(user_id, plan, int(months))
    click.echo(f"User {user_id} is on {_describe(subscription)}.")


@click.command()
@click.argument("user_id")
def cancel(user_id: str) -> None:
    """Cancel USER_ID's subscription at the end of its paid period."""
    with _clear_errors():
        state = get_state()
        load_host_user(state.runtime, user_id)
        subscription = state.subscriptions.cancel(user_id)
    click.echo(f"Cancelled: user {user_id} keeps {_describe(subscription)}, then moves to free.")


@click.command()
@click.argument("user_id")
def resume(user_id: str) -> None:
    """Undo the cancel of USER_ID's subscription before its period ends."""
    with _clear_errors():
        state = get_state()
        load_host_user(state.runtime, user_id)
        subscription = state.subscriptions.resume(user_id)
    click.echo(f"Resumed: user {user_id} is on {_describe(subscription)}.")


@click.command()
def maintenance() -> None:
    """Run the housekeeping now: end lapsed subscriptions and start free ones, and delete the
    stored responses of expired idempotency keys."""
    state = get_state()
    expired = state.subscriptions.expire_lapsed()
    click.echo(f"Expired subscriptions moved to the free plan: {expired}.")
    pruned = state.idempotency.prune_expired()
    click.echo(f"Expired idempotency keys deleted: {pruned}.")


@click.group()
def report() -> None:
    """Usage reports: top users by a metric, and users and average use per plan."""


_FORMAT = click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_METRIC = click.option(
    "--metric", default=None, help="A periodic metric of the catalog [default: the primary metric]"
)


@report.command("top-users")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@_METRIC
@_FORMAT
def top_users(days: int, limit: int, metric: str | None, output: str) -> None:
    """Users with the most use of a metric over the last DAYS days."""
    state = get_state()
    metric = metric or state.runtime.settings.primary_metric
    with _clear_errors():
        state.runtime.catalog.metric(metric)
    rows = state.reports.top_users(metric, days, limit)
    _print(output, [asdict(row) for row in rows], ["user_id", "total"])


@report.command("plans")
@_METRIC
@_FORMAT
def plans_report(metric: str | None, output: str) -> None:
    """Users per plan and their mean use of a metric in the current period."""
    state = get_state()
    metric = metric or state.runtime.settings.primary_metric
    with _clear_errors():
        state.runtime.catalog.metric(metric)
    rows = state.reports.plan_usage(metric)
    _print(
        output, [asdict(row) for row in rows], ["plan_code", "plan_name", "users", "average_used"]
    )


@click.group("db")
def database() -> None:
    """The extension's own migrations (its tables only; version table billing_alembic_version)."""


@database.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Upgrade the extension's tables to REVISION (default: head)."""
    from . import migrate

    migrate.upgrade(get_state().runtime.engine, revision)
    click.echo(
        f"Billing tables at revision {migrate.current_revision(get_state().runtime.engine)}."
    )


@database.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the extension's tables to REVISION ("base" drops them)."""
    from . import migrate

    migrate.downgrade(get_state().runtime.engine, revision)
    click.echo(
        f"Billing tables at revision {migrate.current_revision(get_state().runtime.engine)}."
    )


@database.command()
def current() -> None:
    """Show the revision of the extension's tables."""
    click.echo(_revision())


def _revision() -> str:
    from . import migrate

    return migrate.current_revision(get_state().runtime.engine) or "none (not migrated)"


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn the extension's expected errors into one-line CLI errors instead of tracebacks."""
    try:
        yield
    except (UnknownPlanError, UnknownMetricError, UnknownUserError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except BillingConfigError:
        raise
    except BillingError as error:
        raise click.ClickException(str(error)) from None


def _describe(subscription: Subscription) -> str:
    plan = get_state().runtime.catalog.plan(subscription.plan_code)
    until = (
        f"until {_format_time(subscription.expires_at)}"
        if subscription.expires_at
        else "with no end"
    )
    return f"{plan.name} ({subscription.status.value}) {until}"


def _format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _names(codes: list[str]) -> str:
    return ", ".join(codes) if codes else "none"


def _print(output: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    if output == "json":
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    table = [columns, *[[str(row[column]) for column in columns] for row in rows]]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
