"""Carrying the unused part of a paid period over to another plan.

A user who moves from one paid plan to another before the period ends has paid for time they will
not use on the old plan. That time is credited to the new period, converted at the ratio of the two
plans' monthly prices, so the money already paid buys the same value on the new plan: a month of a
plan that costs half as much is worth half a month of the dearer one. Pure (standard library only).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_DOWN, Context, Decimal, localcontext

__all__ = ["credited_time"]

_MICROSECOND = timedelta(microseconds=1)
_MICROSECONDS_PER_SECOND = Decimal(1_000_000)
_WHOLE_SECONDS = Decimal(1)
# Enough digits for any period in microseconds times any price ratio, whatever decimal context the
# host app has set for its own arithmetic.
_ARITHMETIC = Context(prec=34)


def credited_time(
    unused: timedelta, old_monthly_price: Decimal | None, new_monthly_price: Decimal | None
) -> timedelta:
    """The time ``unused`` on a plan at ``old_monthly_price`` is worth on one at
    ``new_monthly_price``: ``unused * old / new``, rounded down to whole seconds.

    When either price is missing (on request) or zero there is no ratio to convert at, so the
    time carries over one for one (still rounded down to whole seconds). Rounding down keeps the
    credit from ever being worth more than what was paid.
    """
    if unused < timedelta(0):
        raise ValueError(f"unused time cannot be negative, got {unused!r}")
    with localcontext(_ARITHMETIC):
        seconds = Decimal(unused // _MICROSECOND) / _MICROSECONDS_PER_SECOND
        old, new = old_monthly_price, new_monthly_price
        if old is not None and new is not None and old > 0 and new > 0:
            seconds = seconds * old / new
        whole = seconds.quantize(_WHOLE_SECONDS, rounding=ROUND_DOWN)
    return timedelta(seconds=int(whole))
