"""``flask billing ...``: the plan catalog, manual plan changes, maintenance, reports, migrations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from .domain.accounts import TEAM_PREFIX, Role, personal_account_id
from .domain.catalog import MetricKind, render
from .domain.errors import UnknownMetricError, UnknownPlanError
from .domain.subscriptions import Subscription, SubscriptionStatus
from .errors import BillingConfigError, BillingError, UnknownUserError
from .services.maintenance import MaintenanceReport
from .services.subscriptions import ALLOWED_DURATIONS
from .services.users import find_host_user_id
from .state import get_state

# Every command and subgroup is made by an AppGroup, which runs each command in the app context
# (Flask's with_appcontext): `flask` pushes one itself, but Flask's test runner
# (app.test_cli_runner()) and a host invoking the group from its own click code do not.
_commands = AppGroup("billing")


def build_cli_group(name: str) -> click.Group:
    return AppGroup(
        name,
        commands=dict(_commands.commands),
        help="Plans, subscriptions and usage of flask-profile-billing.",
    )


_FORMAT = click.option(
    "--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True
)
_METRIC = click.option(
    "--metric", default=None, help="A periodic metric of the catalog [default: the primary metric]"
)


@_commands.command("seed-plans")
def seed_plans() -> None:
    """Write the configured plan catalog to the database (idempotent)."""
    result = get_state().plans.seed()
    click.echo(
        f"Plans created: {_names(result.created)}; updated: {_names(result.updated)}; "
        f"unchanged: {_names(result.unchanged)}."
    )


@_commands.command()
@click.argument("user")
@click.argument("plan")
@click.option(
    "--months",
    type=click.Choice([str(m) for m in ALLOWED_DURATIONS]),
    default="1",
    show_default=True,
    help="Length of the paid period; granting the user's current plan extends it.",
)
def grant(user: str, plan: str, months: str) -> None:
    """Put USER on PLAN by hand, without payment (a manual extension). USER is a user id, or
    anything BILLING_USER_LOOKUP finds a user by (an email)."""
    state = get_state()
    with _clear_errors():
        state.runtime.catalog.plan(plan)
        user_id = find_host_user_id(state.runtime, user)
        subscription = state.subscriptions.change_plan(
            personal_account_id(user_id), plan, int(months)
        )
    click.echo(f"User {_who(user, user_id)} is on {_describe(subscription)}.")


@_commands.command()
@click.argument("user")
def cancel(user: str) -> None:
    """Cancel USER's subscription at the end of its paid period (USER: an id, or an email with
    BILLING_USER_LOOKUP)."""
    with _clear_errors():
        state = get_state()
        user_id = find_host_user_id(state.runtime, user)
        subscription = state.subscriptions.cancel(personal_account_id(user_id))
    click.echo(
        f"Cancelled: user {_who(user, user_id)} keeps {_describe(subscription)}, "
        "then moves to free."
    )


@_commands.command()
@click.argument("user")
def resume(user: str) -> None:
    """Undo the cancel of USER's subscription before its period ends (USER: an id, or an email
    with BILLING_USER_LOOKUP)."""
    with _clear_errors():
        state = get_state()
        user_id = find_host_user_id(state.runtime, user)
        subscription = state.subscriptions.resume(personal_account_id(user_id))
    click.echo(f"Resumed: user {_who(user, user_id)} is on {_describe(subscription)}.")


@_commands.command()
@click.option("--dry-run", is_flag=True, help="Print what would change, and change nothing.")
def maintenance(dry_run: bool) -> None:
    """Run the housekeeping now: end lapsed, cancelled and trial subscriptions and start free
    ones, delete expired idempotency keys and rows older than BILLING_RETENTION_DAYS, claim and
    announce the notifications due, and send the emails waiting."""
    report = get_state().maintenance.run(dry_run=dry_run)
    for line in _maintenance_lines(report):
        click.echo(line)


@_commands.command()
def scheduler() -> None:
    """Run the maintenance schedule in the foreground (every BILLING_SCHEDULER_INTERVAL_SECONDS)
    until interrupted: for one dedicated scheduler process instead of one in every worker."""
    settings = get_state().runtime.settings.maintenance
    click.echo(
        f"Running maintenance every {settings.interval_seconds} s "
        f"(jitter up to {settings.jitter_seconds} s); stop with Ctrl+C."
    )
    get_state().scheduler.run_forever()


# -- accounts ----------------------------------------------------------------------------------


@_commands.group()
def accounts() -> None:
    """Team accounts: create them, list them, show their members, seats, caps and usage."""


@accounts.command("create")
@click.option("--owner", required=True, help="The team's owner: a user id, or an email.")
@click.option("--name", required=True, help="The team's name (1 to 120 characters).")
@click.option("--key", default=None, help="The team's key, team:KEY [default: a random one].")
def create_account(owner: str, name: str, key: str | None) -> None:
    """Create a team account owned by OWNER, on the default plan."""
    state = get_state()
    with _clear_errors():
        owner_id = find_host_user_id(state.runtime, owner)
        team = state.accounts.create_team(owner_id, name, key)
    click.echo(f"Team {team.id} ({team.name}) created, owned by user {_who(owner, owner_id)}.")


@accounts.command("list")
@click.option("--user", default=None, help="List this user's accounts and roles instead.")
@_FORMAT
def list_accounts(user: str | None, output: str) -> None:
    """Every team account, or with --user the accounts a user belongs to and their role."""
    state = get_state()
    if user is None:
        teams = state.accounts.all_teams()
        rows = [
            {
                "account_id": team.id,
                "name": team.name or "",
                "members": team.members,
                "created_at": _format_time(team.created_at),
            }
            for team in teams
        ]
        _print(output, rows, ["account_id", "name", "members", "created_at"])
        return
    with _clear_errors():
        user_id = find_host_user_id(state.runtime, user)
    rows = [
        {
            "account_id": account.id,
            "kind": account.kind.value,
            "name": account.name or "",
            "role": account.role.value,
        }
        for account in state.accounts.accounts_of(user_id)
    ]
    _print(output, rows, ["account_id", "kind", "name", "role"])


@accounts.command("show")
@click.argument("account")
def show_account(account: str) -> None:
    """A team's plan, seats, members with their role, caps and use this period."""
    state = get_state()
    account_id = _team_id(account)
    with _clear_errors():
        owner = state.accounts.first_owner(account_id)
        team = state.accounts.team(owner, account_id)
        usage = state.accounts.team_usage(owner, account_id)
        subscription = state.subscriptions.current(account_id)
    seats = team.seats
    of_seats = "unlimited" if seats.seats is None else f"of {seats.seats}"
    click.echo(f"Team {account_id} ({team.account.name})")
    click.echo(f"Plan: {_describe(subscription)}")
    click.echo(
        f"Seats: {seats.taken} taken {of_seats} "
        f"({seats.members} members, {seats.pending_invitations} pending invitations)"
    )
    metrics = state.runtime.catalog.periodic_metric_names
    rows: list[dict[str, Any]] = []
    for member in team.members:
        row: dict[str, Any] = {"user_id": member.user_id, "role": member.role.value}
        used = usage.get(member.user_id, {})
        for metric in metrics:
            cap = team.caps.get((member.user_id, metric))
            amount = used.get(metric, 0)
            row[metric] = str(amount) if cap is None else f"{amount}/{cap}"
        rows.append(row)
    click.echo("Members (use this period, /cap where capped):")
    _print("table", rows, ["user_id", "role", *metrics])
    former = sorted(set(usage) - {member.user_id for member in team.members})
    for user_id in former:
        spent = ", ".join(f"{metric} {amount}" for metric, amount in usage[user_id].items())
        click.echo(f"Former member {user_id} used this period: {spent}")


