"""The errors the extension raises on purpose, each with a stable code.

Pure Python: the domain and the services raise these, and only the web edge
(``flask_profile_billing.responses``) decides which HTTP status a code is answered with, from one
table. Clients and logs key on ``error_code``; the message is for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class BillingError(Exception):
    """Base of every error the extension raises on purpose."""

    error_code = "BILLING_ERROR"

    def __init__(
        self,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        error_code: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self._details = dict(details or {})
        if error_code is not None:
            self.error_code = error_code
        self.retry_after_seconds = retry_after_seconds

    def details(self) -> dict[str, Any]:
        """What a client may need besides the message (the fields that were invalid...)."""
        return self._details

    def headers(self) -> dict[str, str]:
        """Headers that belong with the answer; ``Retry-After`` when retrying later helps."""
        if self.retry_after_seconds is None:
            return {}
        return {"Retry-After": str(self.retry_after_seconds)}


class BillingConfigError(BillingError):
    """The extension is configured wrongly (an unknown period rule, a catalog without a default
    plan...): raised at ``init_app`` where it can be, so a host finds out at start-up."""

    error_code = "CONFIGURATION_ERROR"


class UnknownPlanError(BillingError, LookupError):
    """No plan of that code in the catalog."""

    error_code = "UNKNOWN_PLAN"


class UnknownMetricError(BillingError, LookupError):
    """No metric of that name in the catalog."""

    error_code = "UNKNOWN_METRIC"


class NotCancellable(BillingError):
    """A cancel of a plan that never lapses: there is no end to cancel at."""

    error_code = "NOT_CANCELLABLE"


class NotResumable(BillingError):
    """A resume of a subscription that is not cancelled."""

    error_code = "NOT_RESUMABLE"


class SubscriptionConflictError(BillingError):
    """The subscription changed under concurrent writes more often than retrying allows: nothing
    was changed or charged, and retrying is safe."""

    error_code = "SUBSCRIPTION_CONFLICT"
