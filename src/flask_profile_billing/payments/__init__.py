"""Payment providers and webhook signatures: plain Python, no Flask and no database.

The service that stores payments and processes webhooks is ``services.payments``; this package is
what a host app needs to plug a provider in (``BILLING_PAYMENT_PROVIDER``) and to sign test webhooks.
"""

from .providers import (
    EVENT_TYPES,
    PAYMENT_CANCELLED,
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    InvalidEvent,
    PaymentIntent,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
    TestPaymentProvider,
)
from .signatures import SIGNATURE_HEADER, InvalidSignature, sign, verify

__all__ = [
    "EVENT_TYPES",
    "PAYMENT_CANCELLED",
    "PAYMENT_FAILED",
    "PAYMENT_SUCCEEDED",
    "SIGNATURE_HEADER",
    "InvalidEvent",
    "InvalidSignature",
    "PaymentIntent",
    "PaymentProvider",
    "ProviderEvent",
    "ProviderPayment",
    "TestPaymentProvider",
    "sign",
    "verify",
]
