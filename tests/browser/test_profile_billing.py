"""Buying and cancelling on the profile page in the browser: the low-quota banner leading to the
purchase dialog and its contact link, the dialog keeping focus, cancelling and resuming; and the
same forms with JavaScript disabled (the dialogs opened by the server, the forms posted)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser.profile_pages import (
    PROFILE,
    open_profile,
    profile_events,
    record_events,
    use_up,
)
from tests.support.browser import ALICE, BOB, LiveServer, PageGuards

NOTICE = "Payment will be available later. Contact us for a manual extension."
# The free plan's analyses per month (the default catalog).
FREE_ANALYSES = 20
BOBS_END = "October 13, 2026"  # a year after the app's clock: his demo subscription


def focus_is_inside(page: Page, selector: str) -> bool:
    inside: bool = page.evaluate(
        "selector => document.querySelector(selector).contains(document.activeElement)", selector
    )
    return inside


@pytest.mark.fresh_app(PROFILE_PAYMENTS_CTA_EMAIL="sales@example.com")
def test_low_quota_banner_leads_to_the_purchase_dialog_and_its_contact_link(
    page: Page, app_server: LiveServer
) -> None:
    use_up(app_server, ALICE[0], "analysis", FREE_ANALYSES - 3)
    record_events(page)
    open_profile(page, ALICE)

    banner = page.locator("#pb-banner-quota")
    expect(banner).to_have_attribute("data-pb-banner", "low-quota")
    expect(banner).to_contain_text("Only 3 analyses left until November 1, 2025.")
    expect(page.locator("#pb-quota-analysis")).to_have_attribute("data-pb-state", "warning")

    buy = banner.get_by_role("button", name="Buy")
    with page.expect_request("**/api/profile/events") as sent:
        buy.click()
    dialog = page.locator("#pb-dialog-buy")
    expect(dialog).to_be_visible()
    assert dialog.evaluate("dialog => dialog.matches(':modal')")
    assert sent.value.post_data_json == {
        "event": "profile:cta_buy_quota",
        "properties": {"source": "banner", "plan": ""},
    }
    buys = [event for event in profile_events(page) if event["name"] == "profile:cta_buy_quota"]
    assert [event["detail"] for event in buys] == [{"source": "banner", "plan": ""}]

    expect(dialog.get_by_role("heading", name="More quota")).to_be_visible()
    expect(dialog).to_contain_text(NOTICE)
    packages = dialog.locator("[data-pb-package]")
    expect(packages).to_have_count(3)  # the paid plans of the default catalog
    for package in packages.all():
        expect(package).to_have_attribute("data-pb-package-status", "coming_soon")
        expect(package).to_contain_text("Coming soon")
    contact = dialog.get_by_role("link", name="Contact us")
    expect(contact).to_have_attribute("href", "mailto:sales@example.com")
    expect(contact).to_have_id("pb-buy-contact")

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(buy).to_be_focused()

    # Nothing left: the banner says so, with the day the quota comes back.
    use_up(app_server, ALICE[0], "analysis", 3)
    page.reload()
    expect(banner).to_have_attribute("data-pb-banner", "limit-reached")
    expect(banner).to_contain_text("Limit reached: 20 analyses of this period are used.")
    expect(banner).to_contain_text("The quota resets on November 1, 2025.")
    expect(page.locator("#pb-quota-analysis")).to_have_attribute("data-pb-state", "blocked")
    expect(banner.get_by_role("button", name="Buy")).to_be_visible()


def test_the_purchase_dialog_keeps_focus_inside_and_escape_gives_it_back(page: Page) -> None:
    open_profile(page, ALICE)
    buy = page.locator("#pb-quotas [data-pb-cta=quotas]")
    buy.click()
    dialog = page.locator("#pb-dialog-buy")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Close")).to_be_focused()

    controls = dialog.locator("a[href], button").count()
    seen = set()
    for key in ["Tab"] * (controls + 2) + ["Shift+Tab"] * (controls + 2):
        page.keyboard.press(key)
        assert focus_is_inside(page, "#pb-dialog-buy"), f"{key} moved the focus out of the dialog"
        seen.add(page.evaluate("document.activeElement.outerHTML"))
    assert len(seen) == controls  # every control of the dialog in turn, and only those

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(buy).to_be_focused()


@pytest.mark.fresh_app
def test_cancelling_states_the_end_date_and_resuming_undoes_it(page: Page) -> None:
    open_profile(page, BOB)
    cancel = page.locator("#pb-cancel-open")
    cancel.click()
    dialog = page.locator("#pb-dialog-cancel")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Your access continues until {BOBS_END}.")
    keep = dialog.get_by_role("button", name="Keep my plan")
    expect(keep).to_be_focused()  # the safe choice first

    keep.click()
    expect(dialog).to_be_hidden()
    expect(cancel).to_be_focused()
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "active")

    cancel.click()
    dialog.get_by_label("Why are you leaving? (optional)").select_option("too_expensive")
    dialog.get_by_role("button", name="Cancel subscription").click()
    expect(page.locator("#pb-toast-status")).to_have_text(
        f"Subscription cancelled. Access is kept until {BOBS_END}."
    )
    expect(page.locator("#pb-banner-cancelled")).to_contain_text(
        f"Your Professional subscription is cancelled. Access is kept until {BOBS_END}."
    )
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "cancelled")
    expect(page.locator("#pb-plan [data-pb-badge]")).to_have_text(f"Cancels on {BOBS_END}")
    expect(page.locator("[data-pb-activity='subscription.cancelled']")).to_have_count(1)

    page.locator("#pb-resume-form").get_by_role("button", name="Resume").click()
    expect(page.locator("#pb-toast-status")).to_have_text("Subscription resumed.")
    expect(page.locator("#pb-banner-cancelled")).to_have_count(0)
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "active")
    expect(page.locator("#pb-plan [data-pb-badge]")).to_have_text("Active")
    expect(page.locator("#pb-cancel-open")).to_be_visible()


# -- without JavaScript ----------------------------------------------------------------------


@pytest.mark.fresh_app
@pytest.mark.browser_context_args(java_script_enabled=False)
def test_editing_works_without_javascript(page: Page, guards: PageGuards) -> None:
    guards.allow_console_error(r"status of 422")  # the refused form's answer
    open_profile(page, ALICE)
    page.locator("#pb-edit-open").click()
    assert page.url.endswith(f"{PROFILE}?dialog=edit")
    dialog = page.locator("#pb-dialog-edit")
    expect(dialog).to_be_visible()

    # Refused: the page comes back with the values as typed, the fields marked, nothing saved.
    page.get_by_label("Company").fill("Acme Recruiting")
    page.get_by_label("Phone").fill("12345")
    with page.expect_response(f"**{PROFILE}edit") as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 422
    expect(dialog).to_be_visible()
    expect(page.locator("#pb-edit-alert")).to_be_visible()
    expect(page.locator("#pb-toast-alert")).to_contain_text("Some fields are invalid")
    phone = page.locator("#pb-field-phone")
    expect(phone).to_have_attribute("aria-invalid", "true")
    expect(phone).to_have_attribute("aria-describedby", "pb-error-phone")
    expect(phone).to_have_value("12345")
    expect(page.locator("#pb-field-company")).to_have_value("Acme Recruiting")
    expect(page.locator("#pb-profile [data-pb-field=company]")).to_have_text("—")

    # Corrected: saved, redirected to the page (a reload never posts again), with the message.
    phone.fill("+7 912 345-67-89")
    with page.expect_response(f"**{PROFILE}edit") as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 303
    assert page.url.endswith(PROFILE)
    expect(page.locator("#pb-toast-status")).to_have_text("Profile saved.")
    expect(page.locator("#pb-dialog-edit")).to_be_hidden()
    expect(page.locator("#pb-profile [data-pb-field=company]")).to_have_text("Acme Recruiting")
    expect(page.locator("#pb-profile [data-pb-field=phone]")).to_have_text("+79123456789")


@pytest.mark.fresh_app
@pytest.mark.browser_context_args(java_script_enabled=False)
def test_cancelling_and_resuming_work_without_javascript(page: Page) -> None:
    open_profile(page, BOB)
    page.locator("#pb-cancel-open").click()
    assert page.url.endswith(f"{PROFILE}?dialog=cancel")
    dialog = page.locator("#pb-dialog-cancel")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"Your access continues until {BOBS_END}.")

    # "Keep my plan" closes the dialog by the browser's own form method="dialog".
    dialog.get_by_role("button", name="Keep my plan").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "active")

    page.locator("#pb-cancel-open").click()
    dialog.get_by_role("button", name="Cancel subscription").click()
    assert page.url.endswith(PROFILE)
    expect(page.locator("#pb-toast-status")).to_have_text(
        f"Subscription cancelled. Access is kept until {BOBS_END}."
    )
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "cancelled")

    page.locator("#pb-resume-form").get_by_role("button", name="Resume").click()
    expect(page.locator("#pb-toast-status")).to_have_text("Subscription resumed.")
    expect(page.locator("#pb-plan")).to_have_attribute("data-pb-status", "active")
