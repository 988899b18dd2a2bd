"""Every configuration key of the extension, its default, and the typed view the code reads.

Keys live in one place so that ``init_app`` can ``setdefault`` them and the configuration reference in
``docs/configuration.md`` can be checked against this table by the tests.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .domain.catalog import Catalog, MetricKind
from .domain.periods import PeriodRule, parse_rule
from .errors import BillingConfigError

Clock = Callable[[], datetime]

DEFAULTS: Mapping[str, Any] = {
    # The plan catalog: None for the default plans, a dict, or a path to a JSON/YAML file.
    "BILLING_PLANS": None,
    # The currency (ISO 4217 code) of the default catalog, and of configured plans naming none.
    "BILLING_CURRENCY": "RUB",
    # How billing periods are cut: calendar_month, rolling_30_days or anniversary_month.
    "BILLING_PERIOD_RULE": "calendar_month",
    # The time zone in which calendar months begin (IANA name).
    "BILLING_PERIOD_TIMEZONE": "UTC",
    # Insert the catalog's plans that the database lacks on first use (existing rows are left alone).
    "BILLING_AUTO_SEED_PLANS": True,
    # Charge a guarded request that raised or answered with an error status (>= 400).
    "BILLING_CHARGE_FAILED_REQUESTS": False,
    # The request header that makes a retried request cost once.
    "BILLING_IDEMPOTENCY_HEADER": "Idempotency-Key",
    # How long the first response of an idempotency key is kept and replayed (seconds).
    "BILLING_IDEMPOTENCY_TTL_SECONDS": 86400,
    # How long a key stays locked after its running request last renewed it (renewed three times
    # per period while the view runs); then a repeat takes it over, taking the charge of a worker
    # that died mid-request back first (seconds).
    "BILLING_IDEMPOTENCY_LOCK_SECONDS": 300,
    # Responses larger than this are not stored: a repeat then gets 409 and nothing runs again.
    "BILLING_IDEMPOTENCY_MAX_RESPONSE_BYTES": 65536,
    # Send X-Quota-Limit / X-Quota-Remaining / X-Quota-Reset on guarded responses.
    "BILLING_HEADERS_ENABLED": True,
    # The share of a limit at which the quota_low signal is sent once per period.
    "BILLING_QUOTA_LOW_THRESHOLD": 0.8,
    # Name of the click group added to ``flask``.
    "BILLING_CLI_GROUP": "billing",
    # A callable returning the current aware UTC time; None for the system clock (tests set it).
    "BILLING_CLOCK": None,
    # A callable user_id -> user or None; None uses Flask-Login's registered user_loader.
    "BILLING_USER_LOADER": None,
    # A callable str -> user or None finding a user by email (or any identifier the host likes),
    # for the CLI's grant, cancel and resume when their argument is not a known user id.
    "BILLING_USER_LOOKUP": None,
    # The JSON API: each blueprint can be switched off, renamed and moved.
    "BILLING_SUBSCRIPTION_API_ENABLED": True,
    "BILLING_SUBSCRIPTION_API_PREFIX": "/api/subscription",
    "BILLING_SUBSCRIPTION_API_NAME": "billing_subscription_api",
    "BILLING_PROFILE_API_ENABLED": True,
    "BILLING_PROFILE_API_PREFIX": "/api/profile",
    "BILLING_PROFILE_API_NAME": "billing_profile_api",
    "BILLING_API_ENABLED": True,
    "BILLING_API_PREFIX": "/api/billing",
    "BILLING_API_NAME": "billing_api",
    # The accounts API: /accounts/... (teams, members, invitations, caps) and /invitations/accept
    # under this prefix.
    "BILLING_ACCOUNTS_API_ENABLED": True,
    "BILLING_ACCOUNTS_API_PREFIX": "/api",
    "BILLING_ACCOUNTS_API_NAME": "billing_accounts_api",
    # Require a CSRF token (X-CSRFToken header) on writes authenticated by the session cookie.
    "BILLING_CSRF_ENABLED": True,
    # Flask-Caching backend of the profile and activity caches: SimpleCache for one process,
    # RedisCache (with BILLING_CACHE_REDIS_URL) for several.
    "BILLING_CACHE_TYPE": "SimpleCache",
    "BILLING_CACHE_REDIS_URL": None,
    "BILLING_CACHE_KEY_PREFIX": "billing:",
    # Socket timeouts of the Redis cache (seconds): a cache that hangs costs a request this much.
    "BILLING_CACHE_SOCKET_TIMEOUT": 0.25,
    # After a cache failure the cache is bypassed this long (seconds) before it is tried again.
    "BILLING_CACHE_RETRY_SECONDS": 5,
    # Retry-After (seconds) of the 503 answered while the database is unavailable.
    "BILLING_UNAVAILABLE_RETRY_AFTER": 5,
    # Seconds a cached profile read lives if nothing invalidates it first.
    "BILLING_PROFILE_CACHE_SECONDS": 300,
    # The periodic metric whose quota the profile shows as `quota` (the others are under `quotas`);
    # None for the catalog's first periodic metric.
    "BILLING_PRIMARY_METRIC": None,
    # A callable user -> dict with email, first_name, role, created_at; None reads attributes.
    "BILLING_USER_INFO": None,
    # The payment provider that takes payments: a PaymentProvider instance, or the name of a built-in
    # one ("stripe", "yookassa") set up by its keys below; None: payments are "coming soon".
    "BILLING_PAYMENT_PROVIDER": None,
    # More providers (instances or built-in names) whose webhooks are accepted, each at its own URL:
    # a provider you are moving away from settles the payments started with it.
    "BILLING_PAYMENT_PROVIDERS": (),
    # Where a provider sends the user back after paying, and after giving up (absolute URLs);
    # None: the profile page (the cancel URL: the return URL).
    "BILLING_PAYMENT_RETURN_URL": None,
    "BILLING_PAYMENT_CANCEL_URL": None,
    # Stripe: the secret API key and the webhook endpoint's signing secret (read from the
    # environment variable of the same name when not in the config), and the signature tolerance.
    "BILLING_STRIPE_SECRET_KEY": None,
    "BILLING_STRIPE_WEBHOOK_SECRET": None,
    "BILLING_STRIPE_WEBHOOK_TOLERANCE_SECONDS": 300,
    # Stripe subscriptions: plan code -> {"monthly": price id, "yearly": price id}; a plan and
    # cadence with a price here is sold as a Stripe subscription, the others as one-off periods.
    "BILLING_STRIPE_PRICES": {},
    # YooKassa: the shop id and secret key (environment fallback as for Stripe), the VAT code of
    # the receipt (None: no receipt is sent), and whether notifications are accepted only from
    # YooKassa's published networks.
    "BILLING_YOOKASSA_SHOP_ID": None,
    "BILLING_YOOKASSA_SECRET_KEY": None,
    "BILLING_YOOKASSA_RECEIPT_VAT_CODE": None,
    "BILLING_YOOKASSA_TRUSTED_NETWORKS_ONLY": False,
    # YooKassa renewals: save the payment method of each payment (the shop needs autopayments
    # enabled by YooKassa) and charge it shortly before the paid period ends.
    "BILLING_YOOKASSA_SAVE_PAYMENT_METHOD": False,
    # How long before the end of the paid period maintenance charges a saved payment method.
    "BILLING_RENEWAL_LEAD_HOURS": 24,
    # After a declined renewal the period is extended this many days, once; then the free plan.
    "BILLING_RENEWAL_GRACE_DAYS": 3,
    # What a refund or chargeback of a granted payment does to the period it bought:
    # "immediately" (back to the free plan now) or "at_period_end" (cancelled, kept until its end).
    "BILLING_REFUND_ENDS_PERIOD": "immediately",
    # Shared secret of the webhook signatures, and how old a signed timestamp may be (seconds).
    "BILLING_WEBHOOK_SECRET": None,
    "BILLING_WEBHOOK_TOLERANCE_SECONDS": 300,
    # How many payments a user may have pending at once; one more answers 429.
    "BILLING_MAX_PENDING_PAYMENTS": 5,
    # The HTML refusal page: a template of the host's that it extends (filling its `title` and
    # `content` blocks); None for the extension's own standalone page.
    "BILLING_BASE_TEMPLATE": None,
    # Where the page's "Go back" link leads when the referrer is not of the app's own origin.
    "BILLING_REFUSAL_BACK_URL": "/",
    # The Content-Security-Policy of the extension's pages (profile, refusals): None for the
    # strict policy on the extension's own base template and none inside BILLING_BASE_TEMPLATE
    # (the host's layout, the host's policy); False for none; True for the strict one always; a
    # dict of directive -> sources for the strict one with those sources added, always.
    "BILLING_CONTENT_SECURITY_POLICY": None,
    # The directives that get the request's nonce when a template called csp_nonce().
    "BILLING_CONTENT_SECURITY_POLICY_NONCE_IN": ("script-src", "style-src"),
    # The profile page (login required): switched off, renamed and moved like the API blueprints.
    "BILLING_PROFILE_PAGE_ENABLED": True,
    "BILLING_PROFILE_PAGE_PREFIX": "/profile",
    "BILLING_PROFILE_PAGE_NAME": "billing_profile_page",
    # The template the page renders; it extends BILLING_BASE_TEMPLATE like the refusal page.
    "BILLING_PROFILE_TEMPLATE": "profile_billing/profile.html",
    # The locale of the extension's pages ("ru"); None follows the host's Flask-Babel locale
    # selector, and English without Flask-Babel.
    "BILLING_LOCALE": None,
    # The low-quota banner shows when what is left of the primary metric is at most this percent
    # of its limit, or at most this many.
    "BILLING_LOW_QUOTA_BANNER_PERCENT": 30,
    "BILLING_LOW_QUOTA_BANNER_REMAINING": 3,
    # Maintenance: usage events, past counters, activity and notifications older than this many
    # days are deleted by maintenance (the daily totals that statistics read are kept); None
    # keeps them all.
    "BILLING_RETENTION_DAYS": None,
    # Rows one maintenance batch (one transaction) handles.
    "BILLING_MAINTENANCE_BATCH_SIZE": 1000,
    # Run maintenance in a background thread of each process that serves requests (a lease in the
    # database makes it run once per interval across all of them).
    "BILLING_SCHEDULER_ENABLED": False,
    # Seconds between maintenance runs, and the random delay added to each (so workers spread).
    "BILLING_SCHEDULER_INTERVAL_SECONDS": 900,
    "BILLING_SCHEDULER_JITTER_SECONDS": 30,
    # How long a run holds the lease without renewing it (it renews after every batch); a worker
    # that died mid-run is taken over after this.
    "BILLING_SCHEDULER_LEASE_SECONDS": 300,
    # The `expiring` notification is sent this many days before a paid period or trial ends.
    "BILLING_NOTIFY_EXPIRING_DAYS": 7,
    # The `expired` notification is sent only if the period ended at most this many days before it
    # was ended (maintenance that was off for months sends no stale ones).
    "BILLING_NOTIFY_EXPIRED_WITHIN_DAYS": 7,
    # Emails of the notifications. None: sent through flask-mailman or Flask-Mail, whichever the
    # host initialised (none: no emails, the signals only); a callable taking an OutgoingEmail to
    # send them another way; False: no emails even with a mail extension.
    "BILLING_EMAIL_SENDER": None,
    # The From address; None for the mail extension's MAIL_DEFAULT_SENDER.
    "BILLING_EMAIL_FROM": None,
    # The language of a user's emails: a locale ("ru"), or a callable (host user) -> locale or
    # None; None, or a callable answering None, for BILLING_LOCALE, else English.
    "BILLING_EMAIL_LOCALE": None,
    # The link to the profile page in the emails; None builds it with url_for, which needs
    # SERVER_NAME outside a request (without it the emails have no link).
    "BILLING_EMAIL_PROFILE_URL": None,
    # Attempts at an email before it is marked failed, and the wait before the first retry
    # (seconds; doubled after each further failure, at most a day).
    "BILLING_EMAIL_MAX_ATTEMPTS": 5,
    "BILLING_EMAIL_RETRY_SECONDS": 300,
    # Emails one maintenance batch takes and sends (the lease is renewed after each batch).
    "BILLING_EMAIL_BATCH_SIZE": 100,
    # Seconds after which an email taken for sending whose outcome was never recorded (its run
    # died or stalled mid-batch) is marked uncertain: it may or may not have gone out.
    "BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS": 3600,
    # True: send the uncertain emails again (at least once: some may arrive twice); False: never
    # (at most once: some may never arrive), they stay uncertain for the host to look at.
    "BILLING_EMAIL_RESEND_UNCERTAIN": False,
    # Hours an invitation to a team account stays valid (it holds a seat until then).
    "BILLING_INVITATION_TTL_HOURS": 72,
    # The profile page's settings, under the names hosts already use (no BILLING_ prefix).
    # Limit of the primary metric on the default plan, overriding the catalog when set.
    "PROFILE_DEFAULT_QUOTA": None,
    # How many days back the activity feed reaches.
    "PROFILE_ACTIVITY_WINDOW_DAYS": 30,
    # Where "contact us for a manual extension" sends people (mailto); None hides the address.
    "PROFILE_PAYMENTS_CTA_EMAIL": None,
    # Show the buy-quota call to action and purchase modal.
    "ENABLE_PROFILE_PAYMENTS_UI": True,
}


DEPRECATED_KEYS: Mapping[str, str] = {
    "BILLING_BILLING_API_ENABLED": "BILLING_API_ENABLED",
    "BILLING_BILLING_API_PREFIX": "BILLING_API_PREFIX",
    "BILLING_BILLING_API_NAME": "BILLING_API_NAME",
}
"""Old names still accepted, and the names that replace them."""


def apply_deprecated_keys(config: dict[str, Any]) -> None:
    """Carry a value set under an old name over to its new name (unless the new one is set too),
    with a ``DeprecationWarning`` that names the replacement."""
    for old, new in DEPRECATED_KEYS.items():
        if old in config:
            warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)
            config.setdefault(new, config[old])


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BlueprintSettings:
    """One blueprint of the JSON API: whether it is registered, where, and under which name."""

    enabled: bool
    prefix: str
    name: str

    @classmethod
    def read(
        cls, get: Callable[[str], Any], *, enabled: str, prefix: str, name: str
    ) -> BlueprintSettings:
        """From the keys named ``enabled``, ``prefix`` and ``name``."""
        url_prefix = str(get(prefix))
        if not url_prefix.startswith("/"):
            raise BillingConfigError(f"{prefix} must start with '/', not {url_prefix!r}")
        blueprint_name = str(get(name))
        if not blueprint_name or "." in blueprint_name:
            raise BillingConfigError(f"{name} must be a blueprint name without dots")
        return cls(bool(get(enabled)), url_prefix.rstrip("/") or "/", blueprint_name)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The four blueprints of the JSON API."""

    subscription: BlueprintSettings
    profile: BlueprintSettings
    billing: BlueprintSettings
    """Quota packages, payment webhooks and the OpenAPI document (``/api/billing``)."""
    accounts: BlueprintSettings
    """Accounts, members, invitations and caps (``/api/accounts``, ``/api/invitations``)."""


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The extension's own Flask-Caching cache (profile reads and activity feeds)."""

    type: str
    redis_url: str | None
    key_prefix: str
    socket_timeout: float
    retry_seconds: float


