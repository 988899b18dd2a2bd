"""The plan catalog: plans, the metrics they limit and the features they switch on.

Plain values only. The default catalog is the product's published price list, to the number; a host app can
replace it from configuration (see ``catalog_config``). Texts shown to users (plan names and
descriptions, feature labels, limit messages) may be translated by the host: see ``LazyText``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum
from typing import Any

from .errors import UnknownMetricError, UnknownPlanError

DEFAULT_CURRENCY = "RUB"
"""The currency of the default catalog's prices unless the host configures another."""


class LazyText(str):
    """A text the host translates when it is shown (Flask-Babel's ``lazy_gettext``), usable
    wherever the catalog holds a ``str``.

    As a ``str`` its value is the source text, rendered once when the catalog is loaded (outside a
    request: untranslated), so what is stored, compared, sorted and logged does not depend on who
    asked. ``str()``, ``format()``, f-strings and ``__html__`` (Jinja, markupsafe) render it anew,
    in the locale of the moment. ``json.dumps`` writes any ``str`` as its own value, so whatever
    puts a catalog text into JSON calls ``str()`` on it first.
    """

    __slots__ = ("_lazy",)
    _lazy: object

    def __new__(cls, lazy: object) -> LazyText:
        text = super().__new__(cls, str(lazy))
        text._lazy = lazy
        return text

    def __str__(self) -> str:
        try:
            return str(self._lazy)
        except Exception:
            # Showing a text must not fail a charge or a plan change: where the translation
            # cannot be rendered (a host's locale selector that reads the request, called by a
            # command), the source text is shown instead.
            return str.__str__(self)

    def __html__(self) -> str:
        return str(self)

    def __copy__(self) -> LazyText:
        return self  # immutable, like any str

    def __deepcopy__(self, memo: dict[int, Any]) -> LazyText:
        return self

    def __reduce__(self) -> tuple[type[str], tuple[str]]:
        # Caches pickle what they keep (a profile snapshot holds its plan's name), and the
        # machinery behind a lazy translation is not always picklable: a copy keeps the source.
        return str, (str.__str__(self),)


def render(text: str) -> str:
    """``text`` as a plain ``str`` in the locale of the moment (a ``LazyText`` is translated)."""
    return str(text)


def amount_as_number(amount: Decimal | None) -> int | float | None:
    """A price for JSON: whole amounts as integers (2990), others as decimals;
    None ("on request") stays None."""
    if amount is None:
        return None
    return int(amount) if amount == amount.to_integral_value() else float(amount)


PLURAL_CATEGORIES = frozenset({"zero", "one", "two", "few", "many", "other"})
"""CLDR's plural categories: which of them a language uses, and for which numbers, is its rule
(English: one, other; Russian: one, few, many, other)."""


def translatable(message: str) -> str:
    """Marks ``message`` for the extension's catalog where it is written (extracted with the
    page's messages), to be translated where it is shown."""
    return message


def plural_forms(singular: str, plural: str) -> tuple[str, str]:
    """Marks a plural pair of the extension's own translation catalog (extracted with the page's
    messages), translated where it is shown."""
    return singular, plural


def english_plural_category(n: int) -> str:
    return "one" if n == 1 else "other"


