"""What the profile page shows, built from the services' answers: one value per card.

The numbers are the services' (the quota service the guards use, the usage rollup, the payments),
so the page shows what ``/api/...`` answers; this module only arranges them and words them in the
reader's language (``presentation.translator.Translator``). Templates receive these values and may
ignore the worded texts and word their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from ..domain.catalog import Catalog, Metric, MetricKind, Plan, render
from ..domain.limits import Allowance
from ..domain.subscriptions import Subscription, SubscriptionStatus
from ..presentation.i18n import translatable
from ..presentation.translator import Translator, counted, metric_title
from ..services.activity import ActivityEvent
from ..services.payments import PaymentRecord
from ..services.profiles import ProfileSnapshot

PERIODS = (7, 30, 90)
"""The usage chart's periods (days); 30 by default."""
DEFAULT_PERIOD = 30
FORECAST_DAYS = 7
"""The forecast's rate is the daily average of this many latest days."""
CHART_HEIGHT = 100
COLUMN_WIDTH = 8
COLUMN_GAP = 2


# The roles a host most often gives its users, translated on the profile card; any other role is
# shown as the host wrote it.
ROLE_NAMES = (translatable("user"), translatable("admin"))


# -- the cards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaRow:
    """One metric of the quota card."""

    metric: str
    title: str
    allowance: Allowance
    gauge: bool
    state: str
    """``ok``, ``warning`` (from the low-quota threshold, 80 % by default), ``blocked`` (100 %)
    or ``unlimited``: the row's CSS class."""
    summary: str
    """"32 of 50 used · 18 left · resets December 1, 2025"."""
    resets_at: datetime | None
    """In the user's time zone."""


@dataclass(frozen=True)
class Banner:
    """The low-quota banner of the primary metric."""

    reached: bool
    message: str
    allowance: Allowance


@dataclass(frozen=True)
class PlanStatus:
    """The plan card."""

    plan: Plan
    name: str
    status: str
    """``active``, ``trial``, ``cancelled`` or ``expired``: the badge's CSS class."""
    badge: str
    price: str
    ends_at: datetime | None
    """In the user's time zone; None for a plan that never lapses."""
    ends_text: str | None
    days_left: int | None
    days_left_text: str | None
    cancellable: bool
    resumable: bool


@dataclass(frozen=True)
class ChartColumn:
    day: date
    value: int
    x: int
    y: int
    height: int
    label: str


@dataclass(frozen=True)
class MetricChart:
    metric: str
    title: str
    columns: list[ChartColumn]
    total: int
    peak: int
    width: int
    height: int
    description: str
    forecast: str | None


@dataclass(frozen=True)
class Usage:
    days: int
    first_day: date
    last_day: date
    range_text: str
    charts: list[MetricChart]
    rows: list[tuple[str, date, list[int]]]
    """The table: (day label, day, one value per chart)."""


@dataclass(frozen=True)
class PlanOption:
    """One plan of the comparison."""

    plan: Plan
    name: str
    description: str
    current: bool
    price: str
    discount: str | None
    limits: list[tuple[str, str]]
    """(metric title, "200 / month" or "Unlimited")."""
    features: list[tuple[str, bool]]
    over_cap: list[str]
    """Notes such as "You have 12 active vacancies; Starter allows 5"."""
    on_request: bool
    is_default: bool


@dataclass(frozen=True)
class Package:
    """A quota package of the purchase dialog (``GET /api/billing/quotas/preview``)."""

    id: str
    name: str
    amount: str
    price: str
    status: str
    status_text: str


@dataclass(frozen=True)
class PaymentRow:
    record: PaymentRecord
    day: datetime
    day_text: str
    plan_name: str
    period: str
    amount: str
    status_text: str


@dataclass(frozen=True)
class ActivityRow:
    event: ActivityEvent
    occurred_at: datetime
    when: str
    type_label: str
    title: str


