"""Payment providers and webhook signatures: plain Python, no Flask and no database.

The services that store payments and process webhooks are ``services.payments`` and
``services.webhooks``, deciding with ``domain.payments``; this package is
what a host app needs to plug a provider in (``BILLING_PAYMENT_PROVIDER``) and to sign test webhooks.
The built-in providers are in ``payments.stripe_provider`` and ``payments.yookassa_provider``, each
importing its provider's library (an optional extra), so they are not imported here.
"""

from .providers import (
    EVENT_TYPES,
    PAYMENT_CANCELLED,
    PAYMENT_CHARGED_BACK,
    PAYMENT_FAILED,
    PAYMENT_REFUNDED,
    PAYMENT_SUCCEEDED,
    RECURRING_CANCEL_SCHEDULED,
    RECURRING_ENDED,
    RECURRING_PAID,
    RECURRING_RESUMED,
    DeliveryHeaders,
    HmacWebhookVerifier,
    InvalidEvent,
    PaymentConfirmer,
    PaymentIntent,
    PaymentNotFound,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
    RecurringCanceller,
    RenewalCharge,
    SavedMethodCharger,
    SourceChecker,
    SubscriptionPrices,
    TestPaymentProvider,
    WebhookVerifier,
)
from .signatures import SIGNATURE_HEADER, InvalidSignature, sign, verify

__all__ = [
    "EVENT_TYPES",
    "PAYMENT_CANCELLED",
    "PAYMENT_CHARGED_BACK",
    "PAYMENT_FAILED",
    "PAYMENT_REFUNDED",
    "PAYMENT_SUCCEEDED",
    "RECURRING_CANCEL_SCHEDULED",
    "RECURRING_ENDED",
    "RECURRING_PAID",
    "RECURRING_RESUMED",
    "SIGNATURE_HEADER",
    "DeliveryHeaders",
    "HmacWebhookVerifier",
    "InvalidEvent",
    "InvalidSignature",
    "PaymentConfirmer",
    "PaymentIntent",
    "PaymentNotFound",
    "PaymentProvider",
    "ProviderEvent",
    "ProviderPayment",
    "RecurringCanceller",
    "RenewalCharge",
    "SavedMethodCharger",
    "SourceChecker",
    "SubscriptionPrices",
    "TestPaymentProvider",
    "WebhookVerifier",
    "sign",
    "verify",
]
