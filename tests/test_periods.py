"""Billing periods: the windows usage counters are keyed by."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_profile_billing.domain.periods import (
    Period,
    PeriodRule,
    add_months,
    parse_rule,
    period_containing,
    seconds_until,
)

US = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# --- anniversary month ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "start", "end"),
    [
        (utc(2024, 2, 10), utc(2024, 1, 31, 10), utc(2024, 2, 29, 10)),
        (utc(2024, 3, 1), utc(2024, 2, 29, 10), utc(2024, 3, 31, 10)),
        # Not chained: the period after Feb 29 starts on Mar 31, not Mar 29.
        (utc(2024, 3, 30), utc(2024, 2, 29, 10), utc(2024, 3, 31, 10)),
        (utc(2024, 4, 15), utc(2024, 3, 31, 10), utc(2024, 4, 30, 10)),
        (utc(2024, 5, 15), utc(2024, 4, 30, 10), utc(2024, 5, 31, 10)),
        (utc(2024, 6, 15), utc(2024, 5, 31, 10), utc(2024, 6, 30, 10)),
        # Non-leap year: February is clamped to the 28th.
        (utc(2025, 2, 28, 9), utc(2025, 1, 31, 10), utc(2025, 2, 28, 10)),
        (utc(2025, 3, 1), utc(2025, 2, 28, 10), utc(2025, 3, 31, 10)),
        # Years later, still on the anchor's day.
        (utc(2030, 8, 31, 12), utc(2030, 8, 31, 10), utc(2030, 9, 30, 10)),
    ],
)
def test_anniversary_month_clamps_each_month_from_the_anchor(
    moment: datetime, start: datetime, end: datetime
) -> None:
    anchor = utc(2024, 1, 31, 10)
    assert period_containing(PeriodRule.ANNIVERSARY_MONTH, moment, anchor) == Period(start, end)


def test_anniversary_day_before_the_anchor_hour_is_still_the_previous_period() -> None:
    anchor = utc(2024, 1, 15, 10)
    period = period_containing("anniversary_month", utc(2024, 3, 15, 9, 59), anchor)
    assert period == Period(utc(2024, 2, 15, 10), utc(2024, 3, 15, 10))


def test_anniversary_month_rolls_over_the_year() -> None:
    anchor = utc(2024, 12, 15, 8)
    period = period_containing("anniversary_month", utc(2025, 1, 2), anchor)
    assert period == Period(utc(2024, 12, 15, 8), utc(2025, 1, 15, 8))


def test_anniversary_month_before_the_anchor() -> None:
    anchor = utc(2024, 3, 31, 10)
    period = period_containing("anniversary_month", utc(2024, 3, 1), anchor)
    assert period == Period(utc(2024, 2, 29, 10), utc(2024, 3, 31, 10))


# --- boundaries (end is exclusive) ---------------------------------------------------

BOUNDARY_CASES = [
    (PeriodRule.CALENDAR_MONTH, utc(2024, 12, 1), utc(2025, 1, 1)),
    (PeriodRule.ROLLING_30_DAYS, utc(2024, 12, 10, 6), utc(2025, 1, 9, 6)),
    (PeriodRule.ANNIVERSARY_MONTH, utc(2024, 12, 10, 6), utc(2025, 1, 10, 6)),
]


@pytest.mark.parametrize(("rule", "start", "end"), BOUNDARY_CASES)
def test_boundary_instant_belongs_to_the_new_period(
    rule: PeriodRule, start: datetime, end: datetime
) -> None:
    anchor = utc(2024, 12, 10, 6)
    assert period_containing(rule, end, anchor).start == end
    assert not period_containing(rule, start, anchor).contains(end)


@pytest.mark.parametrize(("rule", "start", "end"), BOUNDARY_CASES)
def test_one_microsecond_before_the_end_belongs_to_the_old_period(
    rule: PeriodRule, start: datetime, end: datetime
) -> None:
    anchor = utc(2024, 12, 10, 6)
    assert period_containing(rule, end - US, anchor) == Period(start, end)
    assert period_containing(rule, start, anchor) == Period(start, end)


# --- calendar month ------------------------------------------------------------------


def test_calendar_month_uses_utc_by_default_whatever_the_input_zone() -> None:
    moment = datetime(2025, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    period = period_containing(PeriodRule.CALENDAR_MONTH, moment, anchor=utc(2020, 1, 1))
    assert period == Period(utc(2025, 12, 1), utc(2026, 1, 1))


def test_calendar_month_ignores_the_anchor() -> None:
    moment = utc(2025, 6, 15)
    assert period_containing("calendar_month", moment, utc(2025, 6, 20, 13)) == Period(
        utc(2025, 6, 1), utc(2025, 7, 1)
    )


@pytest.mark.parametrize(
    ("tz", "moment", "start", "end"),
    [
        # Moscow left summer time on 2010-10-31: October began at +04, November at +03.
        ("Europe/Moscow", utc(2010, 10, 15), utc(2010, 9, 30, 20), utc(2010, 10, 31, 21)),
        ("Europe/Moscow", utc(2010, 11, 15), utc(2010, 10, 31, 21), utc(2010, 11, 30, 21)),
        # Already January in Moscow while still December in UTC.
        ("Europe/Moscow", utc(2024, 12, 31, 22), utc(2024, 12, 31, 21), utc(2025, 1, 31, 21)),
        # New York: DST starts 2024-03-10 and ends 2024-11-03.
        ("America/New_York", utc(2024, 3, 15), utc(2024, 3, 1, 5), utc(2024, 4, 1, 4)),
        ("America/New_York", utc(2024, 11, 15), utc(2024, 11, 1, 4), utc(2024, 12, 1, 5)),
        # Still October in New York although November in UTC.
        ("America/New_York", utc(2024, 11, 1, 3), utc(2024, 10, 1, 4), utc(2024, 11, 1, 4)),
        # Asuncion skipped midnight on 2017-10-01: the day began at 01:00 -03 (04:00 UTC).
        ("America/Asuncion", utc(2017, 10, 1, 4), utc(2017, 10, 1, 4), utc(2017, 11, 1, 3)),
        ("America/Asuncion", utc(2017, 10, 1, 4) - US, utc(2017, 9, 1, 4), utc(2017, 10, 1, 4)),
    ],
)
def test_calendar_month_starts_at_local_midnight_across_dst(
    tz: str, moment: datetime, start: datetime, end: datetime
) -> None:
    period = period_containing("calendar_month", moment, utc(2000, 1, 1), tz=tz)
    assert period == Period(start, end)
    assert period_containing("calendar_month", moment, utc(2000, 1, 1), ZoneInfo(tz)) == period


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        period_containing("calendar_month", utc(2024, 1, 1), utc(2024, 1, 1), tz="Mars/Olympus")


# --- rolling 30 days -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "windows"),
    [
        (timedelta(0), 0),
        (timedelta(days=29, hours=23), 0),
        (timedelta(days=30), 1),
        (timedelta(days=1000, hours=5), 33),
        (-US, -1),
        (-timedelta(days=30), -1),
        (-timedelta(days=30) - US, -2),
        (-timedelta(days=365), -13),
    ],
)
def test_rolling_30_days_counts_whole_windows_from_the_anchor(
    offset: timedelta, windows: int
) -> None:
    anchor = utc(2024, 1, 1, 12, 30)
    period = period_containing(PeriodRule.ROLLING_30_DAYS, anchor + offset, anchor)
    expected_start = anchor + windows * timedelta(days=30)
    assert period == Period(expected_start, expected_start + timedelta(days=30))


def test_results_are_utc_even_for_a_non_utc_anchor() -> None:
    anchor = datetime(2024, 1, 31, 13, tzinfo=ZoneInfo("Europe/Moscow"))
    period = period_containing("anniversary_month", utc(2024, 2, 15), anchor)
    assert period == Period(utc(2024, 1, 31, 10), utc(2024, 2, 29, 10))
    assert period.start.tzinfo is UTC
    assert period.end.tzinfo is UTC


# --- add_months ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (utc(2024, 1, 31, 10), 1, utc(2024, 2, 29, 10)),
        (utc(2023, 1, 31, 10), 1, utc(2023, 2, 28, 10)),
        (utc(2024, 1, 31), 2, utc(2024, 3, 31)),
        (utc(2024, 3, 31), -1, utc(2024, 2, 29)),
        (utc(2024, 1, 15), -1, utc(2023, 12, 15)),
        (utc(2024, 5, 31), -15, utc(2023, 2, 28)),
        (utc(2024, 11, 30), 3, utc(2025, 2, 28)),
        (utc(2024, 12, 31), 1, utc(2025, 1, 31)),
        (utc(2024, 8, 31), 0, utc(2024, 8, 31)),
        (utc(2024, 2, 29), 48, utc(2028, 2, 29)),
    ],
)
def test_add_months_clamps_the_day(moment: datetime, months: int, expected: datetime) -> None:
    assert add_months(moment, months) == expected


def test_add_months_keeps_wall_time_and_tzinfo() -> None:
    moscow = ZoneInfo("Europe/Moscow")
    result = add_months(datetime(2024, 1, 31, 23, 45, 7, 12, tzinfo=moscow), 1)
    assert result == datetime(2024, 2, 29, 23, 45, 7, 12, tzinfo=moscow)
    assert result.tzinfo is moscow


# --- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "anchor"),
    [
        (datetime(2024, 1, 1), utc(2024, 1, 1)),
        (utc(2024, 1, 1), datetime(2024, 1, 1)),
    ],
)
@pytest.mark.parametrize("rule", list(PeriodRule))
def test_naive_datetimes_are_refused(rule: PeriodRule, moment: datetime, anchor: datetime) -> None:
    with pytest.raises(ValueError, match="naive"):
        period_containing(rule, moment, anchor)


def test_period_refuses_naive_moments() -> None:
    period = Period(utc(2024, 1, 1), utc(2024, 2, 1))
    with pytest.raises(ValueError, match="naive"):
        period.contains(datetime(2024, 1, 15))
    with pytest.raises(ValueError, match="naive"):
        seconds_until(period.end, datetime(2024, 1, 15))


@pytest.mark.parametrize("bad", ["monthly", "", "calendar-month"])
def test_unknown_rule_is_refused_with_the_valid_names(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown period rule") as from_parse:
        parse_rule(bad)
    with pytest.raises(ValueError, match="unknown period rule") as from_period:
        period_containing(bad, utc(2024, 1, 1), utc(2024, 1, 1))
    for rule in PeriodRule:
        assert rule.value in str(from_parse.value)
        assert rule.value in str(from_period.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("calendar_month", PeriodRule.CALENDAR_MONTH),
        (" Rolling_30_Days\n", PeriodRule.ROLLING_30_DAYS),
        (PeriodRule.ANNIVERSARY_MONTH, PeriodRule.ANNIVERSARY_MONTH),
    ],
)
def test_parse_rule(value: str, expected: PeriodRule) -> None:
    assert parse_rule(value) is expected


# --- seconds_until ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "seconds"),
    [
        (utc(2024, 1, 1), 10),
        (utc(2024, 1, 1) + US, 10),  # rounded up: waiting 9 s would be too early
        (utc(2024, 1, 1, 0, 0, 9), 1),
        (utc(2024, 1, 1, 0, 0, 10) - US, 1),
        (utc(2024, 1, 1, 0, 0, 10), 0),
        (utc(2024, 1, 1, 1), 0),  # never negative
        (datetime(2024, 1, 1, 3, 0, 5, tzinfo=ZoneInfo("Europe/Moscow")), 5),
    ],
)
def test_seconds_until(moment: datetime, seconds: int) -> None:
    assert seconds_until(utc(2024, 1, 1, 0, 0, 10), moment) == seconds


def test_period_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="before"):
        Period(utc(2024, 1, 1), utc(2024, 1, 1))


# --- property: periods tile time -----------------------------------------------------

aware_moments = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(2100, 12, 31),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45))]
    )
    | st.timezones(),
)
zones = (
    st.sampled_from(
        ["UTC", "Europe/Moscow", "America/New_York", "America/Asuncion", "Australia/Lord_Howe"]
    )
    | st.timezones()
)


@settings(max_examples=300, deadline=None)
@given(
    rule=st.sampled_from(PeriodRule),
    moment=aware_moments,
    anchor=aware_moments,
    tz=zones,
)
def test_periods_tile_time(
    rule: PeriodRule, moment: datetime, anchor: datetime, tz: str | ZoneInfo
) -> None:
    period = period_containing(rule, moment, anchor, tz)

    assert period.contains(moment)
    assert period.start < period.end
    assert period.start.utcoffset() == timedelta(0)
    assert period.end.utcoffset() == timedelta(0)
    assert period_containing(rule, period.end, anchor, tz).start == period.end
    assert period_containing(rule, period.start - US, anchor, tz).end == period.start