@dataclass
class ProfileView:
    """Everything ``profile_billing/profile.html`` renders (see docs/guide.md)."""

    snapshot: ProfileSnapshot
    zone: tzinfo
    plan: PlanStatus
    quotas: list[QuotaRow]
    banner: Banner | None
    usage: Usage
    plans: list[PlanOption]
    billing: str
    packages: list[Package]
    payments: list[PaymentRow]
    activity: list[ActivityRow] | None
    """None when the feed could not be read (the card shows its error state)."""
    extra: dict[str, Any] = field(default_factory=dict)


# -- building them ---------------------------------------------------------------------------


def price_text(t: Translator, amount: Decimal | None, currency: str, months: int = 1) -> str:
    if amount is None:
        return t.gettext("On request")
    if amount == 0:
        return t.gettext("Free")
    money = t.money(amount, currency)
    if months == 12:
        return t.gettext("%(price)s / year", price=money)
    return t.gettext("%(price)s / month", price=money)


def plan_status(
    t: Translator, subscription: Subscription, plan: Plan, now: datetime, zone: tzinfo
) -> PlanStatus:
    status = subscription.status_at(now)
    ends_at = None if subscription.expires_at is None else subscription.expires_at.astimezone(zone)
    days_left = subscription.days_remaining_at(now)
    badges = {
        SubscriptionStatus.ACTIVE: t.gettext("Active"),
        SubscriptionStatus.TRIAL: t.gettext("Trial"),
        SubscriptionStatus.EXPIRED: t.gettext("Expired"),
    }
    if status is SubscriptionStatus.CANCELLED and ends_at is not None:
        badge = t.gettext("Cancels on %(date)s", date=t.day(ends_at))
    else:
        badge = badges.get(status, status.value)
    ends_text = None
    if ends_at is not None:
        if status is SubscriptionStatus.CANCELLED:
            ends_text = t.gettext("Access until %(date)s", date=t.day(ends_at))
        elif status is SubscriptionStatus.TRIAL:
            ends_text = t.gettext("Trial ends on %(date)s", date=t.day(ends_at))
        elif status is SubscriptionStatus.EXPIRED:
            ends_text = t.gettext("Ended on %(date)s", date=t.day(ends_at))
        else:
            ends_text = t.gettext("Paid until %(date)s", date=t.day(ends_at))
    return PlanStatus(
        plan=plan,
        name=render(plan.name),
        status=status.value,
        badge=badge,
        price=price_text(t, plan.price_monthly, plan.currency),
        ends_at=ends_at,
        ends_text=ends_text,
        days_left=days_left,
        days_left_text=(
            None
            if days_left is None or status is SubscriptionStatus.EXPIRED
            else t.ngettext("%(num)s day left", "%(num)s days left", days_left)
        ),
        cancellable=ends_at is not None
        and status in (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIAL),
        resumable=status is SubscriptionStatus.CANCELLED,
    )


def quota_rows(
    t: Translator,
    catalog: Catalog,
    allowances: Mapping[str, Allowance],
    gauges: Mapping[str, Allowance],
    warning_ratio: float,
    zone: tzinfo,
) -> list[QuotaRow]:
    rows = []
    for name, allowance in [*allowances.items(), *gauges.items()]:
        metric = catalog.metric(name)
        gauge = metric.kind is MetricKind.GAUGE
        resets_at = None if allowance.resets_at is None else allowance.resets_at.astimezone(zone)
        if allowance.limit is None:
            state = "unlimited"
            summary = t.gettext("%(used)s used · Unlimited", used=t.number(allowance.used))
        else:
            if allowance.limit <= 0 or allowance.used >= allowance.limit:
                state = "blocked"
            elif allowance.used >= allowance.limit * warning_ratio:
                state = "warning"
            else:
                state = "ok"
            if gauge:
                if metric.unit is not None:
                    # The cap in the metric's own words: "3 of 5 active vacancies".
                    summary = t.gettext(
                        "%(used)s of %(amount)s",
                        used=t.number(allowance.used),
                        amount=counted(t, metric, allowance.limit),
                    )
                else:
                    summary = t.gettext(
                        "%(used)s of %(limit)s",
                        used=t.number(allowance.used),
                        limit=t.number(allowance.limit),
                    )
            else:
                parts = [
                    t.gettext(
                        "%(used)s of %(limit)s used",
                        used=t.number(allowance.used),
                        limit=t.number(allowance.limit),
                    ),
                    t.gettext("%(left)s left", left=t.number(allowance.remaining or 0)),
                ]
                if resets_at is not None:
                    parts.append(t.gettext("resets %(date)s", date=t.day(resets_at)))
                summary = " · ".join(parts)
        rows.append(
            QuotaRow(name, metric_title(t, metric), allowance, gauge, state, summary, resets_at)
        )
    return rows