# -- members -----------------------------------------------------------------------------------


@_commands.group()
def members() -> None:
    """A team's members, changed as the team's first owner would (its seats and last owner are
    checked)."""


_ROLE_CHOICE = click.Choice([role.value for role in Role])


@members.command("add")
@click.argument("account")
@click.argument("user")
@click.option("--role", type=_ROLE_CHOICE, default=Role.MEMBER.value, show_default=True)
def add_member(account: str, user: str, role: str) -> None:
    """Add USER to the team ACCOUNT (a seat must be free)."""
    state = get_state()
    account_id = _team_id(account)
    with _clear_errors():
        user_id = find_host_user_id(state.runtime, user)
        owner = state.accounts.first_owner(account_id)
        state.accounts.add_member(owner, account_id, user_id, Role(role))
    click.echo(f"User {_who(user, user_id)} joined {account_id} as {role}.")


@members.command("remove")
@click.argument("account")
@click.argument("user")
def remove_member(account: str, user: str) -> None:
    """Remove USER from the team ACCOUNT (not its last owner); their seat is free at once."""
    state = get_state()
    account_id = _team_id(account)
    with _clear_errors():
        user_id = find_host_user_id(state.runtime, user)
        owner = state.accounts.first_owner(account_id)
        state.accounts.remove_member(owner, account_id, user_id)
    click.echo(f"User {_who(user, user_id)} removed from {account_id}.")


@members.command("role")
@click.argument("account")
@click.argument("user")
@click.argument("role", type=_ROLE_CHOICE)
def member_role(account: str, user: str, role: str) -> None:
    """Give USER the ROLE (owner, admin or member) in the team ACCOUNT."""
    state = get_state()
    account_id = _team_id(account)
    with _clear_errors():
        user_id = find_host_user_id(state.runtime, user)
        owner = state.accounts.first_owner(account_id)
        state.accounts.change_role(owner, account_id, user_id, Role(role))
    click.echo(f"User {_who(user, user_id)} is {role} of {account_id}.")


