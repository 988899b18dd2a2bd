"""The profile page inside a Bootstrap-Flask layout (tests/support/layouts/bootstrap/), whose
`content` block is the whole body: in a real browser the host's navbar and container stay, the
real Bootstrap-Flask's files (served locally) and the page's own stylesheet and script all apply
under the harness's strict policy, the page fits a phone and passes axe, and it is photographed
for the guide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask_bootstrap import Bootstrap5
from jinja2 import ChoiceLoader, FileSystemLoader
from playwright.sync_api import Page, expect

from tests.support.browser import (
    ALICE,
    SCREENSHOT_WIDTHS,
    LiveServer,
    assert_accessible,
    assert_no_horizontal_overflow,
    login,
    save_screenshots,
)

LAYOUTS = Path(__file__).resolve().parents[1] / "support" / "layouts"


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {"BILLING_BASE_TEMPLATE": "bootstrap_layout.html", "BOOTSTRAP_SERVE_LOCAL": True}


@pytest.fixture(autouse=True)
def bootstrap_host(app_server: LiveServer) -> None:
    """Bootstrap-Flask on the example app, and the host's templates folder before its own."""
    app = app_server.app
    Bootstrap5(app)
    app.jinja_loader = ChoiceLoader([FileSystemLoader(LAYOUTS / "bootstrap"), app.jinja_loader])


def test_the_page_keeps_the_hosts_navbar_and_bootstrap_and_its_own_looks(page: Page) -> None:
    login(page, *ALICE)
    response = page.goto("/profile/")
    assert response is not None
    assert response.status == 200

    navbar = page.locator("#host-navbar")
    expect(navbar).to_be_visible()
    expect(navbar.get_by_role("link", name="Profile")).to_have_attribute("aria-current", "page")
    expect(page.locator("#host-container #profile-billing")).to_be_visible()
    # Bootstrap's stylesheet applies (a flex navbar, a centred container)...
    assert navbar.evaluate("nav => getComputedStyle(nav).display") == "flex"
    container = page.locator("#host-container")
    assert container.evaluate("el => getComputedStyle(el).marginLeft") != "0px"
    # ...and so do the page's stylesheet and script: a grid of cards, a dialog that opens.
    grid = page.locator(".pb-grid").first
    assert grid.evaluate("el => getComputedStyle(el).display") == "grid"
    page.locator("#pb-edit-open").click()
    expect(page.locator("#pb-dialog-edit")).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(page.locator("#pb-dialog-edit")).not_to_have_attribute("open", "")
    page.evaluate("document.activeElement.blur()")  # no focus ring in the pictures

    for width in SCREENSHOT_WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        assert_no_horizontal_overflow(page)
        assert_accessible(page)
    save_screenshots(page, "profile-bootstrap-layout")