SECRET_KEYS = (
    "BILLING_STRIPE_SECRET_KEY",
    "BILLING_STRIPE_WEBHOOK_SECRET",
    "BILLING_YOOKASSA_SHOP_ID",
    "BILLING_YOOKASSA_SECRET_KEY",
)
"""Keys read from the environment variable of the same name when the config lacks them."""


@dataclass(frozen=True, slots=True)
class StripeSettings:
    """The built-in Stripe provider's keys (never shown by ``repr``)."""

    secret_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_tolerance_seconds: int = 300
    prices: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Plan code -> cadence (``monthly``, ``yearly``) -> Stripe price id: sold as subscriptions."""


@dataclass(frozen=True, slots=True)
class YooKassaSettings:
    """The built-in YooKassa provider's keys (the secret never shown by ``repr``)."""

    shop_id: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    receipt_vat_code: int | None = None
    trusted_networks_only: bool = False
    save_payment_method: bool = False


REFUND_ENDS_PERIOD_CHOICES = ("immediately", "at_period_end")
STRIPE_CADENCES = {"monthly": 1, "yearly": 12}
"""The keys of a plan's BILLING_STRIPE_PRICES entry, and the months each stands for."""


@dataclass(frozen=True, slots=True)
class PaymentSettings:
    """The payment providers and their webhooks."""

    provider: Any
    """A ``PaymentProvider``, a built-in provider's name, or None: payments are "coming soon"."""
    webhook_secret: str | None = field(repr=False)
    webhook_tolerance_seconds: int
    max_pending: int
    more_providers: tuple[Any, ...] = ()
    """More providers (instances or names) whose webhooks are accepted."""
    return_url: str | None = None
    cancel_url: str | None = None
    stripe: StripeSettings = StripeSettings()
    yookassa: YooKassaSettings = YooKassaSettings()
    refund_ends_period: str = "immediately"
    """``immediately`` or ``at_period_end``."""
    renewal_lead_hours: int = 24
    renewal_grace_days: int = 3

    @classmethod
    def read(cls, get: Callable[[str], Any], catalog: Catalog | None = None) -> PaymentSettings:
        more = get("BILLING_PAYMENT_PROVIDERS") or ()
        if isinstance(more, str) or not isinstance(more, list | tuple):
            raise BillingConfigError(
                "BILLING_PAYMENT_PROVIDERS must be a list of providers or provider names, "
                f"not {more!r}"
            )
        vat_code = get("BILLING_YOOKASSA_RECEIPT_VAT_CODE")
        if vat_code is not None and (
            isinstance(vat_code, bool) or not isinstance(vat_code, int) or not 1 <= vat_code <= 12
        ):
            raise BillingConfigError(
                "BILLING_YOOKASSA_RECEIPT_VAT_CODE must be YooKassa's vat_code (1 to 12) or None"
            )
        refund_ends_period = get("BILLING_REFUND_ENDS_PERIOD")
        if refund_ends_period not in REFUND_ENDS_PERIOD_CHOICES:
            raise BillingConfigError(
                "BILLING_REFUND_ENDS_PERIOD must be one of "
                f"{', '.join(REFUND_ENDS_PERIOD_CHOICES)}, not {refund_ends_period!r}"
            )
        return cls(
            provider=get("BILLING_PAYMENT_PROVIDER"),
            webhook_secret=get("BILLING_WEBHOOK_SECRET") or None,
            webhook_tolerance_seconds=_positive_int(
                get("BILLING_WEBHOOK_TOLERANCE_SECONDS"), "BILLING_WEBHOOK_TOLERANCE_SECONDS"
            ),
            max_pending=_positive_int(
                get("BILLING_MAX_PENDING_PAYMENTS"), "BILLING_MAX_PENDING_PAYMENTS"
            ),
            more_providers=tuple(more),
            return_url=_optional_web_address(
                get("BILLING_PAYMENT_RETURN_URL"), "BILLING_PAYMENT_RETURN_URL"
            ),
            cancel_url=_optional_web_address(
                get("BILLING_PAYMENT_CANCEL_URL"), "BILLING_PAYMENT_CANCEL_URL"
            ),
            stripe=StripeSettings(
                secret_key=get("BILLING_STRIPE_SECRET_KEY") or None,
                webhook_secret=get("BILLING_STRIPE_WEBHOOK_SECRET") or None,
                webhook_tolerance_seconds=_positive_int(
                    get("BILLING_STRIPE_WEBHOOK_TOLERANCE_SECONDS"),
                    "BILLING_STRIPE_WEBHOOK_TOLERANCE_SECONDS",
                ),
                prices=_stripe_prices(get("BILLING_STRIPE_PRICES"), catalog),
            ),
            yookassa=YooKassaSettings(
                shop_id=str(get("BILLING_YOOKASSA_SHOP_ID") or "") or None,
                secret_key=get("BILLING_YOOKASSA_SECRET_KEY") or None,
                receipt_vat_code=vat_code,
                trusted_networks_only=bool(get("BILLING_YOOKASSA_TRUSTED_NETWORKS_ONLY")),
                save_payment_method=bool(get("BILLING_YOOKASSA_SAVE_PAYMENT_METHOD")),
            ),
            refund_ends_period=refund_ends_period,
            renewal_lead_hours=_positive_int(
                get("BILLING_RENEWAL_LEAD_HOURS"), "BILLING_RENEWAL_LEAD_HOURS"
            ),
            renewal_grace_days=_positive_int(
                get("BILLING_RENEWAL_GRACE_DAYS"), "BILLING_RENEWAL_GRACE_DAYS", minimum=0
            ),
        )


