"""Helpers for testing a host app that uses the extension: a clock the test moves, plans granted
without payment, and the extension's tables set up and torn down with the app's.

Nothing here runs unless a test calls it; the fixtures built on it are in
``flask_profile_billing.pytest_plugin`` (opt-in: ``-p flask_profile_billing.pytest_plugin``).
See docs/testing.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from flask import Flask, current_app

from . import ProfileBilling, Subscription
from .state import EXTENSION_KEY, BillingState

__all__ = ["FrozenClock", "create_tables", "drop_tables", "frozen_clock", "grant_plan"]


class FrozenClock:
    """A clock that stands still until the test moves it: periods, trials and expiry without
    waiting. Called, it gives the time (an aware UTC ``datetime``), as ``BILLING_CLOCK`` expects."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = _aware(now or datetime.now(UTC).replace(microsecond=0))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)`` (``days=31``, ``hours=1``); the new time."""
        self.now += timedelta(**delta)
        return self.now

    def set(self, moment: datetime) -> datetime:
        """Move to ``moment`` (aware), forward or back; the new time."""
        self.now = _aware(moment)
        return self.now

    def __repr__(self) -> str:
        return f"FrozenClock({self.now.isoformat()})"


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"the billing clock needs an aware datetime, not {moment!r}")
    return moment.astimezone(UTC)


def _state(app: Flask | None) -> tuple[Flask, BillingState]:
    found: Flask = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    state = found.extensions.get(EXTENSION_KEY)
    if not isinstance(state, BillingState):
        raise RuntimeError(f"ProfileBilling is not initialised for the app {found.name!r}")
    return found, state


@contextmanager
def frozen_clock(app: Flask | None = None, at: datetime | None = None) -> Iterator[FrozenClock]:
    """Stop the extension's clock for ``app`` (the current app by default) at ``at`` (now by
    default) for the ``with`` block, and give the clock to move; the app's own clock
    (``BILLING_CLOCK``, or the system's) is back afterwards.

    Only the extension's notion of time is frozen: periods, quota resets, trials, expiry,
    maintenance and notifications follow it; the app's own code and the database's ``now()`` do
    not.
    """
    _, state = _state(app)
    clock = FrozenClock(at)
    runtime = state.runtime
    previous = runtime.settings
    runtime.settings = dataclasses.replace(previous, clock=clock)
    try:
        yield clock
    finally:
        runtime.settings = previous


def grant_plan(
    user_id: object, plan_code: str, months: int = 1, *, app: Flask | None = None
) -> Subscription:
    """Put a user on a plan for 1 or 12 months without payment, as ``flask billing grant`` does
    (the current app by default)."""
    found, _ = _state(app)
    with found.app_context():
        return ProfileBilling().change_plan(str(user_id), plan_code, months)


def create_tables(app: Flask | None = None) -> None:
    """``ProfileBilling.create_all()`` for ``app`` (the current app by default)."""
    found, _ = _state(app)
    with found.app_context():
        ProfileBilling().create_all()


def drop_tables(app: Flask | None = None) -> None:
    """``ProfileBilling.drop_all()`` for ``app`` (the current app by default)."""
    found, _ = _state(app)
    with found.app_context():
        ProfileBilling().drop_all()