# -- caps --------------------------------------------------------------------------------------


@_commands.group()
def caps() -> None:
    """What one member of a team may use of a periodic metric per period."""


@caps.command("set")
@click.argument("account")
@click.argument("user")
@click.argument("metric")
@click.argument("cap", metavar="N", type=click.IntRange(min=0))
def set_cap(account: str, user: str, metric: str, cap: int) -> None:
    """Cap what USER may use of METRIC per period in the team ACCOUNT at N."""
    _change_cap(account, user, metric, cap)


@caps.command("clear")
@click.argument("account")
@click.argument("user")
@click.argument("metric")
def clear_cap(account: str, user: str, metric: str) -> None:
    """Remove USER's cap on METRIC in the team ACCOUNT: the pool alone limits them."""
    _change_cap(account, user, metric, None)


def _change_cap(account: str, user: str, metric: str, cap: int | None) -> None:
    state = get_state()
    account_id = _team_id(account)
    with _clear_errors():
        if state.runtime.catalog.metric(metric).kind is not MetricKind.PERIODIC:
            raise click.ClickException(
                f"{metric!r} is not a periodic metric: caps limit use per period"
            )
        user_id = find_host_user_id(state.runtime, user)
        owner = state.accounts.first_owner(account_id)
        state.accounts.set_cap(owner, account_id, user_id, metric, cap)
    if cap is None:
        click.echo(f"User {_who(user, user_id)} has no cap on {metric} in {account_id}.")
    else:
        click.echo(f"User {_who(user, user_id)} may use {cap} {metric} per period in {account_id}.")


def _team_id(account: str) -> str:
    """The account the command line names: ``team:KEY``, or the bare KEY."""
    return account if ":" in account else TEAM_PREFIX + account


# -- verify ------------------------------------------------------------------------------------


@_commands.command()
def verify() -> None:
    """Check the ledger's invariants and exit 1 naming every drift: each team's pool equals the
    sum of its members' counters, each usage counter equals the sum of its usage events, and no
    team has more members than its plan's seats."""
    report = get_state().verification.run()
    if report.checked_since is not None:
        click.echo(
            f"Periods checked: those starting from {_format_time(report.checked_since)} "
            "(older ones may have lost usage events to BILLING_RETENTION_DAYS)."
        )
    for pool in report.pools:
        click.echo(
            f"Drift: team pool {pool.account_id} {pool.metric} of the period from "
            f"{_format_time(pool.period_start)} is {pool.pool}, its members' counters sum to "
            f"{pool.members}."
        )
    for counter in report.counters:
        click.echo(
            f"Drift: usage counter {counter.account_id} {counter.metric} of the period from "
            f"{_format_time(counter.period_start)} is {counter.counter}, its usage events sum "
            f"to {counter.events}."
        )
    for overflow in report.seats:
        click.echo(
            f"Drift: team {overflow.account_id} has {overflow.members} members, its plan "
            f"{overflow.plan_code!r} has {overflow.seats} seats."
        )
    for name, found in (
        ("pool", report.pools),
        ("counter", report.counters),
        ("seat", report.seats),
    ):
        if len(found) >= report.limit:
            click.echo(f"Only the first {report.limit} {name} drifts are shown.")
    if not report.ok:
        raise click.ClickException(f"{report.drift_count} drifts found")
    click.echo(
        "No drift: team pools match their members' counters, usage counters match their "
        "events, and every team fits its plan's seats."
    )


