"""Where each app keeps the extension's state, and how every face finds it.

A leaf of the package: it imports no face and no service when it runs (the services are named for
type checking only), so the guards, the API, the CLI and any new face can import ``get_state``
without joining an import cycle. ``extension.py`` builds the state in ``init_app``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app, has_app_context

from .errors import NotInitialisedError

if TYPE_CHECKING:
    from .services.accounts import AccountService
    from .services.activity import ActivityService
    from .services.catalog_sync import CatalogSync
    from .services.charge_returns import ChargeReturnService
    from .services.idempotency import IdempotencyService
    from .services.leases import JobLeases
    from .services.mail import MailService
    from .services.maintenance import MaintenanceService
    from .services.notifications import NotificationService
    from .services.payments import PaymentService
    from .services.plan_changes import PlanChangeService
    from .services.profiles import ProfileService
    from .services.quotas import QuotaService
    from .services.recurring import RecurringService
    from .services.reports import ReportService
    from .services.runtime import Runtime
    from .services.scheduler import MaintenanceScheduler
    from .services.subscriptions import SubscriptionService
    from .services.usage import UsageStatsService
    from .services.verification import VerificationService
    from .services.webhooks import WebhookService

EXTENSION_KEY = "profile_billing"
"""The key of the state in ``app.extensions``."""


@dataclass(frozen=True)
class BillingState:
    """Everything the extension keeps for one app: its runtime and its services."""

    runtime: Runtime
    plans: CatalogSync
    subscriptions: SubscriptionService
    quotas: QuotaService
    charge_returns: ChargeReturnService
    idempotency: IdempotencyService
    reports: ReportService
    usage: UsageStatsService
    payments: PaymentService
    plan_changes: PlanChangeService
    webhooks: WebhookService
    profiles: ProfileService
    activity: ActivityService
    notifications: NotificationService
    leases: JobLeases
    maintenance: MaintenanceService
    scheduler: MaintenanceScheduler
    mail: MailService
    recurring: RecurringService
    accounts: AccountService
    verification: VerificationService


def get_state(app: Flask | None = None) -> BillingState:
    """The extension's state for ``app`` (the current app by default), or a clear error."""
    if app is None:
        if not has_app_context():
            raise NotInitialisedError(
                "flask-profile-billing needs an application context: use `with app.app_context():`"
            )
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        state: BillingState = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise NotInitialisedError(
            f"flask-profile-billing is not initialised for the app {app.name!r}: "
            "call ProfileBilling.init_app(app) first"
        ) from None
    return state
