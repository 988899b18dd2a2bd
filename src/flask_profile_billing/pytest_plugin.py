"""pytest fixtures for testing a host app, opt-in: ``pytest -p flask_profile_billing.pytest_plugin``,
or ``pytest_plugins = ["flask_profile_billing.pytest_plugin"]`` in the app's top ``conftest.py``.

The fixtures use the app's own ``app`` fixture (the name pytest-flask uses too):

- ``billing_tables``: the extension's tables, empty, for the test (dropped first, in case an
  earlier run on the same database was interrupted) and dropped after it;
- ``billing_clock``: a ``FrozenClock`` the test moves (``billing_clock.advance(days=31)``);
- ``billing_grant``: ``billing_grant(user_id, "pro", months=1)`` puts a user on a plan.

See docs/testing.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from .domain.subscriptions import Subscription
from .testing import FrozenClock, create_tables, drop_tables, frozen_clock, grant_plan


@pytest.fixture
def billing_tables(app: Flask) -> Iterator[None]:
    """The extension's tables, created empty for the test and dropped after it."""
    drop_tables(app)
    create_tables(app)
    yield
    drop_tables(app)


@pytest.fixture
def billing_clock(app: Flask) -> Iterator[FrozenClock]:
    """The extension's clock, stopped at the test's start; move it with ``advance`` or ``set``."""
    with frozen_clock(app) as clock:
        yield clock


@pytest.fixture
def billing_grant(app: Flask) -> Callable[..., Subscription]:
    """``billing_grant(user_id, plan_code, months=1)``: a plan without payment."""

    def grant(user_id: object, plan_code: str, months: int = 1) -> Subscription:
        return grant_plan(user_id, plan_code, months, app=app)

    return grant