def check_stripe_prices(value: Any, catalog: Catalog | None) -> dict[str, dict[str, str]]:
    """The checks of BILLING_STRIPE_PRICES, for the ``prices`` given to a StripeProvider object."""
    return _stripe_prices(value, catalog)


def _stripe_prices(value: Any, catalog: Catalog | None) -> dict[str, dict[str, str]]:
    """BILLING_STRIPE_PRICES checked: paid plans of the catalog, known cadences, price ids."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BillingConfigError(
            "BILLING_STRIPE_PRICES must map plan codes to {'monthly': price id, 'yearly': "
            f"price id}}, not {value!r}"
        )
    prices: dict[str, dict[str, str]] = {}
    for plan_code, cadences in value.items():
        plan = None if catalog is None else catalog.plans.get(plan_code)
        if catalog is not None and (plan is None or plan.is_default):
            raise BillingConfigError(
                f"BILLING_STRIPE_PRICES: {plan_code!r} is not a paid plan of the catalog"
            )
        if not isinstance(cadences, Mapping) or not cadences:
            raise BillingConfigError(
                f"BILLING_STRIPE_PRICES[{plan_code!r}] must map 'monthly'/'yearly' to price ids"
            )
        for cadence, price_id in cadences.items():
            if cadence not in STRIPE_CADENCES:
                raise BillingConfigError(
                    f"BILLING_STRIPE_PRICES[{plan_code!r}]: unknown cadence {cadence!r}; "
                    "use 'monthly' or 'yearly'"
                )
            if not isinstance(price_id, str) or not price_id.startswith("price_"):
                raise BillingConfigError(
                    f"BILLING_STRIPE_PRICES[{plan_code!r}][{cadence!r}] must be a Stripe price "
                    f"id ('price_...'), not {price_id!r}"
                )
            months = STRIPE_CADENCES[cadence]
            if plan is not None and plan.price_for(months) is None:
                raise BillingConfigError(
                    f"BILLING_STRIPE_PRICES[{plan_code!r}][{cadence!r}]: the catalog has no "
                    f"{cadence} price for the plan, which the subscription's invoices are "
                    "checked against"
                )
        prices[str(plan_code)] = {str(k): str(v) for k, v in cadences.items()}
    return prices


@dataclass(frozen=True, slots=True)
class RefusalPageSettings:
    """The HTML page a browser gets when the extension refuses it (``profile_billing/error.html``)."""

    base_template: str | None
    """The host's template the page extends, or None for the extension's standalone page."""
    back_url: str
    """The "Go back" link when the request has no referrer of the app's own origin."""

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> RefusalPageSettings:
        base_template = get("BILLING_BASE_TEMPLATE")
        if base_template is not None and not (isinstance(base_template, str) and base_template):
            raise BillingConfigError(
                f"BILLING_BASE_TEMPLATE must be a template name or None, not {base_template!r}"
            )
        back_url = get("BILLING_REFUSAL_BACK_URL")
        # A path of the app or a web address: never a javascript: or data: link on the page.
        if not isinstance(back_url, str) or not back_url.startswith(("/", "https://", "http://")):
            raise BillingConfigError(
                "BILLING_REFUSAL_BACK_URL must be a path starting with '/' or an http(s) URL, "
                f"not {back_url!r}"
            )
        return cls(base_template, back_url)


