"""Limit arithmetic: what is left, how full a quota is, when to warn."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Allowance:
    """One metric of one user at one moment: the plan's limit and what has been used of it."""

    metric: str
    limit: int | None
    """``None`` is unlimited."""
    used: int
    resets_at: datetime | None = None
    """When a periodic metric starts from zero again; ``None`` for gauges."""

    @property
    def remaining(self) -> int | None:
        return None if self.limit is None else max(self.limit - self.used, 0)

    @property
    def percentage(self) -> float:
        return usage_percentage(self.used, self.limit)

    def allows(self, amount: int = 1) -> bool:
        return self.limit is None or self.used + amount <= self.limit


def usage_percentage(used: int, limit: int | None) -> float:
    """Percent of the limit used, one decimal, capped at 100; unlimited and zero limits read 0 and 100."""
    if limit is None:
        return 0.0
    if limit <= 0:
        return 100.0
    return round(min(used / limit, 1.0) * 100, 1)


def crossed_threshold(used_before: int, used_after: int, limit: int | None, ratio: float) -> bool:
    """True once, for the consumption that takes usage to ``ratio`` of the limit or past it."""
    if limit is None or limit <= 0:
        return False
    mark = math.ceil(limit * ratio)
    return used_before < mark <= used_after


def validate_amount(amount: int) -> None:
    """Amounts are positive integers: a zero or negative charge would be a refund in disguise."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise ValueError(f"amount must be a positive integer, not {amount!r}")
