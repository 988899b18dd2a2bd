"""How the profile page looks, in English and in Russian: axe-core at 360 and 1280 px, nothing to
scroll sideways on a phone (dialogs open too), and the screenshots of docs/screenshots/.

The example app speaks the browser's language (Flask-Babel's locale from Accept-Language, as a
host sets it up), so the browser's locale ("en-US", "ru-RU") picks the page's. Alice has a month
of use behind her, so that every card has something to show; the tests only look, and share the app.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser.profile_pages import fill_profile, open_profile, use_up
from tests.support.browser import (
    ALICE,
    PHONE_WIDTH,
    SCREENSHOT_WIDTHS,
    LiveServer,
    assert_accessible,
    assert_no_horizontal_overflow,
    save_screenshots,
    start_example_app,
)

LANGUAGES = [("en-US", "en"), ("ru-RU", "ru")]
# What each language shows: the page's title, the Buy button, a charge in the activity timeline,
# the notice of the purchase dialog.
TEXTS = {
    "en": ("Profile and billing", "Buy", "4 analyses", "Payment will be available later."),
    "ru": ("Профиль и оплата", "Купить", "4 анализа", "Оплата будет доступна позже."),
}
# Alice's analyses and exports, by how many days before the app's clock (13 October 2025): 16 of
# the 20 analyses of October are used, so the low-quota banner shows, and the chart has columns in
# two months.
ANALYSES_BY_DAY = {20: 6, 15: 3, 13: 4, 9: 2, 7: 1, 5: 3, 3: 4, 1: 2, 0: 4}
EXPORTS_BY_DAY = {12: 1, 4: 2, 0: 1}


@pytest.fixture(scope="module")
def bilingual_app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_example_app(tmp_path_factory.mktemp("bilingual-app"))
    today = server.clock.now
    for metric, by_day in (("analysis", ANALYSES_BY_DAY), ("export", EXPORTS_BY_DAY)):
        for days_ago, amount in by_day.items():
            server.clock.set(today - timedelta(days=days_ago, hours=2))
            use_up(server, ALICE[0], metric, amount)
    server.clock.set(today)
    fill_profile(
        server,
        ALICE[0],
        {
            "first_name": "Alice",
            "company": "Acme Recruiting",
            "country": "DE",
            "timezone": "Europe/Berlin",
            "phone": "+4930123456",
        },
    )
    yield server
    server.stop()


@pytest.fixture
def app_server(bilingual_app_server: LiveServer) -> LiveServer:
    return bilingual_app_server


@pytest.mark.parametrize(("browser_locale", "language"), LANGUAGES)
def test_the_page_passes_axe_fits_a_phone_and_is_photographed(page: Page, language: str) -> None:
    title, buy, charge, _ = TEXTS[language]
    open_profile(page, ALICE)
    expect(page.locator("html")).to_have_attribute("lang", language)
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    expect(page.locator("#pb-banner-quota").get_by_role("button")).to_have_text(buy)
    charges = page.locator("#pb-activity li[data-pb-activity='quota.consumed'] .pb-timeline__title")
    expect(charges.get_by_text(charge, exact=True).first).to_be_visible()
    expect(page.locator("#pb-activity li")).to_have_count(10)

    for width in SCREENSHOT_WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        assert_no_horizontal_overflow(page)
        assert_accessible(page)
    save_screenshots(page, f"profile-{language}")


@pytest.mark.parametrize(("browser_locale", "language"), LANGUAGES)
def test_the_dialogs_pass_axe_and_fit_a_phone(page: Page, language: str) -> None:
    _, buy, _, notice = TEXTS[language]
    open_profile(page, ALICE)
    page.set_viewport_size({"width": PHONE_WIDTH, "height": 800})
    for opener, dialog in (
        ("#pb-edit-open", "#pb-dialog-edit"),
        ("#pb-banner-quota [data-pb-open=buy]", "#pb-dialog-buy"),
    ):
        page.locator(opener).click()
        expect(page.locator(dialog)).to_be_visible()
        assert_no_horizontal_overflow(page)
        assert_accessible(page)
        page.keyboard.press("Escape")
        expect(page.locator(dialog)).to_be_hidden()

    # The purchase dialog, open over the page, for the documentation.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("button", name=buy).first.click()
    expect(page.locator("#pb-dialog-buy")).to_contain_text(notice)
    save_screenshots(page, f"profile-buy-{language}", full_page=False)