STRICT_PAGE_POLICY: Mapping[str, tuple[str, ...]] = {
    "default-src": ("'self'",),
    "frame-ancestors": ("'none'",),
    "base-uri": ("'self'",),
    "form-action": ("'self'",),
}
"""The policy the extension's own markup needs and nothing more: no inline script or style, no
framing (clickjacking), no <base> or form target elsewhere."""

_DIRECTIVE = re.compile(r"[a-z][a-z-]*\Z")
_SOURCE = re.compile(r"[^\s;,]+\Z")  # a separator inside a source would inject a directive


@dataclass(frozen=True, slots=True)
class PageSecuritySettings:
    """The Content-Security-Policy of the extension's pages."""

    policy: Mapping[str, tuple[str, ...]] | None
    """Directive -> sources; None: the extension sends no policy (the host's decides)."""
    nonce_in: tuple[str, ...]
    """Directives that get ``'nonce-...'`` when a template called ``csp_nonce()``."""

    @classmethod
    def read(cls, get: Callable[[str], Any], base_template: str | None) -> PageSecuritySettings:
        key = "BILLING_CONTENT_SECURITY_POLICY"
        value = get(key)
        policy: Mapping[str, tuple[str, ...]] | None
        if value is None:
            # A host's layout loads what the host chose (its CDN, its inline scripts): only the
            # host can say what its policy must allow.
            policy = STRICT_PAGE_POLICY if base_template is None else None
        elif value is False:
            policy = None
        elif value is True:
            policy = STRICT_PAGE_POLICY
        elif isinstance(value, Mapping):
            policy = dict(STRICT_PAGE_POLICY)
            for directive, sources in value.items():
                if not (isinstance(directive, str) and _DIRECTIVE.match(directive)):
                    raise BillingConfigError(f"{key}: {directive!r} is not a directive name")
                added = _sources(sources, f"{key}[{directive!r}]")
                policy[directive] = with_sources(policy, directive, added)
        else:
            raise BillingConfigError(
                f"{key} must be None, True, False or a dict of directive -> sources, not {value!r}"
            )
        nonce_key = "BILLING_CONTENT_SECURITY_POLICY_NONCE_IN"
        nonce_in = get(nonce_key)
        if isinstance(nonce_in, str) or not isinstance(nonce_in, list | tuple):
            raise BillingConfigError(
                f"{nonce_key} must be a list of directives such as 'script-src', not {nonce_in!r}"
            )
        for directive in nonce_in:
            if not (
                isinstance(directive, str)
                and _DIRECTIVE.match(directive)
                and directive.endswith("-src")
            ):
                raise BillingConfigError(f"{nonce_key}: {directive!r} is not a -src directive")
        return cls(policy, tuple(nonce_in))