def low_quota_banner(
    t: Translator,
    allowance: Allowance | None,
    percent: int,
    remaining_at_most: int,
    zone: tzinfo,
    catalog: Catalog | None = None,
) -> Banner | None:
    """The banner when what is left of the primary metric is at most ``percent`` % of its limit
    or at most ``remaining_at_most``; worded "limit reached" when nothing is left."""
    if allowance is None or allowance.limit is None:
        return None
    metric = _metric(catalog, allowance.metric)
    left = allowance.remaining or 0
    low = left <= remaining_at_most or left * 100 <= allowance.limit * percent
    if not low:
        return None
    resets = None if allowance.resets_at is None else t.day(allowance.resets_at.astimezone(zone))
    if left == 0:
        if resets is None:
            message = t.gettext(
                "Limit reached: %(amount)s of this period are used.",
                amount=counted(t, metric, allowance.limit),
            )
        else:
            message = t.gettext(
                "Limit reached: %(amount)s of this period are used. The quota resets on %(date)s.",
                amount=counted(t, metric, allowance.limit),
                date=resets,
            )
        return Banner(True, message, allowance)
    amount = counted(t, metric, left)
    if resets is None:
        message = t.gettext("Only %(amount)s left.", amount=amount)
    else:
        message = t.gettext("Only %(amount)s left until %(date)s.", amount=amount, date=resets)
    return Banner(False, message, allowance)


def usage_view(
    t: Translator,
    days: int,
    today: date,
    daily: Mapping[date, Mapping[str, int]],
    metrics: list[str],
    allowances: Mapping[str, Allowance],
    now: datetime,
    zone: tzinfo,
    catalog: Catalog | None = None,
) -> Usage:
    """Daily columns of the last ``days`` days (UTC days, as the rollup counts them) per metric,
    the same numbers as a table, and each metric's forecast."""
    span = [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]
    charts = []
    for name in metrics:
        metric = _metric(catalog, name)
        values = [int(daily.get(day, {}).get(name, 0)) for day in span]
        peak = max(values, default=0)
        columns = []
        for index, (day, value) in enumerate(zip(span, values, strict=True)):
            height = 0 if peak == 0 else max(1, round(value / peak * CHART_HEIGHT)) if value else 0
            columns.append(
                ChartColumn(
                    day=day,
                    value=value,
                    x=index * (COLUMN_WIDTH + COLUMN_GAP),
                    y=CHART_HEIGHT - height,
                    height=height,
                    label=f"{t.short_day(day)}: {counted(t, metric, value)}",
                )
            )
        total = sum(values)
        title = metric_title(t, metric)
        charts.append(
            MetricChart(
                metric=name,
                title=title,
                columns=columns,
                total=total,
                peak=peak,
                width=days * (COLUMN_WIDTH + COLUMN_GAP) - COLUMN_GAP,
                height=CHART_HEIGHT,
                description=t.gettext(
                    "%(total)s in %(days)s days, at most %(peak)s a day.",
                    total=counted(t, metric, total),
                    days=t.number(days),
                    peak=t.number(peak),
                ),
                forecast=_forecast(t, metric, values, allowances.get(name), now, zone),
            )
        )
    rows = [
        (t.short_day(day), day, [chart.columns[index].value for chart in charts])
        for index, day in enumerate(span)
    ]
    return Usage(
        days=days,
        first_day=span[0],
        last_day=span[-1],
        range_text=f"{t.short_day(span[0])} \u2013 {t.short_day(span[-1])}",
        charts=charts,
        rows=rows,
    )


