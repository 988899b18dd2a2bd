"""What several scenario modules share: the two apps gunicorn serves (by the names it imports them
by) with their secrets, the ``Deployment`` the module fixtures hand out, the plan of a load run,
and the checks of the access scenarios (test_api_access.py, test_browser_access.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests
from sqlalchemy import Engine

from flask_profile_billing.store.models import (
    activity,
    payments,
    profiles,
    subscriptions,
    usage_counters,
    usage_events,
)
from tests.adversarial.harness import GunicornServer, Traffic
from tests.adversarial.host import DEFAULT_SECRET_KEY, token_for
from tests.adversarial.report import Figures

# -- the apps -------------------------------------------------------------------------------------

HOST_APP = "tests.adversarial.host:create_app()"
EXAMPLE_APP = "example_app:create_app()"
WEBHOOK_SECRET = "adversarial-webhook-secret"
EXAMPLE_SECRET_KEY = "adversarial-example-secret"


@dataclass(frozen=True)
class Deployment:
    """A running app and a direct connection to its database, for checking what requests did."""

    server: GunicornServer
    engine: Engine

    def url(self, path: str) -> str:
        return self.server.url(path)


# -- load runs (test_load.py, test_load_faults.py) ------------------------------------------------

METRIC = "analysis"
# Requests per user, repeated over the users until a run's total is reached: half of the users
# stay under or at the limit (20), half go past it, some far past.
SENT_PATTERN = (8, 19, 20, 21, 40, 90)
CLIENTS = 16


def planned_requests(total: int, prefix: str) -> dict[str, int]:
    """``total`` requests spread over users by SENT_PATTERN (the last user takes the rest)."""
    plan: dict[str, int] = {}
    left = total
    counts: Iterator[int] = itertools.cycle(SENT_PATTERN)
    for number in itertools.count(1):
        if left <= 0:
            break
        count = min(next(counts), left)
        plan[f"{prefix}-{number}"] = count
        left -= count
    return plan


def time_limit(requests: int) -> float:
    """Seconds the run may take: generous (20 requests a second on two busy cores), but finite."""
    return 60 + requests / 20


# -- access (test_api_access.py, test_browser_access.py) ------------------------------------------

USER_TABLES = (profiles, subscriptions, usage_counters, usage_events, payments, activity)
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
SESSION_COOKIE = "session"
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def assert_unchanged(figures: Figures, before: Any, after: Any, what: str) -> None:
    if before != after:
        figures.lost += 1
    assert before == after, f"{what} changed the database"


def cookie_login(traffic: Traffic, host: Deployment, user: str) -> tuple[requests.Session, str]:
    """A browser session of ``user`` on the host app, and its CSRF token."""
    session = traffic.session()
    response = session.post(
        host.url("/login"), json={"token": token_for(DEFAULT_SECRET_KEY, user)}, headers=JSON
    )
    assert response.status_code == 200, response.text
    assert session.cookies.get(SESSION_COOKIE)
    token: str = response.json()["data"]["csrf_token"]
    return session, token
