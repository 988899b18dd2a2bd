"""Exceptions a host app or route author may catch, each with a stable ``error_code``.

Every one is a ``BillingError``. Which HTTP status a code is answered with is decided in one place,
the table of ``flask_profile_billing.responses``; every answer has the extension's error shape::

    {"success": false, "error": "LIMIT_EXCEEDED", "message": "...", "details": {...}}

The two refusals of the guards are also werkzeug HTTP exceptions, so a host can customise them with
``@app.errorhandler(429)`` or ``@app.errorhandler(QuotaExceeded)``, as with Flask-Limiter's
``RateLimitExceeded``. Their ``headers()`` (``Retry-After`` and the quota headers) are part of the
answer whoever renders it: ``get_response()`` and ``get_headers()`` include them, and the extension
adds those a host's handler left out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.exceptions import Forbidden, TooManyRequests

from .domain.accounts import (
    AccountPermissionError,
    InvitationError,
    MembershipError,
    SeatsExhausted,
    TooManyMembersForPlan,
    UnknownAccountError,
)
from .domain.errors import (
    BillingConfigError,
    BillingError,
    NotCancellable,
    NotResumable,
    SubscriptionConflictError,
    UnknownMetricError,
    UnknownPlanError,
)
from .domain.limits import Allowance
from .domain.periods import seconds_until

# Where a request keeps the refusal it raised (on ``flask.g``), so that the extension can add the
# refusal's headers to the answer a host's own error handler made of it.
REFUSAL_ATTRIBUTE = "_billing_refusal"

QUOTA_LIMIT_HEADER = "X-Quota-Limit"
QUOTA_REMAINING_HEADER = "X-Quota-Remaining"
QUOTA_RESET_HEADER = "X-Quota-Reset"


def quota_headers(allowance: Allowance) -> dict[str, str]:
    """Limit, remaining and reset (Unix time) of a limited metric, like Flask-Limiter's X-RateLimit-*."""
    if allowance.limit is None:
        return {}
    headers = {
        QUOTA_LIMIT_HEADER: str(allowance.limit),
        QUOTA_REMAINING_HEADER: str(allowance.remaining),
    }
    if allowance.resets_at is not None:
        headers[QUOTA_RESET_HEADER] = str(int(allowance.resets_at.timestamp()))
    return headers


class NotInitialisedError(BillingError, RuntimeError):
    """``ProfileBilling.init_app`` was not called for the current app, or there is no app context."""

    error_code = "NOT_INITIALISED"


class UnknownUserError(BillingError, LookupError):
    """The host app does not know this user id."""

    error_code = "UNKNOWN_USER"


class ApiError(BillingError):
    """An answer of the JSON API in the error shape that no more specific class names
    (``UNAUTHORIZED``, ``VALIDATION_ERROR``, ``UNSUPPORTED_MEDIA_TYPE``...)."""

    def __init__(
        self, error_code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details, error_code=error_code)


class InvalidRequest(BillingError):
    """Malformed input to a guarded route (an over-long ``Idempotency-Key``...)."""

    error_code = "INVALID_REQUEST"

    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message, {"fields": fields})
        self.fields = fields


class QuotaExceeded(BillingError, TooManyRequests):
    """The user's plan does not allow this much more of a metric (``LIMIT_EXCEEDED``)."""

    error_code = "LIMIT_EXCEEDED"

    def __init__(
        self,
        message: str,
        allowance: Allowance,
        now: datetime | None = None,
        *,
        scope: str | None = None,
        pool: Allowance | None = None,
        member: Allowance | None = None,
    ) -> None:
        # Seconds until the period resets, sent as Retry-After; gauges never reset by themselves.
        retry_after: int | None = None
        if allowance.resets_at is not None and now is not None:
            retry_after = seconds_until(allowance.resets_at, now)
        # BillingError's initialiser passes the message on to werkzeug's as the description.
        super().__init__(message, retry_after_seconds=retry_after)
        self.allowance = allowance
        self.scope = scope
        """A team member's refusal: ``"pool"`` (the team's plan limit) or ``"member"`` (the
        member's cap); None for a personal account."""
        self.pool = pool
        self.member = member

    @property
    def metric(self) -> str:
        return self.allowance.metric

    def headers(self) -> dict[str, str]:
        """``Retry-After`` (when the period resets) and the quota headers."""
        return {**quota_headers(self.allowance), **super().headers()}

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Werkzeug's headers with the refusal's own: ``get_response()``, and Flask's answer for
        a host's handler that returns the exception itself, keep them."""
        return [*super().get_headers(environ, scope), *self.headers().items()]

    def details(self) -> dict[str, Any]:
        allowance = self.allowance
        return {
            "metric": allowance.metric,
            "limit": allowance.limit,
            "used": allowance.used,
            "remaining": allowance.remaining,
            "resets_at": allowance.resets_at.isoformat() if allowance.resets_at else None,
            **self._team_details(),
        }

    def _team_details(self) -> dict[str, Any]:
        if self.scope is None or self.pool is None or self.member is None:
            return {}
        return {
            "scope": self.scope,
            "pool": {
                "limit": self.pool.limit,
                "used": self.pool.used,
                "remaining": self.pool.remaining,
            },
            "member": {
                "cap": self.member.limit,
                "used": self.member.used,
                "remaining": self.member.remaining,
            },
        }