def with_sources(
    policy: Mapping[str, tuple[str, ...]], directive: str, added: tuple[str, ...]
) -> tuple[str, ...]:
    """The sources of ``directive`` in ``policy`` with ``added`` after them. A fetch directive
    the policy lacks starts from ``default-src`` (which it would otherwise fall back to, so the
    extension's own files stay allowed); ``'none'`` is replaced, and ``('none',)`` added sets it."""
    if added == ("'none'",):
        return added
    current = policy.get(directive)
    if current is None:
        current = policy.get("default-src", ()) if directive.endswith("-src") else ()
    if current == ("'none'",):
        current = ()
    return (*current, *(source for source in added if source not in current))


def _sources(value: Any, key: str) -> tuple[str, ...]:
    items = value.split() if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise BillingConfigError(f"{key} must be a source or a list of sources, not {value!r}")
    for item in items:
        if not (isinstance(item, str) and _SOURCE.match(item)):
            raise BillingConfigError(f"{key}: {item!r} is not a source")
    return tuple(items)


@dataclass(frozen=True, slots=True)
class ProfilePageSettings:
    """The server-rendered profile page (``page/``)."""

    blueprint: BlueprintSettings
    template: str
    locale: str | None
    """The pages' locale; None: the host's Flask-Babel locale, or English without it."""
    banner_percent: int
    banner_remaining: int

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> ProfilePageSettings:
        template = get("BILLING_PROFILE_TEMPLATE")
        if not (isinstance(template, str) and template):
            raise BillingConfigError(
                f"BILLING_PROFILE_TEMPLATE must be a template name, not {template!r}"
            )
        locale = get("BILLING_LOCALE")
        if locale is not None and not (
            isinstance(locale, str) and locale.replace("_", "-").replace("-", "").isalpha()
        ):
            raise BillingConfigError(
                f"BILLING_LOCALE must be a locale such as 'ru' or 'en_GB', or None, not {locale!r}"
            )
        percent = _positive_int(
            get("BILLING_LOW_QUOTA_BANNER_PERCENT"), "BILLING_LOW_QUOTA_BANNER_PERCENT", minimum=0
        )
        if percent > 100:
            raise BillingConfigError("BILLING_LOW_QUOTA_BANNER_PERCENT must be at most 100")
        return cls(
            blueprint=BlueprintSettings.read(
                get,
                enabled="BILLING_PROFILE_PAGE_ENABLED",
                prefix="BILLING_PROFILE_PAGE_PREFIX",
                name="BILLING_PROFILE_PAGE_NAME",
            ),
            template=template,
            locale=locale.replace("-", "_") if locale else None,
            banner_percent=percent,
            banner_remaining=_positive_int(
                get("BILLING_LOW_QUOTA_BANNER_REMAINING"),
                "BILLING_LOW_QUOTA_BANNER_REMAINING",
                minimum=0,
            ),
        )


