"""Every configuration key of the extension, its default, and the typed view the code reads.

Keys live in one place so that ``init_app`` can ``setdefault`` them and the configuration reference in
``docs/configuration.md`` can be checked against this table by the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .domain.periods import PeriodRule, parse_rule
from .errors import BillingConfigError

Clock = Callable[[], datetime]

DEFAULTS: Mapping[str, Any] = {
    # The plan catalog: None for the seed's default plans, a dict, or a path to a JSON/YAML file.
    "BILLING_PLANS": None,
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
}


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class BillingSettings:
    plans: Mapping[str, Any] | str | Path | None
    period_rule: PeriodRule
    period_timezone: ZoneInfo
    auto_seed_plans: bool
    charge_failed_requests: bool
    idempotency_header: str
    headers_enabled: bool
    quota_low_threshold: float
    cli_group: str
    clock: Clock
    user_loader: Callable[[str], Any] | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> BillingSettings:
        def get(key: str) -> Any:
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
        return cls(
            plans=get("BILLING_PLANS"),
            period_rule=rule,
            period_timezone=zone,
            auto_seed_plans=bool(get("BILLING_AUTO_SEED_PLANS")),
            charge_failed_requests=bool(get("BILLING_CHARGE_FAILED_REQUESTS")),
            idempotency_header=str(get("BILLING_IDEMPOTENCY_HEADER")),
            headers_enabled=bool(get("BILLING_HEADERS_ENABLED")),
            quota_low_threshold=threshold,
            cli_group=str(get("BILLING_CLI_GROUP")),
            clock=get("BILLING_CLOCK") or system_clock,
            user_loader=get("BILLING_USER_LOADER"),
        )
