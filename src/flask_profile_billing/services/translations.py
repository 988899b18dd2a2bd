"""The extension's texts, dates and money in a reader's language: English, or a catalog of the
extension's own translation domain (``flask_profile_billing``, Russian shipped).

Shared by the faces that show them (the profile page, ``page.i18n``, picks the request's locale)
and by the emails (``services.mail``, in the user's locale). Dates and money are formatted with
Babel's CLDR data when the ``babel`` package is installed (a long date with the month's name in the
genitive in Russian, "2 990 ₽"), else in a plain English form ("1 Dec 2025", "2,990 RUB").
"""

from __future__ import annotations

import gettext as stdlib_gettext
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from ..domain.catalog import (
    Metric,
    MetricKind,
    default_catalog,
    english_plural_category,
    render,
)

DOMAIN = "flask_profile_billing"
"""The extension's translation domain: ``translations/<locale>/LC_MESSAGES/<DOMAIN>.mo``."""
TRANSLATIONS_DIRECTORY = Path(__file__).resolve().parent.parent / "translations"
_CODE_BEFORE_DIGIT = re.compile(r"([A-Z]{3})(\d)")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def translatable(message: str) -> str:
    """Marks ``message`` for the catalog where it is written, to be translated where it is shown."""
    return message


class Catalog(Protocol):
    def gettext(self, message: str, /) -> str: ...

    def ngettext(self, singular: str, plural: str, n: int, /) -> str: ...


@dataclass(frozen=True)
class Translator:
    """The texts and formats of one request's locale."""

    locale: str
    """As Babel spells it: "en", "ru", "pt_BR"."""
    catalog: Catalog

    @property
    def cldr(self) -> Any:
        """Babel's ``Locale``, parsed once per locale: a page formats a hundred numbers and
        dates, and each call would otherwise parse the locale's name again."""
        return _cldr_locale(self.locale)

    @property
    def language(self) -> str:
        """For ``<html lang>``: "ru", "pt-BR"."""
        return self.locale.replace("_", "-")

    def gettext(self, message: str, **values: Any) -> str:
        text = self.catalog.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        """The plural form of ``n`` in this locale (Russian has three); ``%(num)s`` is ``n``."""
        values.setdefault("num", self.number(n))
        return self.catalog.ngettext(singular, plural, n) % values

    # -- formats ---------------------------------------------------------------------------

    def number(self, value: int | Decimal) -> str:
        if isinstance(value, int):
            return _formatted_int(self.locale, value)
        numbers = _babel("numbers")
        if numbers is None:
            return f"{value:,}"
        text: str = numbers.format_decimal(value, locale=self.cldr)
        return text

    def day(self, moment: date | datetime) -> str:
        """A day in full: "December 1, 2025", in Russian with the month in the genitive."""
        dates = _babel("dates")
        day = moment.date() if isinstance(moment, datetime) else moment
        if dates is None:
            return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"
        text: str = dates.format_date(day, format="long", locale=self.cldr)
        return text

    def short_day(self, moment: date | datetime) -> str:
        """A day of this year, short: "Nov 24", "24 нояб."."""
        return _short_day(self.locale, moment.date() if isinstance(moment, datetime) else moment)

    def moment(self, moment: datetime) -> str:
        """A day and a time of day, in ``moment``'s own zone."""
        dates = _babel("dates")
        if dates is None:
            return f"{self.day(moment)}, {moment:%H:%M}"
        # The medium date and the short time, without seconds: "Oct 13, 2025, 10:00 AM".
        day: str = dates.format_date(moment, format="medium", locale=self.cldr)
        time: str = dates.format_time(
            moment, format="short", tzinfo=moment.tzinfo, locale=self.cldr
        )
        return f"{day}, {time}"

    def money(self, amount: Decimal, currency: str) -> str:
        """A price: "2 990 ₽" in Russian; cents only when the amount has them."""
        whole = amount == amount.to_integral_value()
        numbers = _babel("numbers")
        if numbers is None:
            return f"{amount:,.0f} {currency}" if whole else f"{amount:,.2f} {currency}"
        pattern = self.cldr.currency_formats["standard"].pattern
        if whole:
            pattern = pattern.split(";")[0].replace(".00", "")
        text: str = numbers.format_currency(
            amount, currency, format=pattern, locale=self.cldr, currency_digits=not whole
        )
        # A currency without a symbol in this locale is written as its code: "RUB 2,990", not
        # "RUB2,990" (CLDR's currency spacing, which Babel leaves out).
        return _CODE_BEFORE_DIGIT.sub("\\1\xa0\\2", text)