@dataclass(frozen=True, slots=True)
class Unit:
    """What a metric counts, in the words a number of it is written with: "1 post", "5 posts";
    in Russian "1 пост", "2 поста", "5 постов", "21 пост"."""

    one: str
    other: str
    """The English (source) forms: of 1, and of any other number."""
    locales: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per locale ("ru", "pt_BR"), the form of each plural category the language uses ("one",
    "few", "many", "other"; "other" at least)."""
    messages: tuple[str, str] | None = None
    """Instead of ``locales``: a plural pair of the extension's own catalog ("%(num)s analysis",
    "%(num)s analyses"), translated by it (the default catalog's metrics)."""

    def forms(self, locale: str) -> tuple[str, Mapping[str, str]]:
        """The forms for ``locale`` and the locale whose plural rule picks among them: the
        locale's own, else its language's ("ru" for "ru_RU"), else English."""
        language = locale.replace("-", "_").split("_")[0]
        for candidate in (locale, language):
            if candidate in self.locales:
                return candidate, self.locales[candidate]
        return "en", {"one": self.one, "other": self.other}

    def english(self, n: int) -> str:
        """``n`` in the English forms: "1 post", "5 posts" (the messages of the API)."""
        form = self.one if english_plural_category(n) == "one" else self.other
        return f"{n} {render(form)}"


class MetricKind(StrEnum):
    # A periodic metric is counted by the extension and starts from zero every billing period;
    # a gauge is a level that the host app counts (active vacancies) and the plan caps.
    PERIODIC = "periodic"
    GAUGE = "gauge"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: MetricKind
    limit_key: str
    """The key under which plans publish this limit (``analyses_per_month`` in the plans API)."""
    message: str
    """Shown when the limit refuses an action; ``{limit}`` is replaced by the plan's limit, and
    ``{amount}`` by the limit counted in the metric's unit ("5 posts")."""
    usage_key: str = ""
    """The key of this metric in usage reports (``analyses``); the name when empty."""
    check_key: str = ""
    """Its flag in the limits check (``can_analyze``); ``can_use_<name>`` when empty."""
    message_key: str = ""
    """Its key in the limits check's ``messages`` (``analyze``); the name when empty."""
    unit: Unit | None = None
    """The words a number of it is written with; without one, the number and the title's
    words ("3 gpu minutes")."""
    title: str = ""
    """Its heading ("Posts"); the unit's plural form, capitalised, when empty, else the name's
    words ("Gpu minutes")."""

    def __post_init__(self) -> None:
        # Frozen: fill the defaults through object.__setattr__, once, at construction.
        if self.unit is not None:
            other = render(self.unit.other)
            title = other[:1].upper() + other[1:]
        else:
            title = self.name.replace("_", " ").capitalize()
        defaults = {
            "usage_key": self.name,
            "check_key": f"can_use_{self.name}",
            "message_key": self.name,
            "title": title,
        }
        for key, default in defaults.items():
            if not getattr(self, key):
                object.__setattr__(self, key, default)

    def amount(self, n: int) -> str:
        """``n`` of this metric in English: "1 post", "5 posts", "3 gpu minutes"."""
        if self.unit is not None:
            return self.unit.english(n)
        return f"{n} {render(self.title).lower()}"

    def limit_message(self, limit: int | None) -> str:
        # render() first: str.format on a LazyText would format its untranslated source.
        amount = "unlimited" if limit is None else self.amount(limit)
        return render(self.message).format(limit=limit, amount=amount)


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    name: str
    description: str = ""
    price_monthly: Decimal | None = Decimal(0)
    """``None`` means "on request" (Enterprise)."""
    price_yearly: Decimal | None = Decimal(0)
    currency: str = DEFAULT_CURRENCY
    limits: Mapping[str, int | None] = field(default_factory=dict)
    """Metric name to limit; a missing metric or ``None`` is unlimited."""
    features: Mapping[str, bool] = field(default_factory=dict)
    sort_order: int = 0
    is_default: bool = False
    seats: int | None = None
    """How many members a team account on this plan may have, its owners included; ``None``
    does not limit them. A personal account has its one user whatever the plan."""

    def has_feature(self, name: str) -> bool:
        return bool(self.features.get(name, False))

    def limit_for(self, metric: str) -> int | None:
        return self.limits.get(metric)

    @property
    def is_free(self) -> bool:
        return self.price_monthly == 0 and self.price_yearly == 0

    @property
    def yearly_discount(self) -> int | None:
        """Whole percent saved by paying yearly ("~16%" for 29900 against 12 x 2990); ``None``
        when either price is on request (nothing to compare), 0 for a free plan."""
        if self.price_monthly is None or self.price_yearly is None:
            return None
        if not self.price_monthly:
            return 0
        saved = 1 - self.price_yearly / (self.price_monthly * 12)
        return int((saved * 100).to_integral_value(rounding=ROUND_FLOOR))

    def price_for(self, months: int) -> Decimal | None:
        """What ``months`` of this plan cost: the yearly price for 12, the monthly one otherwise."""
        if months == 12:
            return self.price_yearly
        return None if self.price_monthly is None else self.price_monthly * months


@dataclass(frozen=True)
class Catalog:
    metrics: Mapping[str, Metric]
    plans: Mapping[str, Plan]
    """Plan code to plan, in display order."""
    feature_labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults = [plan.code for plan in self.plans.values() if plan.is_default]
        if len(defaults) != 1:
            raise ValueError(
                f"a catalog needs exactly one default plan, found {defaults or 'none'}"
            )
        for plan in self.plans.values():
            unknown = set(plan.limits) - set(self.metrics)
            if unknown:
                raise ValueError(f"plan {plan.code!r} limits unknown metrics: {sorted(unknown)}")

    @property
    def default_plan(self) -> Plan:
        return next(plan for plan in self.plans.values() if plan.is_default)

    def plan(self, code: str) -> Plan:
        try:
            return self.plans[code]
        except KeyError:
            known = ", ".join(self.plans)
            raise UnknownPlanError(f"unknown plan {code!r}; known plans: {known}") from None

    def metric(self, name: str) -> Metric:
        try:
            return self.metrics[name]
        except KeyError:
            known = ", ".join(self.metrics)
            raise UnknownMetricError(f"unknown metric {name!r}; known metrics: {known}") from None

    @property
    def periodic_metric_names(self) -> list[str]:
        """The metrics counted per billing period, in catalog order."""
        return [name for name, metric in self.metrics.items() if metric.kind is MetricKind.PERIODIC]

    def feature_label(self, name: str) -> str:
        return self.feature_labels.get(name) or name.replace("_", " ").capitalize()

    def with_limit(self, plan_code: str, metric: str, limit: int | None) -> Catalog:
        """A copy with one plan's limit of one metric replaced."""
        plan = self.plan(plan_code)
        self.metric(metric)
        changed = replace(plan, limits={**plan.limits, metric: limit})
        return replace(self, plans={**self.plans, plan_code: changed})

    @property
    def feature_names(self) -> list[str]:
        names: dict[str, None] = {}
        for plan in self.plans.values():
            names.update(dict.fromkeys(plan.features))
        return list(names)


def _features(enabled: set[str], all_names: list[str]) -> dict[str, bool]:
    return {name: name in enabled for name in all_names}


_FREE = {"basic_analysis", "email_support", "excel_export"}
_STARTER = _FREE | {"advanced_filters"}
_PROFESSIONAL = _STARTER | {
    "api_access",
    "priority_support",
    "custom_reports",
    "bulk_operations",
    "webhook_notifications",
}
_ENTERPRISE = _PROFESSIONAL | {
    "team_collaboration",
    "personal_manager",
    "custom_integrations",
    "sla_guarantee",
    "onboarding_assistance",
}
# Translated where they are shown (the extension's catalog has them).
_FEATURE_LABELS = {
    "basic_analysis": translatable("Basic analysis"),
    "email_support": translatable("Email support"),
    "excel_export": translatable("Excel export"),
    "api_access": translatable("API access"),
    "priority_support": translatable("Priority support"),
    "advanced_filters": translatable("Advanced filters"),
    "custom_reports": translatable("Custom reports"),
    "bulk_operations": translatable("Bulk operations"),
    "webhook_notifications": translatable("Webhook notifications"),
    "team_collaboration": translatable("Team collaboration"),
    "personal_manager": translatable("Personal manager"),
    "custom_integrations": translatable("Custom integrations"),
    "sla_guarantee": translatable("SLA guarantee"),
    "onboarding_assistance": translatable("Onboarding assistance"),
}
_ALL_FEATURES = list(_FEATURE_LABELS)


def default_catalog(currency: str = DEFAULT_CURRENCY) -> Catalog:
    """The four default plans: Free, Starter, Professional and Enterprise, priced in ``currency``
    (the numbers are the published price list, whatever the currency)."""
    metrics = {
        "analysis": Metric(
            "analysis",
            MetricKind.PERIODIC,
            "analyses_per_month",
            translatable("Analysis limit reached ({limit} per month)"),
            usage_key="analyses",
            check_key="can_analyze",
            message_key="analyze",
            unit=Unit(
                "analysis",
                "analyses",
                messages=plural_forms("%(num)s analysis", "%(num)s analyses"),
            ),
            title=translatable("Analyses"),
        ),
        "export": Metric(
            "export",
            MetricKind.PERIODIC,
            "exports_per_month",
            translatable("Export limit reached ({limit} per month)"),
            usage_key="exports",
            check_key="can_export",
            message_key="export",
            unit=Unit(
                "export", "exports", messages=plural_forms("%(num)s export", "%(num)s exports")
            ),
            title=translatable("Exports"),
        ),
        "active_vacancies": Metric(
            "active_vacancies",
            MetricKind.GAUGE,
            "active_vacancies",
            translatable("Active vacancy limit reached ({limit})"),
            check_key="can_add_vacancy",
            message_key="vacancy",
            unit=Unit(
                "active vacancy",
                "active vacancies",
                messages=plural_forms("%(num)s active vacancy", "%(num)s active vacancies"),
            ),
            title=translatable("Active vacancies"),
        ),
    }

    def limits(
        vacancies: int | None, analyses: int | None, exports: int | None
    ) -> dict[str, int | None]:
        return {"active_vacancies": vacancies, "analysis": analyses, "export": exports}

    plans = [
        Plan(
            "free",
            "Free",
            translatable("For trying the platform: one vacancy and a few analyses a month."),
            Decimal(0),
            Decimal(0),
            limits=limits(1, 20, 5),
            features=_features(_FREE, _ALL_FEATURES),
            currency=currency,
            sort_order=0,
            is_default=True,
            seats=2,
        ),
        Plan(
            "starter",
            "Starter",
            translatable("For small teams hiring regularly."),
            Decimal(2990),
            Decimal(29900),
            limits=limits(5, 200, 50),
            features=_features(_STARTER, _ALL_FEATURES),
            currency=currency,
            sort_order=1,
            seats=5,
        ),
        Plan(
            "professional",
            "Professional",
            translatable(
                "For recruiting agencies: API access, priority support and bulk operations."
            ),
            Decimal(5990),
            Decimal(59900),
            limits=limits(20, 1000, 200),
            features=_features(_PROFESSIONAL, _ALL_FEATURES),
            currency=currency,
            sort_order=2,
            seats=20,
        ),
        Plan(
            "enterprise",
            "Enterprise",
            translatable("Unlimited use, a personal manager and an SLA. Price on request."),
            None,
            None,
            limits=limits(None, None, None),
            features=_features(_ENTERPRISE, _ALL_FEATURES),
            currency=currency,
            sort_order=3,
        ),
    ]
    return Catalog(metrics, {plan.code: plan for plan in plans}, _FEATURE_LABELS)
