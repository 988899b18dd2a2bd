"""How dates are shown to users in messages."""

from __future__ import annotations

from datetime import datetime


def format_day(moment: datetime) -> str:
    """The day of ``moment`` as users read it in messages: 13.11.2025 (day, month, year)."""
    return moment.strftime("%d.%m.%Y")
