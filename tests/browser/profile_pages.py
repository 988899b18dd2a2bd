"""What the profile page's browser tests share: opening the page as a demo user, setting up a
user's usage and profile through the app itself, and the DOM events the page dispatches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from example_app.extensions import billing, db
from example_app.models import User
from playwright.sync_api import Page
from sqlalchemy import select

from flask_profile_billing.state import get_state
from tests.support.browser import LiveServer, login

PROFILE: Final = "/profile/"

# Collects the page's own DOM events (they bubble to the document) in window.profileEvents, from
# before the page's script runs; Playwright's init script is outside the page's policy.
EVENT_RECORDER: Final = """
window.profileEvents = [];
for (const name of ["profile:view", "profile:update", "profile:cta_buy_quota"]) {
  document.addEventListener(name, (event) => {
    window.profileEvents.push({name: event.type, detail: event.detail});
  });
}
"""


def open_profile(page: Page, user: tuple[str, str]) -> None:
    """Log in through the example app's form, then open the profile page."""
    login(page, *user)
    page.goto(PROFILE)


def record_events(page: Page) -> None:
    """From the next page on, `profile_events(page)` lists the page's DOM events."""
    page.add_init_script(EVENT_RECORDER)


def profile_events(page: Page) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = page.evaluate("window.profileEvents")
    return events


def user_id(server: LiveServer, email: str) -> str:
    with server.app.app_context():
        found = db.session.scalar(select(User.id).where(User.email == email))
        assert found is not None, f"no user {email}"
        return str(found)


def use_up(server: LiveServer, email: str, metric: str, amount: int) -> None:
    """Charge `amount` of `metric` to the user now (the app's clock), as a guarded view would."""
    uid = user_id(server, email)
    with server.app.app_context():
        billing.consume(uid, metric, amount)


def fill_profile(server: LiveServer, email: str, changes: Mapping[str, str | None]) -> None:
    """Save profile fields as the page and the API do (values already in their stored form)."""
    uid = user_id(server, email)
    with server.app.app_context():
        get_state().profiles.update(uid, dict(changes), source="api")
