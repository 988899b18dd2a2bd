"""``ProfileBilling``: the extension object a host app creates once and initialises per app.

What each app has (its settings, catalog, engine and services) lives in
``app.extensions["profile_billing"]``, so one extension object serves any number of apps, as with
Flask-SQLAlchemy and app factories. The object itself keeps only what the host gives it for every
app: the ``db`` passed to the constructor and the gauges' capacity loaders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Flask

from . import signals
from .api.blueprints import register_api
from .catalog_config import load_catalog
from .cli import build_cli_group
from .domain.accounts import personal_account_id, require_manager
from .domain.catalog import Catalog, Plan
from .domain.limits import Allowance
from .domain.subscriptions import Subscription
from .errors import BillingConfigError, BillingError
from .page.blueprint import register_page
from .responses import error_response, keep_refusal_headers, refusals_noted
from .services.accounts import AccountService
from .services.activity import ActivityEvent, ActivityService
from .services.cache import BillingCache
from .services.catalog_sync import CatalogSync, SeedResult
from .services.charge_returns import ChargeReturnService
from .services.email_senders import EmailSenders
from .services.faults import DATABASE_FAULTS, is_database_fault
from .services.idempotency import IdempotencyService
from .services.leases import JobLeases
from .services.mail import MailService
from .services.maintenance import MaintenanceReport, MaintenanceService
from .services.notifications import NotificationService
from .services.payment_grants import PaymentGrantService
from .services.payments import PaymentService
from .services.plan_changes import PlanChangeService
from .services.profiles import ProfileService
from .services.quotas import QuotaService, Reservation
from .services.recurring import RecurringService
from .services.reports import ReportService
from .services.runtime import AccountLoader, CapacityLoader, Runtime
from .services.scheduler import MaintenanceScheduler
from .services.subscriptions import SubscriptionService
from .services.team_charges import TeamCharges
from .services.usage import UsageStatsService
from .services.verification import VerificationService
from .services.webhooks import WebhookService
from .settings import DEFAULTS, BillingSettings, apply_deprecated_keys, catalog_currency
from .state import EXTENSION_KEY, BillingState, get_state

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .migrate import AlembicEnvironment

Loader = TypeVar("Loader", bound=CapacityLoader)
log = logging.getLogger(__name__)


def build_state(runtime: Runtime) -> BillingState:
    """The services of one app, wired together."""
    plans = CatalogSync(runtime)
    # Emails follow the notifications whenever the host has a sender (services.mail).
    senders = EmailSenders(runtime)
    notifications = NotificationService(runtime, senders)
    subscriptions = SubscriptionService(runtime, plans, notifications)
    charge_returns = ChargeReturnService(runtime)
    payments = PaymentService(runtime)
    idempotency = IdempotencyService(runtime, charge_returns)
    leases = JobLeases(runtime)
    team_charges = TeamCharges(runtime, notifications)
    quotas = QuotaService(runtime, subscriptions, charge_returns, notifications, team_charges)
    accounts = AccountService(runtime, subscriptions, senders, notifications)
    profiles = ProfileService(runtime, quotas)
    mail = MailService(runtime, senders, subscriptions, quotas, profiles)
    grants = PaymentGrantService(runtime, subscriptions, payments)
    recurring = RecurringService(runtime, subscriptions, payments, notifications, grants)
    maintenance = MaintenanceService(
        runtime, subscriptions, idempotency, notifications, leases, mail, recurring
    )
    _follow_cancels(runtime, recurring)
    return BillingState(
        runtime=runtime,
        plans=plans,
        subscriptions=subscriptions,
        quotas=quotas,
        charge_returns=charge_returns,
        idempotency=idempotency,
        reports=ReportService(runtime),
        usage=UsageStatsService(runtime),
        payments=payments,
        plan_changes=PlanChangeService(runtime, subscriptions, payments, profiles, accounts),
        webhooks=WebhookService(runtime, payments, grants, recurring),
        recurring=recurring,
        profiles=profiles,
        activity=ActivityService(runtime),
        notifications=notifications,
        leases=leases,
        maintenance=maintenance,
        scheduler=MaintenanceScheduler(runtime, maintenance),
        mail=mail,
        accounts=accounts,
        verification=VerificationService(runtime),
    )


def _follow_cancels(runtime: Runtime, recurring: RecurringService) -> None:
    """Tell a provider whose subscriptions renew on its side when the user cancels or resumes."""
    if not recurring.renews_at_providers:
        return

    def receiver(
        app: Any,
        account_id: str,
        previous: Subscription | None,
        current: Subscription,
        **_: Any,
    ) -> None:
        recurring.on_subscription_changed(account_id, previous, current)

    signals.subscription_changed.connect(receiver, sender=runtime.app, weak=False)


class ProfileBilling:
    """Subscription plans, quotas and feature flags for a Flask app.

    ``db`` is the host's Flask-SQLAlchemy object; when omitted, the one registered on the app is
    used. Every method other than ``init_app`` and the decorators works on the current app.
    """

    def __init__(self, app: Flask | None = None, db: SQLAlchemy | None = None) -> None:
        self._db = db
        self._capacity_loaders: dict[str, CapacityLoader] = {}
        # A list, so the runtime built in init_app sees a loader registered after it.
        self._account_loader: list[AccountLoader | None] = [None]
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if EXTENSION_KEY in app.extensions:
            raise BillingConfigError(f"ProfileBilling is already initialised for {app.name!r}")
        apply_deprecated_keys(app.config)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        # The catalog first: the settings are checked against it (the primary metric is one of
        # its periodic metrics).
        catalog = load_catalog(app.config["BILLING_PLANS"], catalog_currency(app.config))
        settings = BillingSettings.from_config(app.config, catalog)
        db = self._db or app.extensions.get("sqlalchemy")
        if db is None:
            raise BillingConfigError(
                "flask-profile-billing needs Flask-SQLAlchemy: pass ProfileBilling(db=db) or call "
                "db.init_app(app) before billing.init_app(app)"
            )
        if settings.default_quota is not None:
            catalog = catalog.with_limit(
                catalog.default_plan.code, settings.primary_metric, settings.default_quota
            )
        runtime = Runtime(
            app,
            settings,
            catalog,
            db,
            BillingCache(app, settings),
            self._capacity_loaders,
            self._account_loader,
        )
        state = build_state(runtime)
        state.mail.check_from_address()
        app.extensions[EXTENSION_KEY] = state
        # The activity feed records this app's plan changes, expiry and refusals from its signals.
        state.activity.connect_receivers()
        # Templates: a host overrides one with a file of the same name in its own
        # templates/profile_billing/ folder, which Flask searches first.
        app.register_blueprint(Blueprint(EXTENSION_KEY, __name__, template_folder="templates"))
        # Any of the extension's errors that reaches Flask is answered in the error shape, with
        # the status of its code; a host's own handler (for 429, or QuotaExceeded) still wins.
        app.register_error_handler(BillingError, error_response)
        # And a host's handler (for 429, or QuotaExceeded) still sends the refusal's headers.
        app.after_request(keep_refusal_headers)
        # Registered after the host's db.init_app (checked above), so it runs before
        # Flask-SQLAlchemy's own teardown, which would otherwise turn an answered request into a
        # 500 when the database went away during it.
        app.teardown_appcontext(_host_session_ender(db))

        register_api(app)
        register_page(app)
        app.cli.add_command(build_cli_group(settings.cli_group))
        if settings.maintenance.scheduler_enabled:
            _start_scheduler_on_first_request(app, state)

    # -- host hooks ----------------------------------------------------------------------------

    def capacity_loader(self, metric: str) -> Callable[[Loader], Loader]:
        """Register the host's count of a gauge metric: ``(user_id: str) -> int``."""

        def register(loader: Loader) -> Loader:
            self._capacity_loaders[metric] = loader
            return loader

        return register

    # -- the catalog ---------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        return get_state().runtime.catalog

    def seed_plans(self) -> SeedResult:
        """Write the configured catalog to the database: missing plans inserted, changed ones updated."""
        return get_state().plans.seed()

    # -- accounts ------------------------------------------------------------------------------

    @property
    def accounts(self) -> AccountService:
        """Teams, members, roles, invitations, seats and caps (see the guide, "Accounts")."""
        return get_state().accounts

    @property
    def verification(self) -> VerificationService:
        """The ledger's invariant checks (``flask billing verify``): ``run()`` returns a report."""
        return get_state().verification

    def account_loader(self, loader: AccountLoader) -> AccountLoader:
        """Register the host's choice of the account a request acts for: ``(user_id: str) ->
        account id or None`` (None: the user's personal account). Called in the request; the
        user's membership of what it returns is checked on every request."""
        self._account_loader[0] = loader
        return loader

    def _account(self, user_id: str, account_id: str | None, *, manage: bool = False) -> str:
        """The account ``user_id`` acts for: ``account_id`` when they are a member (an owner or
        admin with ``manage``), else their personal account."""
        accounts = get_state().accounts
        if account_id is None:
            return personal_account_id(str(user_id))
        if manage:
            require_manager(accounts.role(str(user_id), account_id))
            return account_id
        return accounts.resolve(str(user_id), account_id)

    # -- subscriptions -------------------------------------------------------------------------

    def subscription(self, user_id: str, *, account_id: str | None = None) -> Subscription:
        """The account's current subscription (a free one is created on first access); the
        user's personal account unless ``account_id`` names a team they belong to."""
        return get_state().subscriptions.current(self._account(user_id, account_id))

    def plan(self, user_id: str, *, account_id: str | None = None) -> Plan:
        """The plan whose limits apply to the account now."""
        return get_state().quotas.effective_plan(self._account(user_id, account_id))[1]

    def change_plan(
        self, user_id: str, plan_code: str, months: int = 1, *, account_id: str | None = None
    ) -> Subscription:
        """Put an account on a plan for 1 or 12 months, without payment (admin, CLI, confirmed
        payments). For a team, ``user_id`` must be an owner or admin, and the plan must have a
        seat for every member (``TooManyMembersForPlan`` lists them)."""
        state = get_state()
        account = self._account(user_id, account_id, manage=True)
        state.accounts.require_seats_for(account, state.runtime.catalog.plan(plan_code))
        return state.subscriptions.change_plan(account, plan_code, months)

    def start_trial(
        self, user_id: str, plan_code: str, days: int, *, account_id: str | None = None
    ) -> Subscription:
        account = self._account(user_id, account_id, manage=True)
        return get_state().subscriptions.start_trial(account, plan_code, days)

    def cancel(self, user_id: str, *, account_id: str | None = None) -> Subscription:
        """Cancel at the end of the paid period; access is kept until then."""
        account = self._account(user_id, account_id, manage=True)
        return get_state().subscriptions.cancel(account)

    def resume(self, user_id: str, *, account_id: str | None = None) -> Subscription:
        account = self._account(user_id, account_id, manage=True)
        return get_state().subscriptions.resume(account)

    def expire_lapsed(self) -> int:
        """Catch up stored statuses: end lapsed subscriptions and start free ones. Returns the count."""
        return get_state().subscriptions.expire_lapsed()

    # -- maintenance ---------------------------------------------------------------------------

    def run_maintenance(
        self, now: datetime | None = None, *, dry_run: bool = False
    ) -> MaintenanceReport:
        """Run maintenance now (at ``now``, the clock's time by default): end lapsed, cancelled
        and trial subscriptions and start free ones, delete expired idempotency keys and what is
        older than BILLING_RETENTION_DAYS, claim and announce the notifications due and send the
        emails waiting. With ``dry_run``, change nothing and report what would change."""
        return get_state().maintenance.run(now, dry_run=dry_run)

    # -- quotas, features, gauges (the guards' checks, for code that is not a view) -------------

    def allowance(self, user_id: str, metric: str, *, account_id: str | None = None) -> Allowance:
        """The account's pool of ``metric`` now."""
        return get_state().quotas.allowance(self._account(user_id, account_id), metric)

    def allowances(self, user_id: str, *, account_id: str | None = None) -> dict[str, Allowance]:
        return get_state().quotas.allowances(self._account(user_id, account_id))

    def consume(
        self,
        user_id: str,
        metric: str,
        amount: int = 1,
        *,
        account_id: str | None = None,
        idempotency_key: str | None = None,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reservation:
        """Charge a periodic metric now, or raise ``QuotaExceeded`` having charged nothing. With
        ``account_id``, from that team's pool within the user's cap (the charge itself checks the
        membership)."""
        user_id = str(user_id)
        with refusals_noted():
            return get_state().quotas.reserve(
                account_id or personal_account_id(user_id),
                metric,
                amount,
                actor_user_id=user_id,
                idempotency_key=idempotency_key,
                resources=resources,
                metadata=metadata,
            )

    def release(self, reservation: Reservation) -> None:
        """Give back a charge whose work failed."""
        get_state().quotas.release(reservation)

    @contextmanager
    def charge(
        self,
        user_id: str,
        metric: str,
        amount: int = 1,
        *,
        account_id: str | None = None,
        idempotency_key: str | None = None,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Iterator[Reservation]:
        """Charge for the work in the ``with`` block; an exception in it gives the charge back."""
        reservation = self.consume(
            user_id,
            metric,
            amount,
            account_id=account_id,
            idempotency_key=idempotency_key,
            resources=resources,
            metadata=metadata,
        )
        try:
            yield reservation
        except BaseException:
            self.release(reservation)
            raise

    def has_feature(self, user_id: str, feature: str, *, account_id: str | None = None) -> bool:
        return get_state().quotas.has_feature(self._account(user_id, account_id), feature)

    def require_feature(self, user_id: str, feature: str, *, account_id: str | None = None) -> None:
        """Raise ``FeatureNotAvailable`` unless the account's plan includes ``feature``."""
        with refusals_noted():
            get_state().quotas.require_feature(self._account(user_id, account_id), feature)

    def capacity(self, user_id: str, metric: str, *, account_id: str | None = None) -> Allowance:
        return get_state().quotas.capacity(self._account(user_id, account_id), metric)

    def require_capacity(
        self, user_id: str, metric: str, amount: int = 1, *, account_id: str | None = None
    ) -> Allowance:
        """Raise ``QuotaExceeded`` unless ``amount`` more of a gauge fits under the plan's cap."""
        with refusals_noted():
            return get_state().quotas.require_capacity(
                self._account(user_id, account_id), metric, amount
            )

    # -- the activity feed ---------------------------------------------------------------------

    def record_activity(
        self,
        user_id: str,
        type: str,
        title: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> ActivityEvent:
        """Add an event of the host's own ("training run started") to the user's activity feed."""
        return get_state().activity.record(
            str(user_id), type, title, metadata, occurred_at=occurred_at
        )

    def activity(self, user_id: str, limit: int = 10) -> list[ActivityEvent]:
        """The user's latest activity within PROFILE_ACTIVITY_WINDOW_DAYS, newest first (uncached)."""
        return get_state().activity.latest(str(user_id), limit)

    # -- the database --------------------------------------------------------------------------

    def create_all(self) -> None:
        """Create the extension's tables (for hosts that use ``db.create_all()`` and no migrations,
        and for tests: next to ``db.create_all()``). Tables already there are left as they are."""
        from .services.tables import create_tables

        create_tables(get_state().runtime.engine)

    def drop_all(self) -> None:
        """Drop the extension's tables, and the version table of its migrations, as
        ``db.drop_all()`` drops the app's; the extension's cached reads are forgotten with them,
        and the plan rows are written again on next use.

        For tests on a database that outlives them (``db.drop_all()`` leaves the ``billing_*``
        tables, and with them every subscription and charge of the previous test)."""
        from .services.tables import drop_tables

        state = get_state()
        drop_tables(state.runtime.engine)
        state.runtime.cache.clear()
        state.plans.forget_seeded()

    def upgrade_database(self, revision: str = "head") -> None:
        """Apply the extension's migrations to the app's database."""
        from .migrate import upgrade

        upgrade(get_state().runtime.engine, revision)


def upgrade_with_host_migrations(context: AlembicEnvironment) -> None:
    """Apply the extension's migrations whenever the host's own ``flask db upgrade`` runs.

    For Flask-Migrate hosts whose deploy runs only their own upgrade: call it at the end of the
    host's ``migrations/env.py``, after the host's revisions ran (outside their transaction)::

        if context.is_offline_mode():
            run_migrations_offline()
        else:
            run_migrations_online()
            upgrade_with_host_migrations(context)

    It brings the ``billing_*`` tables to their head, in their own transaction and under their
    own version table and lock (exactly ``flask billing db upgrade``), when the host's command
    takes the host's history to its head; a host downgrade or an upgrade to an older revision
    leaves them as they are, and so do ``flask db migrate``, ``check`` and ``current``. With
    ``--sql`` nothing of the extension is written: its script comes from ``flask billing db
    upgrade`` against a database.

    It also guards the host's ``flask db migrate`` and ``flask db check``: if their autogenerate
    would touch the ``billing_*`` tables (an ``env.py`` that does not pass Flask-Migrate's
    ``configure_args``, so that ``exclude_billing_tables`` is ignored), the command fails with
    the fix, before a revision that drops the extension's tables is written.
    """
    from .migrate import (
        migrating_to_head,
        refuse_billing_changes_in_host_autogenerate,
        upgrade_inside_host_command,
    )

    if context.is_offline_mode():
        return
    refuse_billing_changes_in_host_autogenerate(context)
    if not migrating_to_head(context):
        return
    upgrade_inside_host_command(context, get_state().runtime.engine)


def _host_session_ender(db: SQLAlchemy) -> Callable[[BaseException | None], None]:
    """A teardown that ends the host's ``db.session`` at the end of each app context, as
    Flask-SQLAlchemy's does, except that a database gone meanwhile is no error.

    Closing a session rolls its transaction back; on a connection the database dropped (a
    restart) that raises, in the teardown, after the request was answered and charged: the
    client would get a bare 500 for a request that succeeded. The session's connections are
    invalidated instead (closed without a word to the database), and the fault is logged.
    """

    def end_host_session(error: BaseException | None) -> None:
        session = db.session
        try:
            session.remove()
        except DATABASE_FAULTS as fault:
            if not is_database_fault(fault):
                raise
            log.warning("the host's session ended on a database that went away", exc_info=True)
            # Should invalidating fail too, the session is as good as closed: only the
            # registry keeps it, and it is dropped next.
            if session.registry.has():
                with suppress(*DATABASE_FAULTS):
                    session.registry().invalidate()
            session.registry.clear()

    return end_host_session


def _start_scheduler_on_first_request(app: Flask, state: BillingState) -> None:
    """Start the app's maintenance scheduler in the process that serves its first request (see
    ``services.scheduler`` for why not at ``init_app``)."""
    scheduler = state.scheduler

    def start_scheduler() -> None:
        scheduler.start_in_background()

    app.before_request(start_scheduler)