# -- the metrics' words ----------------------------------------------------------------


def _metric(metric: Metric | str) -> Metric:
    """A metric of the catalog, or by its name one of the default catalog's (the emails name
    them), else a metric known by its name only."""
    if isinstance(metric, Metric):
        return metric
    return _DEFAULT_METRICS.get(metric) or Metric(metric, MetricKind.PERIODIC, metric, "")


_DEFAULT_METRICS: Mapping[str, Metric] = default_catalog().metrics


def metric_title(t: Translator, metric: Metric | str) -> str:
    """The heading of a metric, from the catalog ("Analyses"; a host's own: its title, or its
    unit's plural form)."""
    return t.gettext(render(_metric(metric).title))


def counted(t: Translator, metric: Metric | str, n: int) -> str:
    """``n`` of a metric in the words its unit gives, in the plural form the reader's language
    takes for ``n``: "1 анализ", "2 анализа", "5 анализов", "21 анализ"."""
    found = _metric(metric)
    unit = found.unit
    if unit is None:
        return f"{t.number(n)} {metric_title(t, found).lower()}"
    if unit.messages is not None:
        return t.ngettext(*unit.messages, n)
    locale, forms = unit.forms(t.locale)
    form = forms.get(plural_category(locale, n)) or forms["other"]
    return f"{t.number(n)} {render(form)}"


def plural_category(locale: str, n: int) -> str:
    """The CLDR plural category of ``n`` in ``locale`` ("one", "few", "many", "other"), by
    Babel's rules; English's without the ``babel`` package."""
    core = _babel("core")
    if core is None:
        return english_plural_category(n)
    try:
        category: str = _cldr_locale(locale).plural_form(n)
    except (ValueError, core.UnknownLocaleError):  # a locale CLDR does not know
        return english_plural_category(n)
    return category


@cache
def file_catalog(locale: str) -> Catalog:
    """The extension's catalog for ``locale`` (English when there is none), read once."""
    return stdlib_gettext.translation(
        DOMAIN, str(TRANSLATIONS_DIRECTORY), languages=[locale], fallback=True
    )


# The usage chart and table write the same few days and counts many times over (each metric, each
# row): formatted once per locale and value.
@lru_cache(maxsize=4096)
def _formatted_int(locale: str, value: int) -> str:
    numbers = _babel("numbers")
    if numbers is None:
        return f"{value:,}"
    text: str = numbers.format_decimal(value, locale=_cldr_locale(locale))
    return text


@lru_cache(maxsize=4096)
def _short_day(locale: str, day: date) -> str:
    dates = _babel("dates")
    if dates is None:
        return f"{day.day} {_MONTHS[day.month - 1]}"
    text: str = dates.format_skeleton("MMMd", day, locale=_cldr_locale(locale))
    return text


@cache
def _cldr_locale(locale: str) -> Any:
    return importlib.import_module("babel.core").Locale.parse(locale)


@cache
def _babel(module: str) -> ModuleType | None:
    """``babel.core``, ``babel.dates`` or ``babel.numbers``, or None without the ``babel`` package."""
    try:
        return importlib.import_module(f"babel.{module}")
    except ImportError:
        return None
