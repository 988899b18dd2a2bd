"""The browser harness on the example app's own pages: logging in through the form (also without
JavaScript), the home page and the extension's refusal page under a strict Content-Security-Policy,
and the checks themselves catching what they are there to catch."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, expect

from tests.support.browser import (
    ALICE,
    PHONE_WIDTH,
    SCREENSHOT_WIDTHS,
    STRICT_POLICY,
    LiveServer,
    PageGuards,
    assert_accessible,
    assert_no_horizontal_overflow,
    login,
    save_screenshots,
)

# The free plan's exports per month (the default catalog).
FREE_EXPORTS = 5
PROBE = "/harness-probe"


def probe(page: Page, body: str, headers: dict[str, str] | None = None) -> None:
    """Open a page of the app's origin whose HTML the test writes (the app is never asked)."""

    def fulfil(route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", headers=headers or {}, body=body)

    page.route(f"**{PROBE}", fulfil)
    page.goto(PROBE)


def png_width(path: Path) -> int:
    width: int = struct.unpack(">I", path.read_bytes()[16:20])[0]  # IHDR, after the signature
    return width


def test_alice_logs_in_and_sees_her_plan(page: Page) -> None:
    login(page, *ALICE)
    expect(page.get_by_role("heading", name="Hello, Alice")).to_be_visible()
    expect(page.get_by_role("row", name="Plan Free")).to_be_visible()


def test_wrong_password_keeps_the_form_with_its_message(page: Page, guards: PageGuards) -> None:
    guards.allow_console_error(r"status of 401")
    with pytest.raises(AssertionError, match="Wrong email or password"):
        login(page, ALICE[0], "not-her-password")


@pytest.mark.parametrize("width", [PHONE_WIDTH, 1280])
def test_home_page_fits_and_passes_axe(page: Page, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    page.goto("/login")
    assert_no_horizontal_overflow(page)
    assert_accessible(page)
    login(page, *ALICE)
    assert_no_horizontal_overflow(page)
    assert_accessible(page)


def test_pages_carry_the_strict_policy_and_keep_their_styles(page: Page) -> None:
    response = page.goto("/login")
    assert response is not None
    assert STRICT_POLICY in response.header_values("content-security-policy")
    # The example app's stylesheet is a file of its own origin, which the policy lets through.
    width = page.locator("body").evaluate("body => getComputedStyle(body).maxWidth")
    assert width == "672px"  # 42rem


@pytest.mark.fresh_app
def test_the_refusal_page_renders_under_the_strict_policy(page: Page, guards: PageGuards) -> None:
    # Chromium logs every answer of status 400 or more as an error.
    guards.allow_console_error(r"status of 429")
    login(page, *ALICE)
    export = page.get_by_role("button", name="Export")
    for _ in range(FREE_EXPORTS):
        export.click()
        expect(page.get_by_text("Export ready.")).to_be_visible()
    with page.expect_response("**/export") as refused:
        export.click()
    assert refused.value.status == 429
    expect(page.get_by_role("heading", level=1)).to_contain_text("limit")
    # In the browser's locale through the example's Flask-Babel ("Nov 1, 2025, ..." in en-US).
    reset = page.locator(".billing-refusal-reset time")
    expect(reset).to_have_attribute("datetime", re.compile(r"^2025-11-01T00:00:00"))
    expect(reset).to_contain_text("Nov 1, 2025")
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    assert_no_horizontal_overflow(page)
    assert_accessible(page)
    page.get_by_role("link", name="Go back").click()
    expect(page.get_by_role("heading", name="Hello, Alice")).to_be_visible()


@pytest.mark.browser_context_args(java_script_enabled=False)
def test_logging_in_works_without_javascript(page: Page) -> None:
    probe(page, "<title>before</title><script>document.title = 'after'</script>")
    assert page.title() == "before"  # scripts really do not run
    login(page, *ALICE)
    expect(page.get_by_role("heading", name="Hello, Alice")).to_be_visible()


@pytest.mark.parametrize(("browser_locale", "language"), [("en-US", "en"), ("ru-RU", "ru")])
def test_the_browser_asks_for_its_locale(page: Page, language: str) -> None:
    response = page.goto("/login")
    assert response is not None
    assert response.request.all_headers()["accept-language"].startswith(language)


def test_guards_catch_console_and_page_errors_and_other_origins(
    page: Page, guards: PageGuards
) -> None:
    page.route("http://elsewhere.test/**", lambda route: route.abort())
    probe(
        page,
        '<img alt="" src="http://elsewhere.test/pixel.png">'
        "<script>console.error('logged'); throw new Error('thrown');</script>",
    )
    page.wait_for_load_state("networkidle")
    problems = "\n".join(guards.take_problems())
    assert "console error: logged" in problems
    assert "page error: Error: thrown" in problems
    assert "request to another origin" in problems
    assert "http://elsewhere.test/pixel.png" in problems


def test_guards_catch_policy_violations(page: Page, guards: PageGuards) -> None:
    probe(
        page,
        '<p style="color: red">inline style</p><script>document.title = "ran"</script>',
        headers={"Content-Security-Policy": STRICT_POLICY},
    )
    assert page.title() == ""
    problems = guards.take_problems()
    # Each one twice: from the page's event and from Chromium's console message.
    assert any("style-src-attr blocked inline" in problem for problem in problems), problems
    assert any("script-src-elem blocked inline" in problem for problem in problems), problems
    assert any("Applying inline style violates" in problem for problem in problems), problems


def test_overflow_check_names_what_sticks_out(page: Page) -> None:
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    probe(page, '<div id="wide"><img alt="" width="500" height="10"></div>')
    with pytest.raises(AssertionError, match=r"scrollWidth \d+ > clientWidth 360.*img ends at"):
        assert_no_horizontal_overflow(page)


def test_axe_reports_a_serious_violation_readably(page: Page, guards: PageGuards) -> None:
    guards.allow_console_error(r"status of 404")
    probe(page, '<html><body><img src="/nowhere.png"><button></button></body></html>')
    with pytest.raises(AssertionError) as failure:
        assert_accessible(page)
    report = str(failure.value)
    assert "image-alt (critical)" in report
    assert "button-name (critical)" in report
    assert "https://dequeuniversity.com/rules/axe/" in report


def test_screenshots_are_the_same_pixels_every_time(page: Page, tmp_path: Path) -> None:
    login(page, *ALICE)
    first = save_screenshots(page, "home", tmp_path)
    assert [path.name for path in first] == [f"home-{width}.png" for width in SCREENSHOT_WIDTHS]
    assert [png_width(path) for path in first] == list(SCREENSHOT_WIDTHS)
    images = [path.read_bytes() for path in first]
    page.reload()
    save_screenshots(page, "home", tmp_path)
    assert [path.read_bytes() for path in first] == images
    assert page.viewport_size == {"width": 1280, "height": 800}


def test_tests_share_one_app_unless_marked(
    app_server: LiveServer, shared_app_server: LiveServer
) -> None:
    assert app_server is shared_app_server


@pytest.mark.fresh_app(EXAMPLE_DEMO_USERS=False)
def test_a_fresh_app_takes_configuration(
    page: Page, guards: PageGuards, app_server: LiveServer, shared_app_server: LiveServer
) -> None:
    guards.allow_console_error(r"status of 401")
    assert app_server.url != shared_app_server.url
    page.goto("/login")
    page.get_by_label("Email").fill(ALICE[0])
    page.get_by_label("Password").fill(ALICE[1])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
