"""``Translator``: the texts and formats of one locale, for the profile page, the refusal page and
the emails; and the metrics' words, taken from the catalog (a metric's title and unit).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from ..domain.catalog import Metric, MetricKind, default_catalog, render
from . import formats
from .i18n import ENGLISH, Catalog, cldr_locale, file_catalog, plural_category, request_locale


@dataclass(frozen=True)
class Translator:
    """The texts and formats of one locale."""

    locale: str
    """As Babel spells it: "en", "ru", "pt_BR"."""
    catalog: Catalog

    @property
    def cldr(self) -> Any:
        """Babel's ``Locale`` of this locale (only with the ``babel`` package)."""
        return cldr_locale(self.locale)

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

    def number(self, value: int | Decimal) -> str:
        return formats.number(self.locale, value)

    def day(self, moment: date | datetime) -> str:
        """A day in full: "December 1, 2025", in Russian with the month in the genitive."""
        return formats.day(self.locale, moment)

    def short_day(self, moment: date | datetime) -> str:
        """A day of this year, short: "Nov 24", "24 нояб."."""
        return formats.short_day(self.locale, moment)

    def moment(self, moment: datetime) -> str:
        """A day and a time of day, in ``moment``'s own zone."""
        return formats.moment(self.locale, moment)

    def money(self, amount: Decimal, currency: str) -> str:
        """A price: "2 990 ₽" in Russian; cents only when the amount has them."""
        return formats.money(self.locale, amount, currency)


def translator(configured: str | None) -> Translator:
    """The translator of the current request: ``configured`` (BILLING_LOCALE), else the host's
    Flask-Babel locale, else English (see ``i18n``)."""
    found = request_locale(configured)
    if found is None:
        return Translator("en", ENGLISH)
    return Translator(*found)


def translator_of(locale: str) -> Translator:
    """The translator of ``locale`` from the extension's own catalog (the emails')."""
    return Translator(locale, file_catalog(locale))


# -- the metrics' words ----------------------------------------------------------------------


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
