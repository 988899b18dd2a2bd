"""flask-profile-billing: subscription plans, quotas, feature flags and usage logging for Flask.

Quick use::

    billing = ProfileBilling(app, db)

    @app.post("/analyze")
    @login_required
    @requires_quota("analysis")
    def analyze(): ...
"""

from . import signals
from ._version import __version__
from .domain.catalog import Catalog, Metric, MetricKind, Plan
from .domain.limits import Allowance
from .domain.periods import Period, PeriodRule
from .domain.subscriptions import Subscription, SubscriptionStatus
from .errors import (
    AccountPermissionError,
    ApiError,
    BillingConfigError,
    BillingError,
    BillingUnavailable,
    FeatureNotAvailable,
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    InvitationError,
    MembershipError,
    NotCancellable,
    NotInitialisedError,
    NotResumable,
    PaymentProviderError,
    PaymentRequired,
    QuotaExceeded,
    SeatsExhausted,
    SubscriptionConflictError,
    TooManyMembersForPlan,
    TooManyPendingPayments,
    UnknownAccountError,
    UnknownMetricError,
    UnknownPlanError,
    UnknownUserError,
    WebhookRefused,
)
from .extension import ProfileBilling, upgrade_with_host_migrations
from .guards import requires_capacity, requires_feature, requires_quota
from .migrate import exclude_billing_tables
from .payments import (
    InvalidEvent,
    PaymentIntent,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
    TestPaymentProvider,
)
from .responses import answer_database_faults, database_fault_response, with_security_headers
from .services.activity import ActivityEvent
from .services.email_senders import EmailSender, OutgoingEmail
from .services.quotas import Reservation
from .store.models import (
    Base,
    PlanRow,
    ProfileRow,
    SubscriptionRow,
    UsageCounterRow,
    UsageEventRow,
)

metadata = Base.metadata


__all__ = [
    "AccountPermissionError",
    "ActivityEvent",
    "Allowance",
    "ApiError",
    "BillingConfigError",
    "BillingError",
    "BillingUnavailable",
    "Catalog",
    "EmailSender",
    "FeatureNotAvailable",
    "IdempotencyConflict",
    "IdempotencyKeyReused",
    "InvalidEvent",
    "InvalidRequest",
    "InvitationError",
    "MembershipError",
    "Metric",
    "MetricKind",
    "NotCancellable",
    "NotInitialisedError",
    "NotResumable",
    "OutgoingEmail",
    "PaymentIntent",
    "PaymentProvider",
    "PaymentProviderError",
    "PaymentRequired",
    "Period",
    "PeriodRule",
    "Plan",
    "PlanRow",
    "ProfileBilling",
    "ProfileRow",
    "ProviderEvent",
    "ProviderPayment",
    "QuotaExceeded",
    "Reservation",
    "SeatsExhausted",
    "Subscription",
    "SubscriptionConflictError",
    "SubscriptionRow",
    "SubscriptionStatus",
    "TestPaymentProvider",
    "TooManyMembersForPlan",
    "TooManyPendingPayments",
    "UnknownAccountError",
    "UnknownMetricError",
    "UnknownPlanError",
    "UnknownUserError",
    "UsageCounterRow",
    "UsageEventRow",
    "WebhookRefused",
    "__version__",
    "answer_database_faults",
    "database_fault_response",
    "exclude_billing_tables",
    "metadata",
    "requires_capacity",
    "requires_feature",
    "requires_quota",
    "signals",
    "upgrade_with_host_migrations",
    "with_security_headers",
]