def _maintenance_lines(report: MaintenanceReport) -> list[str]:
    lapsed = report.lapsed
    breakdown = (
        f"paid periods: {lapsed.get(SubscriptionStatus.ACTIVE, 0)}, "
        f"cancelled at the period's end: {lapsed.get(SubscriptionStatus.CANCELLED, 0)}, "
        f"trials: {lapsed.get(SubscriptionStatus.TRIAL, 0)}"
    )
    swept = report.notifications
    notices = f"expiring {swept.expiring}, quota_low {swept.quota_low}"
    pruned = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in report.pruned.items())
    if report.dry_run:
        lines = [
            "Dry run: nothing was changed.",
            f"Subscriptions that would end and move to the free plan: {sum(lapsed.values())} "
            f"({breakdown}).",
            f"Expired idempotency keys that would be deleted: {report.idempotency_keys}.",
        ]
        if report.pruned:
            lines.append(f"Rows past the retention that would be deleted: {pruned}.")
        lines.append(f"Notifications that would be claimed: {notices}.")
        if report.renewals_charged:
            lines.append(f"Renewals that would be charged: {report.renewals_charged}.")
        if report.emails_sent:
            lines.append(f"Emails that would be sent: {report.emails_sent}.")
        if report.emails_uncertain:
            lines.append(
                f"Emails stranded mid-send that would be marked uncertain: "
                f"{report.emails_uncertain}."
            )
        if report.emails_resent:
            lines.append(
                f"Emails stranded mid-send that would be sent again: {report.emails_resent}."
            )
        return lines
    lines = [
        f"Expired subscriptions moved to the free plan: {report.ended} ({breakdown}).",
        f"Expired idempotency keys deleted: {report.idempotency_keys}.",
    ]
    if report.pruned:
        lines.append(f"Rows past the retention deleted: {pruned}.")
    lines.append(f"Notifications claimed: {notices}.")
    if report.emails_sent or report.emails_failed:
        lines.append(f"Emails sent: {report.emails_sent}; failed for good: {report.emails_failed}.")
    if report.emails_uncertain:
        # Said apart and plainly: these need a person, the run cannot tell whether they went out.
        lines.append(
            f"Emails stranded mid-send, marked uncertain (may not have gone out, not sent again): "
            f"{report.emails_uncertain}."
        )
    if report.emails_resent:
        lines.append(
            f"Emails stranded mid-send, to be sent again (BILLING_EMAIL_RESEND_UNCERTAIN): "
            f"{report.emails_resent}."
        )
    if report.renewals_charged or report.renewals_declined:
        lines.append(
            f"Renewals charged: {report.renewals_charged}; declined: {report.renewals_declined}."
        )
    return lines


@_commands.group()
def report() -> None:
    """Usage reports: top users by a metric, and users and average use per plan."""


@report.command("top-users")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@_METRIC
@_FORMAT
def top_users(days: int, limit: int, metric: str | None, output: str) -> None:
    """Users with the most use of a metric over the last DAYS days."""
    rows = get_state().reports.top_users(_report_metric(metric), days, limit)
    _print(
        output, [{"user_id": row.user_id, "total": row.total} for row in rows], ["user_id", "total"]
    )


@report.command("plans")
@_METRIC
@_FORMAT
def plans_report(metric: str | None, output: str) -> None:
    """Users per plan and their mean use of a metric in the current period."""
    rows = get_state().reports.plan_usage(_report_metric(metric))
    _print(
        output, [asdict(row) for row in rows], ["plan_code", "plan_name", "users", "average_used"]
    )


@_commands.group("db")
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


@database.command()
@click.option(
    "-d",
    "--directory",
    default=None,
    help="The app's Flask-Migrate folder (default: the one Migrate was given, 'migrations').",
)
def check(directory: str | None) -> None:
    """Check that the app's own 'flask db migrate' leaves the billing tables alone.

    Runs the app's migrations/env.py the way 'flask db check' does, against the database, and
    fails (exit 1) naming the billing tables its autogenerate would drop or alter, and the fix.
    """
    from alembic.util import CommandError

    from . import migrate

    migrate_extension = current_app.extensions.get("migrate")
    if migrate_extension is None:
        click.echo(
            "This app has no Flask-Migrate: nothing of its own can touch the billing tables."
        )
        return
    if migrate.current_revision(get_state().runtime.engine) is None:
        raise click.ClickException(
            "the billing tables are not in the database yet, so nothing can be checked: run "
            "'flask billing db upgrade' first"
        )
    config = migrate_extension.migrate.get_config(directory)
    try:
        changes = migrate.host_autogenerate_touches(config)
    except CommandError as error:
        raise click.ClickException(f"the app's migrations could not be compared: {error}") from None
    if changes:
        raise click.ClickException(migrate.refusal(changes))
    click.echo("The app's autogenerate leaves the billing tables alone.")


def _report_metric(metric: str | None) -> str:
    """The metric a report is about: ``--metric``, else the primary metric; checked."""
    runtime = get_state().runtime
    chosen = metric or runtime.settings.primary_metric
    if not chosen:
        raise click.ClickException("the catalog has no periodic metric: name one with --metric")
    with _clear_errors():
        runtime.catalog.metric(chosen)
    return chosen


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
    return f"{render(plan.name)} ({subscription.status.value}) {until}"


def _who(reference: str, user_id: str) -> str:
    """The user as the command line named them, with their id when that was an email."""
    return user_id if reference == user_id else f"{user_id} ({reference})"


def _format_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _names(codes: list[str]) -> str:
    return ", ".join(codes) if codes else "none"


def _print(output: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    # Rendered first: json.dumps would write a translated plan name as its untranslated source.
    rows = [
        {key: render(value) if isinstance(value, str) else value for key, value in row.items()}
        for row in rows
    ]
    if output == "json":
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    table = [columns, *[[str(row[column]) for column in columns] for row in rows]]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