def run_out_at(
    remaining: int, recent: list[int], now: datetime, resets_at: datetime | None
) -> datetime | None:
    """When ``remaining`` runs out at the daily average of ``recent``, if before ``resets_at``."""
    if resets_at is None or remaining <= 0 or not recent:
        return None
    rate = sum(recent) / len(recent)
    if rate <= 0:
        return None
    moment = now + timedelta(days=math.ceil(remaining / rate))
    return moment if moment < resets_at else None


def _forecast(
    t: Translator,
    metric: Metric | str,
    values: list[int],
    allowance: Allowance | None,
    now: datetime,
    zone: tzinfo,
) -> str | None:
    if allowance is None or allowance.remaining is None:
        return None
    moment = run_out_at(allowance.remaining, values[-FORECAST_DAYS:], now, allowance.resets_at)
    if moment is None:
        return None
    return t.gettext(
        "At this rate your %(metric)s run out around %(date)s, before the quota resets.",
        metric=metric_title(t, metric).lower(),
        date=t.short_day(moment.astimezone(zone)),
    )


def plan_options(
    t: Translator,
    catalog: Catalog,
    current_code: str,
    gauges: Mapping[str, Allowance],
    billing: str,
) -> list[PlanOption]:
    months = 12 if billing == "yearly" else 1
    options = []
    for plan in catalog.plans.values():
        name = render(plan.name)
        price = plan.price_yearly if months == 12 else plan.price_monthly
        limits = []
        for metric in catalog.metrics.values():
            limit = plan.limit_for(metric.name)
            if limit is None:
                text = t.gettext("Unlimited")
            elif metric.kind is MetricKind.GAUGE:
                text = t.number(limit)
            else:
                text = t.gettext("%(limit)s / month", limit=t.number(limit))
            limits.append((metric_title(t, metric), text))
        over_cap = []
        for metric_name, gauge in gauges.items():
            cap = plan.limit_for(metric_name)
            if cap is not None and gauge.used > cap and plan.code != current_code:
                over_cap.append(
                    t.gettext(
                        "You have %(amount)s; %(plan)s allows %(limit)s.",
                        amount=counted(t, catalog.metric(metric_name), gauge.used),
                        plan=name,
                        limit=t.number(cap),
                    )
                )
        options.append(
            PlanOption(
                plan=plan,
                name=name,
                description=t.gettext(render(plan.description)) if plan.description else "",
                current=plan.code == current_code,
                price=price_text(t, price, plan.currency, months),
                discount=(
                    t.gettext("Save %(percent)s %%", percent=plan.yearly_discount)
                    if months == 12 and (plan.yearly_discount or 0) > 0
                    else None
                ),
                limits=limits,
                features=[
                    (t.gettext(render(catalog.feature_label(feature))), plan.has_feature(feature))
                    for feature in catalog.feature_names
                ],
                over_cap=over_cap,
                # For the period shown: a plan sold only by the month is on request by the year.
                on_request=price is None,
                is_default=plan.is_default,
            )
        )
    return options


def packages(t: Translator, items: list[dict[str, Any]], metric: Metric | str) -> list[Package]:
    """The purchase dialog's packages, from ``presenters.package_dict``."""
    statuses = {
        "coming_soon": t.gettext("Coming soon"),
        "available": t.gettext("Available"),
        "on_request": t.gettext("On request"),
    }
    result = []
    for item in items:
        price = item["price"]
        tokens = item["tokens"]
        result.append(
            Package(
                id=item["id"],
                name=str(item["name"]),
                amount=(
                    t.gettext("Unlimited") if tokens is None else counted(t, metric, int(tokens))
                ),
                price=price_text(
                    t, None if price is None else Decimal(str(price)), item["currency"]
                ),
                status=item["status"],
                status_text=statuses.get(item["status"], item["status"]),
            )
        )
    return result


