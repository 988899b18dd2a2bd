"""Billing periods: which usage window a moment falls into.

Usage counters are keyed by (user, metric, period start), so a new period starts from
zero simply because its key is new; no job has to reset anything.  That only works if
every moment maps to exactly one period and consecutive periods tile time with no gaps
or overlaps, which is what this module guarantees.  It is pure (standard library only)
so the rules can be tested without Flask or a database.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Period",
    "PeriodRule",
    "add_months",
    "extend_from_anchor",
    "parse_rule",
    "period_containing",
]

_ROLLING_LENGTH = timedelta(days=30)
_ONE_MICROSECOND = timedelta(microseconds=1)


class PeriodRule(StrEnum):
    """How a plan's quota window is laid out in time.

    The values are stored in configuration and in the database, so they must never change.
    """

    CALENDAR_MONTH = "calendar_month"
    """From local midnight on the 1st to the next 1st, in a configurable time zone."""

    ROLLING_30_DAYS = "rolling_30_days"
    """Consecutive 30-day windows counted from the subscription anchor."""

    ANNIVERSARY_MONTH = "anniversary_month"
    """Monthly on the anchor's day and time, clamped to short months (Jan 31 -> Feb 28)."""


_VALID_NAMES = ", ".join(rule.value for rule in PeriodRule)


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open window ``[start, end)``.

    ``end`` is exclusive so that the instant a period ends is the instant the next one
    starts: a request made exactly at the reset moment is counted in the new period.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        if self.start >= self.end:
            raise ValueError(f"period start {self.start} must be before its end {self.end}")

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` is counted in this period (``end`` itself is not)."""
        _require_aware(moment, "moment")
        return self.start <= moment < self.end


def seconds_until(end: datetime, moment: datetime) -> int:
    """Whole seconds from ``moment`` until ``end``, e.g. for a ``Retry-After`` header.

    Rounded up so a client that waits this long is never early; zero once ``end`` has passed.
    """
    _require_aware(end, "end")
    _require_aware(moment, "moment")
    remaining_us = (end - moment) // _ONE_MICROSECOND
    if remaining_us <= 0:
        return 0
    return -(-remaining_us // 1_000_000)


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar month arithmetic; ``timedelta`` cannot express "one month later".

    The day is clamped to the length of the target month (Jan 31 + 1 month is Feb 28 or
    29), ``months`` may be negative, and the time of day and ``tzinfo`` are kept as they
    are (the result is the same wall-clock time, not the same elapsed duration).
    """
    year_offset, month_index = divmod(moment.month - 1 + months, 12)
    year = moment.year + year_offset
    month = month_index + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def extend_from_anchor(anchor: datetime, expires_at: datetime, months: int) -> datetime:
    """Where a paid period that started at ``anchor`` and ends at ``expires_at`` ends once
    ``months`` more are added.

    A period that ends a whole number of months ``k`` after its anchor (``add_months(anchor, k) ==
    expires_at``) ends ``k + months`` months after the anchor: adding the months to the end instead
    would let one clamp drag every later end down (30 Nov, 30 Dec, 30 Jan, 28 Feb, 28 Mar...), so
    months of extensions would come out shorter than the same months bought at once.  A period
    that ends off that grid (a trial, or a period that carries credited time) has no anchor day to
    return to, so the months are added to its end.  Both moments must be aware; the grid is laid
    out in the anchor's time zone.
    """
    _require_aware(anchor, "anchor")
    _require_aware(expires_at, "expires_at")
    end = expires_at.astimezone(anchor.tzinfo)
    # Only one k can put add_months(anchor, k) in the end's month, so one comparison decides.
    months_after_anchor = _month_index(end) - _month_index(anchor)
    if add_months(anchor, months_after_anchor) == end:
        return add_months(anchor, months_after_anchor + months)
    return add_months(expires_at, months)


def parse_rule(value: str) -> PeriodRule:
    """Turn a configuration string into a rule, failing loudly on typos.

    Surrounding whitespace and letter case are ignored because the value usually comes
    from an environment variable or a settings file written by hand.
    """
    try:
        return PeriodRule(value.strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown period rule {value!r}; expected one of: {_VALID_NAMES}"
        ) from None


def period_containing(
    rule: PeriodRule | str,
    moment: datetime,
    anchor: datetime,
    tz: str | ZoneInfo = "UTC",
) -> Period:
    """The period of ``rule`` that contains ``moment``.

    ``anchor`` is the subscription's period anchor (when it started); ROLLING_30_DAYS and
    ANNIVERSARY_MONTH count from it, CALENDAR_MONTH ignores it and instead uses ``tz``
    (an IANA name or ``ZoneInfo``) to decide where months begin, because "the 1st" means
    the customer's local midnight, not UTC's.  Moments before the anchor still get a
    well-defined period, so clock skew or back-dated events never raise.  Naive
    datetimes are refused: guessing their zone would silently shift period boundaries.
    The returned ``start`` and ``end`` are aware UTC datetimes, so they can be used as
    stable counter keys whatever zone the input was in.
    """
    parsed = parse_rule(rule)
    _require_aware(moment, "moment")
    _require_aware(anchor, "anchor")
    zone = _resolve_zone(tz)
    moment = moment.astimezone(UTC)
    anchor = anchor.astimezone(UTC)
    if parsed is PeriodRule.CALENDAR_MONTH:
        return _calendar_month(moment, zone)
    if parsed is PeriodRule.ROLLING_30_DAYS:
        return _rolling(moment, anchor)
    return _anniversary_month(moment, anchor)


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be a timezone-aware datetime, got naive {value!r}; "
            "attach a tzinfo, e.g. datetime.now(UTC)"
        )


def _resolve_zone(tz: str | ZoneInfo) -> tzinfo:
    """Resolve eagerly, even for rules that ignore it, so a bad setting fails at once."""
    if isinstance(tz, tzinfo):  # ZoneInfo, or any other tzinfo a caller already has
        return tz
    if tz == "UTC":
        # Avoids depending on the tz database (absent on some Windows installs).
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {tz!r}; expected an IANA name") from None


def _calendar_month(moment: datetime, zone: tzinfo) -> Period:
    # The local date names the month; checking the result against the UTC boundaries
    # keeps the periods tiling even where a clock change straddles midnight.
    index = _month_index(moment.astimezone(zone))
    if moment < _month_start(index, zone):
        index -= 1
    elif moment >= _month_start(index + 1, zone):
        index += 1
    return Period(_month_start(index, zone), _month_start(index + 1, zone))


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1


def _month_start(month_index: int, zone: tzinfo) -> datetime:
    """Local midnight on the 1st of the month, in UTC.

    ``fold=0`` picks the first occurrence when midnight is repeated (clocks set back),
    and when midnight is skipped (clocks set forward at 00:00) it yields the transition
    instant itself, which is when that local day actually begins.
    """
    year, month_zero = divmod(month_index, 12)
    return datetime(year, month_zero + 1, 1, tzinfo=zone).astimezone(UTC)


def _rolling(moment: datetime, anchor: datetime) -> Period:
    # timedelta // timedelta floors, so moments before the anchor land in earlier windows.
    windows = (moment - anchor) // _ROLLING_LENGTH
    start = anchor + windows * _ROLLING_LENGTH
    return Period(start, start + _ROLLING_LENGTH)


def _anniversary_month(moment: datetime, anchor: datetime) -> Period:
    # Every start is anchor + k months, never the previous start + 1 month: chaining would
    # let a Feb 28 clamp drag all later periods to the 28th.  The month difference is
    # right to within one step (the day and time of day decide), so this never loops
    # over the whole subscription history.
    k = _month_index(moment) - _month_index(anchor)
    while add_months(anchor, k) > moment:
        k -= 1
    while add_months(anchor, k + 1) <= moment:
        k += 1
    return Period(add_months(anchor, k), add_months(anchor, k + 1))