@dataclass(frozen=True, slots=True)
class MaintenanceSettings:
    """Maintenance, its scheduler, retention and the notification windows."""

    retention_days: int | None
    batch_size: int
    scheduler_enabled: bool
    interval_seconds: int
    jitter_seconds: int
    lease_seconds: int
    notify_expiring_days: int
    notify_expired_within_days: int

    @classmethod
    def read(cls, get: Callable[[str], Any], activity_window_days: int) -> MaintenanceSettings:
        retention = _optional_int(get("BILLING_RETENTION_DAYS"), "BILLING_RETENTION_DAYS")
        expiring = _positive_int(
            get("BILLING_NOTIFY_EXPIRING_DAYS"), "BILLING_NOTIFY_EXPIRING_DAYS"
        )
        expired_within = _positive_int(
            get("BILLING_NOTIFY_EXPIRED_WITHIN_DAYS"), "BILLING_NOTIFY_EXPIRED_WITHIN_DAYS"
        )
        if retention is not None:
            # The activity feed reads the log and the entries of its window, and a notification's
            # row is what keeps it from being sent twice while it is still relevant.
            needed = max(activity_window_days, expiring, expired_within)
            if retention < needed:
                raise BillingConfigError(
                    f"BILLING_RETENTION_DAYS must be at least {needed} (PROFILE_ACTIVITY_WINDOW_DAYS "
                    "and the BILLING_NOTIFY_*_DAYS windows), or None"
                )
        return cls(
            retention_days=retention,
            batch_size=_positive_int(
                get("BILLING_MAINTENANCE_BATCH_SIZE"), "BILLING_MAINTENANCE_BATCH_SIZE"
            ),
            scheduler_enabled=bool(get("BILLING_SCHEDULER_ENABLED")),
            interval_seconds=_positive_int(
                get("BILLING_SCHEDULER_INTERVAL_SECONDS"), "BILLING_SCHEDULER_INTERVAL_SECONDS"
            ),
            jitter_seconds=_positive_int(
                get("BILLING_SCHEDULER_JITTER_SECONDS"),
                "BILLING_SCHEDULER_JITTER_SECONDS",
                minimum=0,
            ),
            lease_seconds=_positive_int(
                get("BILLING_SCHEDULER_LEASE_SECONDS"), "BILLING_SCHEDULER_LEASE_SECONDS"
            ),
            notify_expiring_days=expiring,
            notify_expired_within_days=expired_within,
        )


@dataclass(frozen=True, slots=True)
class EmailSettings:
    """The notifications' emails (``services.mail``)."""

    sender: Callable[..., Any] | bool | None
    """None: the host's flask-mailman or Flask-Mail; a callable sender; False: no emails."""
    from_address: str | None
    locale: str | Callable[[Any], str | None] | None
    profile_url: str | None
    max_attempts: int
    retry_seconds: int
    batch_size: int
    uncertain_after_seconds: int
    resend_uncertain: bool

    @classmethod
    def read(cls, get: Callable[[str], Any]) -> EmailSettings:
        sender = get("BILLING_EMAIL_SENDER")
        if not (sender is None or sender is False or callable(sender)):
            raise BillingConfigError(
                f"BILLING_EMAIL_SENDER must be None, False or a callable, not {sender!r}"
            )
        locale = get("BILLING_EMAIL_LOCALE")
        if not (locale is None or callable(locale) or (isinstance(locale, str) and locale)):
            raise BillingConfigError(
                f"BILLING_EMAIL_LOCALE must be a locale, a callable or None, not {locale!r}"
            )
        for key in ("BILLING_EMAIL_FROM", "BILLING_EMAIL_PROFILE_URL"):
            value = get(key)
            if value is not None and not (isinstance(value, str) and value):
                raise BillingConfigError(f"{key} must be a string or None, not {value!r}")
        profile_url = get("BILLING_EMAIL_PROFILE_URL")
        if profile_url is not None and not profile_url.startswith(("https://", "http://")):
            raise BillingConfigError(
                f"BILLING_EMAIL_PROFILE_URL must be an http(s) URL, not {profile_url!r}"
            )
        return cls(
            sender=sender,
            from_address=get("BILLING_EMAIL_FROM"),
            locale=locale.replace("-", "_") if isinstance(locale, str) else locale,
            profile_url=profile_url,
            max_attempts=_positive_int(
                get("BILLING_EMAIL_MAX_ATTEMPTS"), "BILLING_EMAIL_MAX_ATTEMPTS"
            ),
            retry_seconds=_positive_int(
                get("BILLING_EMAIL_RETRY_SECONDS"), "BILLING_EMAIL_RETRY_SECONDS"
            ),
            batch_size=_positive_int(get("BILLING_EMAIL_BATCH_SIZE"), "BILLING_EMAIL_BATCH_SIZE"),
            uncertain_after_seconds=_positive_int(
                get("BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS"),
                "BILLING_EMAIL_UNCERTAIN_AFTER_SECONDS",
            ),
            resend_uncertain=bool(get("BILLING_EMAIL_RESEND_UNCERTAIN")),
        )