def payment_rows(
    t: Translator, records: list[PaymentRecord], catalog: Catalog, zone: tzinfo
) -> list[PaymentRow]:
    statuses = {
        "pending": t.gettext("Pending"),
        "paid": t.gettext("Paid"),
        "succeeded": t.gettext("Succeeded"),
        "failed": t.gettext("Failed"),
        "cancelled": t.gettext("Cancelled"),
        "refunded": t.gettext("Refunded"),
        "charged_back": t.gettext("Charged back"),
    }
    rows = []
    for record in records:
        plan = catalog.plans.get(record.plan_code)
        day = _aware(record.created_at).astimezone(zone)
        rows.append(
            PaymentRow(
                record=record,
                day=day,
                day_text=t.day(day),
                plan_name=record.plan_code if plan is None else render(plan.name),
                period=t.ngettext("%(num)s month", "%(num)s months", record.months),
                amount=t.money(record.amount, record.currency),
                status_text=statuses.get(record.status, record.status),
            )
        )
    return rows


def activity_rows(
    t: Translator, events: list[ActivityEvent], zone: tzinfo, catalog: Catalog
) -> list[ActivityRow]:
    labels = {
        "quota.consumed": t.gettext("Quota used"),
        "quota.exceeded": t.gettext("Limit reached"),
        "plan.changed": t.gettext("Plan changed"),
        "subscription.cancelled": t.gettext("Subscription cancelled"),
        "subscription.resumed": t.gettext("Subscription resumed"),
        "subscription.extended": t.gettext("Plan extended"),
        "subscription.expired": t.gettext("Subscription expired"),
        "profile.updated": t.gettext("Profile updated"),
    }
    rows = []
    for event in events:
        moment = _aware(event.occurred_at).astimezone(zone)
        rows.append(
            ActivityRow(
                event=event,
                occurred_at=moment,
                when=t.moment(moment),
                type_label=labels.get(event.type, event.type),
                title=_activity_title(t, event, catalog),
            )
        )
    return rows


def _activity_title(t: Translator, event: ActivityEvent, catalog: Catalog) -> str:
    """The event's title in the reader's language. The extension's own entries are stored with an
    English title ("Analysis used (4)", "Plan changed: Free → Starter") and the metadata it was
    made from, from which it is told again ("4 анализа", "Тариф изменён: Free → Starter"); a
    host's own entries keep their title."""
    data = event.metadata

    def plan(key: str) -> str | None:
        code = data.get(key)
        if not isinstance(code, str):
            return None
        found = catalog.plans.get(code)
        return code if found is None else render(found.name)

    name, amount = data.get("metric"), data.get("amount")
    if event.type == "quota.consumed" and isinstance(name, str) and isinstance(amount, int):
        return counted(t, _metric(catalog, name), amount)
    if event.type == "quota.exceeded" and isinstance(name, str):
        title = metric_title(t, _metric(catalog, name))
        return t.gettext("%(metric)s refused: limit reached", metric=title)
    after, before = plan("to_plan"), plan("from_plan")
    if event.type == "plan.changed" and after is not None:
        if data.get("status") == "trial":
            return t.gettext("%(plan)s trial started", plan=after)
        if before is not None:
            return t.gettext("Plan changed: %(before)s → %(after)s", before=before, after=after)
    retold = {
        "subscription.cancelled": translatable("%(plan)s subscription cancelled"),
        "subscription.resumed": translatable("%(plan)s subscription resumed"),
        "subscription.extended": translatable("%(plan)s plan extended"),
        "subscription.expired": translatable("%(plan)s plan expired"),
    }.get(event.type)
    named = plan("plan") if event.type == "subscription.expired" else after
    if retold is not None and named is not None:
        return t.gettext(retold, plan=named)
    return t.gettext(event.title)


def _metric(catalog: Catalog | None, name: str) -> Metric | str:
    """The catalog's metric of that name (its unit and title); a metric the catalog no longer
    has (an old activity entry) by its name."""
    found = None if catalog is None else catalog.metrics.get(name)
    return name if found is None else found


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
