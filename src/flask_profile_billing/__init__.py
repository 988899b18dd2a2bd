"""flask-profile-billing: subscription plans, quotas, feature flags and usage logging for Flask.

Quick use::

    billing = ProfileBilling(app, db)

    @app.post("/analyze")
    @login_required
    @requires_quota("analysis")
    def analyze(): ...
"""

from . import signals
from .domain.catalog import Catalog, Metric, MetricKind, Plan
from .domain.limits import Allowance
from .domain.periods import Period, PeriodRule
from .domain.subscriptions import Subscription, SubscriptionStatus
from .errors import (
    ApiError,
    BillingConfigError,
    BillingError,
    BillingUnavailable,
    FeatureNotAvailable,
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    NotInitialisedError,
    QuotaExceeded,
    SubscriptionConflictError,
    UnknownUserError,
)
from .extension import ProfileBilling
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
from .services.activity import ActivityEvent
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

__version__ = "0.1.0"

__all__ = [
    "ActivityEvent",
    "Allowance",
    "ApiError",
    "BillingConfigError",
    "BillingError",
    "BillingUnavailable",
    "Catalog",
    "FeatureNotAvailable",
    "IdempotencyConflict",
    "IdempotencyKeyReused",
    "InvalidEvent",
    "InvalidRequest",
    "Metric",
    "MetricKind",
    "NotInitialisedError",
    "PaymentIntent",
    "PaymentProvider",
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
    "Subscription",
    "SubscriptionConflictError",
    "SubscriptionRow",
    "SubscriptionStatus",
    "TestPaymentProvider",
    "UnknownUserError",
    "UsageCounterRow",
    "UsageEventRow",
    "__version__",
    "exclude_billing_tables",
    "metadata",
    "requires_capacity",
    "requires_feature",
    "requires_quota",
    "signals",
]