@dataclass(frozen=True, slots=True)
class BillingSettings:
    plans: Mapping[str, Any] | str | Path | None
    currency: str
    """Prices the default catalog and the configured plans that name no currency."""
    period_rule: PeriodRule
    period_timezone: ZoneInfo
    auto_seed_plans: bool
    charge_failed_requests: bool
    idempotency_header: str
    idempotency_ttl_seconds: int
    idempotency_lock_seconds: int
    idempotency_max_response_bytes: int
    headers_enabled: bool
    quota_low_threshold: float
    cli_group: str
    clock: Clock
    user_loader: Callable[[str], Any] | None
    user_lookup: Callable[[str], Any] | None
    """Finds a user by email (or another identifier) for the CLI; None: user ids only."""
    csrf_enabled: bool
    api: ApiSettings
    cache: CacheSettings
    profile_cache_seconds: int
    unavailable_retry_after: int
    primary_metric: str
    """The periodic metric the profile shows as its ``quota``: BILLING_PRIMARY_METRIC, else the
    catalog's first periodic metric; "" when the catalog has none (the profile has no quota)."""
    user_info: Callable[[Any], Mapping[str, Any]] | None
    payments: PaymentSettings
    refusal_page: RefusalPageSettings
    page: ProfilePageSettings
    page_security: PageSecuritySettings
    maintenance: MaintenanceSettings
    email: EmailSettings
    default_quota: int | None
    activity_window_days: int
    payments_cta_email: str | None
    payments_ui_enabled: bool
    invitation_ttl_hours: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], catalog: Catalog) -> BillingSettings:
        """The settings of ``config``, checked against ``catalog``: the plans of BILLING_PLANS,
        loaded first in ``catalog_currency(config)`` (the primary metric must be one of its
        periodic metrics)."""

        def get(key: str) -> Any:
            if key in SECRET_KEYS and not config.get(key):
                # Secrets stay out of config files: the deployment's environment holds them.
                return os.environ.get(key) or DEFAULTS[key]
            return config.get(key, DEFAULTS[key])

        try:
            rule = parse_rule(get("BILLING_PERIOD_RULE"))
        except ValueError as exc:
            raise BillingConfigError(f"BILLING_PERIOD_RULE: {exc}") from None
        try:
            zone = ZoneInfo(get("BILLING_PERIOD_TIMEZONE"))
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise BillingConfigError(
                f"BILLING_PERIOD_TIMEZONE: unknown time zone {get('BILLING_PERIOD_TIMEZONE')!r}"
            ) from None
        threshold = float(get("BILLING_QUOTA_LOW_THRESHOLD"))
        if not 0 < threshold <= 1:
            raise BillingConfigError("BILLING_QUOTA_LOW_THRESHOLD must be in (0, 1]")
        primary_metric = _primary_metric(get("BILLING_PRIMARY_METRIC"), catalog)
        default_quota = _optional_int(get("PROFILE_DEFAULT_QUOTA"), "PROFILE_DEFAULT_QUOTA")
        if default_quota is not None and not primary_metric:
            raise BillingConfigError(
                "PROFILE_DEFAULT_QUOTA sets the limit of the primary metric, and the catalog has "
                "no periodic metric"
            )
        return cls(
            plans=get("BILLING_PLANS"),
            currency=catalog_currency(config),
            period_rule=rule,
            period_timezone=zone,
            auto_seed_plans=bool(get("BILLING_AUTO_SEED_PLANS")),
            charge_failed_requests=bool(get("BILLING_CHARGE_FAILED_REQUESTS")),
            idempotency_header=str(get("BILLING_IDEMPOTENCY_HEADER")),
            idempotency_ttl_seconds=_positive_int(
                get("BILLING_IDEMPOTENCY_TTL_SECONDS"), "BILLING_IDEMPOTENCY_TTL_SECONDS"
            ),
            idempotency_lock_seconds=_positive_int(
                get("BILLING_IDEMPOTENCY_LOCK_SECONDS"), "BILLING_IDEMPOTENCY_LOCK_SECONDS"
            ),
            idempotency_max_response_bytes=_positive_int(
                get("BILLING_IDEMPOTENCY_MAX_RESPONSE_BYTES"),
                "BILLING_IDEMPOTENCY_MAX_RESPONSE_BYTES",
                minimum=0,
            ),
            headers_enabled=bool(get("BILLING_HEADERS_ENABLED")),
            quota_low_threshold=threshold,
            cli_group=str(get("BILLING_CLI_GROUP")),
            clock=get("BILLING_CLOCK") or system_clock,
            user_loader=get("BILLING_USER_LOADER"),
            user_lookup=_optional_callable(get("BILLING_USER_LOOKUP"), "BILLING_USER_LOOKUP"),
            csrf_enabled=bool(get("BILLING_CSRF_ENABLED")),
            profile_cache_seconds=int(get("BILLING_PROFILE_CACHE_SECONDS")),
            api=ApiSettings(
                subscription=BlueprintSettings.read(
                    get,
                    enabled="BILLING_SUBSCRIPTION_API_ENABLED",
                    prefix="BILLING_SUBSCRIPTION_API_PREFIX",
                    name="BILLING_SUBSCRIPTION_API_NAME",
                ),
                profile=BlueprintSettings.read(
                    get,
                    enabled="BILLING_PROFILE_API_ENABLED",
                    prefix="BILLING_PROFILE_API_PREFIX",
                    name="BILLING_PROFILE_API_NAME",
                ),
                billing=BlueprintSettings.read(
                    get,
                    enabled="BILLING_API_ENABLED",
                    prefix="BILLING_API_PREFIX",
                    name="BILLING_API_NAME",
                ),
                accounts=BlueprintSettings.read(
                    get,
                    enabled="BILLING_ACCOUNTS_API_ENABLED",
                    prefix="BILLING_ACCOUNTS_API_PREFIX",
                    name="BILLING_ACCOUNTS_API_NAME",
                ),
            ),
            cache=CacheSettings(
                type=str(get("BILLING_CACHE_TYPE")),
                redis_url=get("BILLING_CACHE_REDIS_URL") or None,
                key_prefix=str(get("BILLING_CACHE_KEY_PREFIX")),
                socket_timeout=_positive_seconds(
                    get("BILLING_CACHE_SOCKET_TIMEOUT"), "BILLING_CACHE_SOCKET_TIMEOUT"
                ),
                retry_seconds=_positive_seconds(
                    get("BILLING_CACHE_RETRY_SECONDS"), "BILLING_CACHE_RETRY_SECONDS"
                ),
            ),
            unavailable_retry_after=_positive_int(
                get("BILLING_UNAVAILABLE_RETRY_AFTER"), "BILLING_UNAVAILABLE_RETRY_AFTER"
            ),
            primary_metric=primary_metric,
            user_info=get("BILLING_USER_INFO"),
            payments=PaymentSettings.read(get, catalog),
            refusal_page=RefusalPageSettings.read(get),
            page=ProfilePageSettings.read(get),
            page_security=PageSecuritySettings.read(get, get("BILLING_BASE_TEMPLATE")),
            maintenance=MaintenanceSettings.read(
                get,
                _positive_int(get("PROFILE_ACTIVITY_WINDOW_DAYS"), "PROFILE_ACTIVITY_WINDOW_DAYS"),
            ),
            email=EmailSettings.read(get),
            default_quota=default_quota,
            activity_window_days=_positive_int(
                get("PROFILE_ACTIVITY_WINDOW_DAYS"), "PROFILE_ACTIVITY_WINDOW_DAYS"
            ),
            payments_cta_email=get("PROFILE_PAYMENTS_CTA_EMAIL"),
            payments_ui_enabled=bool(get("ENABLE_PROFILE_PAYMENTS_UI")),
            invitation_ttl_hours=_positive_int(
                get("BILLING_INVITATION_TTL_HOURS"), "BILLING_INVITATION_TTL_HOURS"
            ),
        )