class FeatureNotAvailable(BillingError, Forbidden):
    """The user's plan does not include a feature (``FEATURE_NOT_AVAILABLE``)."""

    error_code = "FEATURE_NOT_AVAILABLE"

    def __init__(self, message: str, feature: str, plan_code: str) -> None:
        super().__init__(message, {"feature": feature, "plan": plan_code})
        self.feature = feature
        self.plan_code = plan_code

    def get_headers(self, environ: Any = None, scope: Any = None) -> list[tuple[str, str]]:
        """Werkzeug's headers with the refusal's own: ``get_response()``, and Flask's answer for
        a host's handler that returns the exception itself, keep them."""
        return [*super().get_headers(environ, scope), *self.headers().items()]


class IdempotencyConflict(BillingError):
    """A repeat of an ``Idempotency-Key`` that cannot be answered with a stored response: the first
    request with the key still runs (``IDEMPOTENCY_KEY_IN_USE``, with ``Retry-After``), or its
    response was not kept (``IDEMPOTENT_RESPONSE_NOT_STORED``). The view did not run again."""

    error_code = "IDEMPOTENCY_KEY_IN_USE"


class IdempotencyKeyReused(BillingError):
    """An ``Idempotency-Key`` repeated with another method, path or body
    (``IDEMPOTENCY_KEY_REUSED``): a key names one request. Nothing ran and nothing was charged."""

    error_code = "IDEMPOTENCY_KEY_REUSED"


class BillingUnavailable(BillingError):
    """The database is unavailable right now (``SERVICE_UNAVAILABLE``, with ``Retry-After``).
    Nothing was charged; retrying later is safe."""

    error_code = "SERVICE_UNAVAILABLE"


class PaymentRequired(BillingError):
    """A paid plan was asked for: it takes a payment (``PAYMENT_REQUIRED``)."""

    error_code = "PAYMENT_REQUIRED"


class TooManyPendingPayments(BillingError):
    """The user already has the most payments pending that one may (``TOO_MANY_PENDING_PAYMENTS``)."""

    error_code = "TOO_MANY_PENDING_PAYMENTS"


class PaymentProviderError(BillingError):
    """The payment provider failed to start a payment (``PAYMENT_PROVIDER_ERROR``)."""

    error_code = "PAYMENT_PROVIDER_ERROR"


class WebhookRefused(BillingError):
    """A webhook delivery that is not processed: webhooks are off (``WEBHOOKS_DISABLED``), the
    provider is unknown (``UNKNOWN_PROVIDER``), the address is not the provider's
    (``UNTRUSTED_SOURCE``), the signature is wrong (``INVALID_SIGNATURE``) or
    the signed body is not an event (``INVALID_JSON``, ``INVALID_EVENT``)."""


__all__ = [
    "AccountPermissionError",
    "ApiError",
    "BillingConfigError",
    "BillingError",
    "BillingUnavailable",
    "FeatureNotAvailable",
    "IdempotencyConflict",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "InvitationError",
    "MembershipError",
    "NotCancellable",
    "NotInitialisedError",
    "NotResumable",
    "PaymentProviderError",
    "PaymentRequired",
    "QuotaExceeded",
    "SeatsExhausted",
    "SubscriptionConflictError",
    "TooManyMembersForPlan",
    "TooManyPendingPayments",
    "UnknownAccountError",
    "UnknownMetricError",
    "UnknownPlanError",
    "UnknownUserError",
    "WebhookRefused",
]
