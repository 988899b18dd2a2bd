"""Exceptions a host app or route author may catch.

Refusals are werkzeug HTTP exceptions, so a host can customise them with ``@app.errorhandler(429)``
or ``@app.errorhandler(QuotaExceeded)``, as with Flask-Limiter's ``RateLimitExceeded``. Unhandled,
they answer in the extension's error shape::

    {"success": false, "error": "LIMIT_EXCEEDED", "message": "...", "details": {...}}
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    ServiceUnavailable,
    TooManyRequests,
    UnprocessableEntity,
)
from werkzeug.wrappers import Response

from .domain.limits import Allowance


class BillingError(Exception):
    """Base class of the extension's own errors that are not HTTP refusals."""


class BillingConfigError(BillingError):
    """The extension is configured wrongly (an unknown period rule, a catalog without a default plan...)."""


class NotInitialisedError(BillingError, RuntimeError):
    """``ProfileBilling.init_app`` was not called for the current app."""


class UnknownUserError(BillingError, LookupError):
    """The host app does not know this user id."""


class BillingHTTPError(HTTPException):
    """An HTTP answer in the extension's error shape: a code, a human message and details."""

    error_code = "ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(description=message)
        self.message = message

    def details(self) -> dict[str, Any]:
        return {}

    def headers(self) -> dict[str, str]:
        return {}

    def get_response(
        self,
        environ: Any = None,
        scope: dict[str, Any] | None = None,
    ) -> Response:
        from .responses import error_response  # the face layer renders; errors only describe

        return error_response(self)


class ApiError(BillingHTTPError):
    """Any other answer of the JSON API in the error shape (401, 402, 404, 409, 422 ...)."""

    def __init__(
        self, status: int, error_code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = status
        self.error_code = error_code
        self._details = details or {}

    def details(self) -> dict[str, Any]:
        return self._details


class InvalidRequest(BillingHTTPError, BadRequest):
    """Malformed input to a guarded route (an over-long ``Idempotency-Key``...)."""

    error_code = "INVALID_REQUEST"

    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.fields = fields

    def details(self) -> dict[str, Any]:
        return {"fields": self.fields}


class QuotaExceeded(BillingHTTPError, TooManyRequests):
    """The user's plan does not allow this much more of a metric (HTTP 429, ``LIMIT_EXCEEDED``)."""

    error_code = "LIMIT_EXCEEDED"

    def __init__(self, message: str, allowance: Allowance, now: datetime | None = None) -> None:
        super().__init__(message)
        self.allowance = allowance
        # Seconds until the period resets, sent as Retry-After; gauges never reset by themselves.
        self.retry_after_seconds: int | None = None
        if allowance.resets_at is not None and now is not None:
            seconds = math.ceil((allowance.resets_at - now).total_seconds())
            self.retry_after_seconds = max(seconds, 0)

    @property
    def metric(self) -> str:
        return self.allowance.metric

    def details(self) -> dict[str, Any]:
        allowance = self.allowance
        return {
            "metric": allowance.metric,
            "limit": allowance.limit,
            "used": allowance.used,
            "remaining": allowance.remaining,
            "resets_at": allowance.resets_at.isoformat() if allowance.resets_at else None,
        }

    def headers(self) -> dict[str, str]:
        from .responses import quota_headers

        headers = quota_headers(self.allowance)
        if self.retry_after_seconds is not None:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


class FeatureNotAvailable(BillingHTTPError, Forbidden):
    """The user's plan does not include a feature (HTTP 403, ``FEATURE_NOT_AVAILABLE``)."""

    error_code = "FEATURE_NOT_AVAILABLE"

    def __init__(self, message: str, feature: str, plan_code: str) -> None:
        super().__init__(message)
        self.feature = feature
        self.plan_code = plan_code

    def details(self) -> dict[str, Any]:
        return {"feature": self.feature, "plan": self.plan_code}


class IdempotencyConflict(BillingHTTPError, Conflict):
    """A repeat of an ``Idempotency-Key`` that cannot be answered with a stored response (HTTP 409):
    the first request with the key still runs (``IDEMPOTENCY_KEY_IN_USE``, with ``Retry-After``), or
    its response was not kept (``IDEMPOTENT_RESPONSE_NOT_STORED``). The view did not run again."""

    def __init__(
        self, error_code: str, message: str, *, retry_after_seconds: int | None = None
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


class IdempotencyKeyReused(BillingHTTPError, UnprocessableEntity):
    """An ``Idempotency-Key`` repeated with another method, path or body (HTTP 422,
    ``IDEMPOTENCY_KEY_REUSED``): a key names one request. Nothing ran and nothing was charged."""

    error_code = "IDEMPOTENCY_KEY_REUSED"


class BillingUnavailable(BillingHTTPError, ServiceUnavailable):
    """The database (or another service the answer needs) is unavailable right now (HTTP 503,
    ``SERVICE_UNAVAILABLE``, with ``Retry-After``). Nothing was charged; retrying later is safe."""

    error_code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


__all__ = [
    "ApiError",
    "BillingConfigError",
    "BillingError",
    "BillingHTTPError",
    "BillingUnavailable",
    "FeatureNotAvailable",
    "IdempotencyConflict",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "NotInitialisedError",
    "QuotaExceeded",
    "SubscriptionConflictError",
    "UnknownUserError",
]


class SubscriptionConflictError(BillingError, BillingHTTPError, Conflict):
    """The subscription changed under concurrent writes more often than retrying allows: nothing
    was changed or charged, and retrying is safe (HTTP 409, ``SUBSCRIPTION_CONFLICT``, when it
    reaches a request)."""

    error_code = "SUBSCRIPTION_CONFLICT"