def catalog_currency(config: Mapping[str, Any]) -> str:
    """BILLING_CURRENCY, checked and upper-cased. Read before the other settings: the catalog is
    priced in it, and the other settings are checked against the catalog."""
    value = config.get("BILLING_CURRENCY", DEFAULTS["BILLING_CURRENCY"])
    if not (isinstance(value, str) and len(value) == 3 and value.isascii() and value.isalpha()):
        raise BillingConfigError(
            f"BILLING_CURRENCY must be a three-letter currency code such as 'EUR', not {value!r}"
        )
    return value.upper()


def _primary_metric(value: Any, catalog: Catalog) -> str:
    periodic = catalog.periodic_metric_names
    if value is None:
        # Hosts with their own catalog rarely have the default catalog's "analysis".
        return periodic[0] if periodic else ""
    known = ", ".join(periodic) or "none"
    metric = catalog.metrics.get(value) if isinstance(value, str) else None
    if metric is None:
        raise BillingConfigError(
            f"BILLING_PRIMARY_METRIC: unknown metric {value!r}; known periodic metrics: {known}"
        )
    if metric.kind is not MetricKind.PERIODIC:
        raise BillingConfigError(
            f"BILLING_PRIMARY_METRIC: {value!r} is a {metric.kind.value} metric, not a periodic "
            f"one; known periodic metrics: {known}"
        )
    return metric.name


def _optional_web_address(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise BillingConfigError(f"{key} must be an absolute http(s) URL or None, not {value!r}")
    return value


def _optional_callable(value: Any, key: str) -> Callable[..., Any] | None:
    if value is None:
        return None
    if not callable(value):
        raise BillingConfigError(f"{key} must be a callable or None, not {value!r}")
    return cast(Callable[..., Any], value)


def _optional_int(value: Any, key: str) -> int | None:
    return None if value is None else _positive_int(value, key, minimum=0)


def _positive_int(value: Any, key: str, minimum: int = 1) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BillingConfigError(f"{key} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise BillingConfigError(f"{key} must be at least {minimum}")
    return number


def _positive_seconds(value: Any, key: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise BillingConfigError(f"{key} must be a number of seconds, not {value!r}") from None
    if not seconds > 0:
        raise BillingConfigError(f"{key} must be more than 0 seconds")
    return seconds
