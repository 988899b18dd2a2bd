"""Numbers, days, moments and money for people, per locale.

With the ``babel`` package, in CLDR's forms of the locale (a long date with the month's name in the
genitive in Russian, "2 990 ₽"); without it, in a plain English form ("1 Dec 2025", "2,990 RUB").
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache

from .i18n import babel_module, cldr_locale

_CODE_BEFORE_DIGIT = re.compile(r"([A-Z]{3})(\d)")
# Month names of the plain English form, whatever the process's C locale says.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def number(locale: str, value: int | Decimal) -> str:
    if isinstance(value, int):
        return _formatted_int(locale, value)
    numbers = babel_module("babel.numbers")
    if numbers is None:
        return f"{value:,}"
    text: str = numbers.format_decimal(value, locale=cldr_locale(locale))
    return text


def day(locale: str, moment: date | datetime) -> str:
    """A day in full: "December 1, 2025", in Russian with the month in the genitive."""
    dates = babel_module("babel.dates")
    the_day = moment.date() if isinstance(moment, datetime) else moment
    if dates is None:
        return f"{the_day.day} {_MONTHS[the_day.month - 1]} {the_day.year}"
    text: str = dates.format_date(the_day, format="long", locale=cldr_locale(locale))
    return text


def short_day(locale: str, moment: date | datetime) -> str:
    """A day of this year, short: "Nov 24", "24 нояб."."""
    return _short_day(locale, moment.date() if isinstance(moment, datetime) else moment)


def moment(locale: str, when: datetime) -> str:
    """A day and a time of day, in ``when``'s own zone, without seconds."""
    dates = babel_module("babel.dates")
    if dates is None:
        return f"{day(locale, when)}, {when:%H:%M}"
    # The medium date and the short time: "Oct 13, 2025, 10:00 AM".
    the_day: str = dates.format_date(when, format="medium", locale=cldr_locale(locale))
    time: str = dates.format_time(
        when, format="short", tzinfo=when.tzinfo, locale=cldr_locale(locale)
    )
    return f"{the_day}, {time}"


def moment_in_zone(locale: str | None, when: datetime) -> str:
    """``when`` in its own zone, the zone named: in ``locale``'s medium form ("Nov 1, 2025,
    12:00:00 AM (UTC)"); with no locale chosen (or without Babel), "1 Nov 2025, 00:00 (UTC)"."""
    zone_name = getattr(when.tzinfo, "key", None) or when.tzname() or "UTC"
    dates = babel_module("babel.dates")
    if locale is None or dates is None:
        month = _MONTHS[when.month - 1]
        return f"{when.day} {month} {when.year}, {when:%H:%M} ({zone_name})"
    # No tzinfo: an aware moment is written in its own zone, the reader's.
    text: str = dates.format_datetime(when, format="medium", locale=cldr_locale(locale))
    return f"{text} ({zone_name})"


def money(locale: str, amount: Decimal, currency: str) -> str:
    """A price: "2 990 ₽" in Russian; cents only when the amount has them."""
    whole = amount == amount.to_integral_value()
    numbers = babel_module("babel.numbers")
    if numbers is None:
        return f"{amount:,.0f} {currency}" if whole else f"{amount:,.2f} {currency}"
    cldr = cldr_locale(locale)
    pattern = cldr.currency_formats["standard"].pattern
    if whole:
        pattern = pattern.split(";")[0].replace(".00", "")
    text: str = numbers.format_currency(
        amount, currency, format=pattern, locale=cldr, currency_digits=not whole
    )
    # A currency without a symbol in this locale is written as its code: "RUB 2,990", not
    # "RUB2,990" (CLDR's currency spacing, which Babel leaves out).
    return _CODE_BEFORE_DIGIT.sub("\\1\xa0\\2", text)


# The usage chart and table write the same few days and counts many times over (each metric, each
# row): formatted once per locale and value.
@lru_cache(maxsize=4096)
def _formatted_int(locale: str, value: int) -> str:
    numbers = babel_module("babel.numbers")
    if numbers is None:
        return f"{value:,}"
    text: str = numbers.format_decimal(value, locale=cldr_locale(locale))
    return text


@lru_cache(maxsize=4096)
def _short_day(locale: str, the_day: date) -> str:
    dates = babel_module("babel.dates")
    if dates is None:
        return f"{the_day.day} {_MONTHS[the_day.month - 1]}"
    text: str = dates.format_skeleton("MMMd", the_day, locale=cldr_locale(locale))
    return text
