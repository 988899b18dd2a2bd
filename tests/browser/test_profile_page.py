"""The profile page in the browser: viewing it, editing the profile through the JSON API (saved,
refused, or lost to the network), the activity timeline and its empty state, and user-supplied
text that stays text. Every test runs under the strict policy and the `guards` of conftest.py."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from playwright.sync_api import Dialog, Page, Request, Route, expect

from tests.browser.profile_pages import (
    PROFILE,
    open_profile,
    profile_events,
    record_events,
)
from tests.support.browser import ALICE, BOB, PageGuards, login

ME = "/api/profile/me"
SAVED = "Profile saved."
REFUSED = "The profile was not saved: check the highlighted fields."
FAILED = "The profile could not be saved. Try again later."
XSS = "<img src=x onerror=alert(1)>"


def patching(request: Request) -> bool:
    return request.method == "PATCH" and request.url.endswith(ME)


def open_edit_dialog(page: Page) -> None:
    page.locator("#pb-edit-open").click()
    dialog = page.locator("#pb-dialog-edit")
    expect(dialog).to_be_visible()
    # Opened by the script, as a modal, without asking the server for ?dialog=edit.
    assert dialog.evaluate("dialog => dialog.matches(':modal')")
    assert "dialog=" not in page.url


def field(page: Page, name: str) -> str:
    """What the profile card shows for `name`."""
    return page.locator(f"#pb-profile [data-pb-field={name}]").inner_text()


def test_the_page_shows_every_card_with_the_users_own_data(page: Page) -> None:
    record_events(page)
    open_profile(page, BOB)

    for card in ("profile", "plan", "quotas", "usage", "plans", "payments", "activity", "support"):
        expect(page.locator(f"#pb-{card}")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#pb-profile")).to_contain_text("bob@example.com")
    assert field(page, "first_name") == "Bob"
    assert field(page, "company") == "—"

    plan = page.locator("#pb-plan")
    expect(plan).to_have_attribute("data-pb-status", "active")
    expect(plan.locator("[data-pb-badge]")).to_have_text("Active")
    expect(plan.locator(".pb-plan__name")).to_have_text("Professional")
    expect(plan.locator(".pb-plan__price")).to_have_text("RUB 5,990 / month")
    expect(plan).to_contain_text("Paid until October 13, 2026 · 365 days left")
    expect(plan.locator("time")).to_have_attribute("datetime", re.compile(r"^2026-10-13T"))

    analyses = page.locator("#pb-quota-analysis")
    expect(analyses).to_have_attribute("data-pb-state", "ok")
    expect(analyses.locator("progress")).to_have_attribute("max", "1000")
    expect(analyses).to_contain_text("0 of 1,000 used · 1,000 left · resets November 1, 2025")
    expect(page.locator("#pb-quota-active_vacancies")).to_contain_text("0 of 20 active vacancies")
    expect(page.locator("#pb-banner-quota")).to_have_count(0)

    for metric in ("analysis", "export"):
        expect(page.locator(f"#pb-chart-{metric} svg[role=img] title")).to_have_count(1)
    expect(page.locator("#pb-plan-professional")).to_have_attribute("aria-current", "true")
    expect(page.locator("#pb-plans [aria-current=true]")).to_have_count(1)
    expect(page.locator("[data-pb-empty=payments]")).to_be_visible()
    expect(page.locator("#pb-support [data-pb-contact]")).to_have_attribute(
        "href", "mailto:payments@example.com"
    )
    assert [event["name"] for event in profile_events(page)] == ["profile:view"]


@pytest.mark.fresh_app
def test_editing_saves_through_the_api_without_a_reload(page: Page) -> None:
    record_events(page)
    open_profile(page, ALICE)
    page.evaluate("window.sameDocument = true")  # gone if the page were loaded again
    open_edit_dialog(page)

    page.get_by_label("Name").fill("Alicia")
    page.get_by_label("Company").fill("Acme Recruiting")
    page.get_by_label("Country").select_option("DE")
    page.get_by_label("Time zone").select_option("Europe/Berlin")
    page.get_by_label("Phone").fill("+7 912 345-67-89")
    with page.expect_response(lambda response: patching(response.request)) as answer:
        page.get_by_role("button", name="Save").click()

    assert answer.value.status == 200
    expect(page.locator("#pb-toast-status [data-pb-toast]")).to_have_text(SAVED)
    expect(page.locator("#pb-dialog-edit")).to_be_hidden()
    expect(page.locator("#pb-edit-open")).to_be_focused()
    assert field(page, "first_name") == "Alicia"
    assert field(page, "company") == "Acme Recruiting"
    assert field(page, "country") == "Germany"
    assert field(page, "timezone") == "Europe/Berlin"
    assert page.evaluate("window.sameDocument") is True
    update = [event for event in profile_events(page) if event["name"] == "profile:update"]
    assert len(update) == 1
    assert set(update[0]["detail"]["fields"]) >= {"first_name", "company", "country", "phone"}

    page.reload()
    assert field(page, "first_name") == "Alicia"
    assert field(page, "company") == "Acme Recruiting"
    assert field(page, "country") == "Germany"
    assert field(page, "timezone") == "Europe/Berlin"
    assert field(page, "phone") == "+79123456789"  # as the API stores it
    expect(page.locator("[data-pb-activity='profile.updated']")).to_have_count(1)


def test_fields_the_api_refuses_are_marked_and_the_change_rolled_back(
    page: Page, guards: PageGuards
) -> None:
    # The refusal is the API's answer: nothing is saved, so the session's app is not changed.
    guards.allow_console_error(r"status of 422")
    open_profile(page, ALICE)
    before = field(page, "company")
    open_edit_dialog(page)

    page.get_by_label("Company").fill("Initech")
    page.get_by_label("Avatar URL").fill("javascript:alert(1)")
    page.get_by_label("Phone").fill("12345")
    with page.expect_response(lambda response: patching(response.request)) as answer:
        page.get_by_role("button", name="Save").click()

    assert answer.value.status == 422
    expect(page.locator("#pb-edit-alert")).to_have_text(REFUSED)
    expect(page.locator("#pb-edit-alert")).to_have_attribute("role", "alert")
    expect(page.locator("#pb-toast-alert [data-pb-toast]")).to_contain_text(REFUSED)
    expect(page.locator("#pb-toast-alert [data-pb-toast]")).to_be_visible()
    for name in ("avatar_url", "phone"):
        input_ = page.locator(f"#pb-field-{name}")
        expect(input_).to_have_attribute("aria-invalid", "true")
        expect(input_).to_have_attribute("aria-describedby", f"pb-error-{name}")
        expect(page.locator(f"#pb-error-{name}")).to_be_visible()
    expect(page.locator("#pb-error-phone")).to_contain_text("phone number")
    expect(page.locator("#pb-error-avatar_url")).to_contain_text("http or https")
    expect(page.locator("#pb-field-company")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pb-dialog-edit")).to_be_visible()  # still open, to correct the fields
    expect(page.locator("#pb-field-avatar_url")).to_be_focused()  # the first marked field
    assert field(page, "company") == before  # the optimistic value, rolled back

    # Correcting a field clears its mark on the next answer; the others stay marked.
    page.get_by_label("Avatar URL").fill("")
    with page.expect_response(lambda response: patching(response.request)):
        page.get_by_role("button", name="Save").click()
    expect(page.locator("#pb-field-avatar_url")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pb-error-avatar_url")).to_be_hidden()
    expect(page.locator("#pb-field-phone")).to_have_attribute("aria-invalid", "true")

    page.reload()
    assert field(page, "company") == before


def test_a_failing_network_rolls_back_with_an_error_toast(page: Page, guards: PageGuards) -> None:
    guards.allow_console_error(r"status of 503")

    def unavailable(route: Route) -> None:
        if route.request.method != "PATCH":
            route.fallback()
            return
        route.fulfill(status=503, content_type="text/html", body="<h1>Service Unavailable</h1>")

    page.route(f"**{ME}", unavailable)
    open_profile(page, ALICE)
    before = field(page, "company")
    open_edit_dialog(page)
    page.get_by_label("Company").fill("Globex")
    with page.expect_response(lambda response: patching(response.request)) as answer:
        page.get_by_role("button", name="Save").click()

    assert answer.value.status == 503
    expect(page.locator("#pb-toast-alert [data-pb-toast]")).to_contain_text(FAILED)
    expect(page.locator("#pb-edit-alert")).to_have_text(FAILED)
    expect(page.locator("#pb-dialog-edit [aria-invalid=true]")).to_have_count(0)
    assert field(page, "company") == before
    # Shown over the modal (the page behind it is inert), an error toast stays until dismissed.
    page.locator("#pb-toast-alert .pb-toast__close").click()
    expect(page.locator("#pb-toast-alert [data-pb-toast]")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(page.locator("#pb-dialog-edit")).to_be_hidden()
    expect(page.locator("#profile-billing > #pb-toasts")).to_have_count(1)  # back in its place


@pytest.mark.fresh_app
def test_a_new_user_sees_the_empty_activity_state(page: Page) -> None:
    open_profile(page, ALICE)
    activity = page.locator("#pb-activity")
    expect(activity.locator("[data-pb-empty=activity]")).to_have_text(
        "No activity yet. What you use and your plan changes will show here."
    )
    expect(activity.locator("li")).to_have_count(0)


@pytest.mark.fresh_app
def test_the_activity_timeline_shows_what_the_user_did(page: Page) -> None:
    login(page, *ALICE)  # onto the example app's home page, with its Analyze and Export buttons
    for button, done in (
        ("Analyze", "Analysis done."),
        ("Export", "Export ready."),
        ("Analyze", "Analysis done."),
    ):
        page.get_by_role("button", name=button).click()
        expect(page.get_by_text(done)).to_be_visible()
        page.goto("/")

    page.goto(PROFILE)
    items = page.locator("#pb-activity li[data-pb-activity]")
    expect(items).to_have_count(3)
    expect(page.locator("[data-pb-empty=activity]")).to_have_count(0)
    titles = [item.locator(".pb-timeline__title").inner_text() for item in items.all()]
    assert titles == ["1 analysis", "1 export", "1 analysis"]  # the latest first
    for item in items.all():
        expect(item).to_have_attribute("data-pb-activity", "quota.consumed")
        expect(item.locator(".pb-timeline__type")).to_have_text("Quota used")
        moment = item.locator("time").get_attribute("datetime")
        assert moment is not None
        assert datetime.fromisoformat(moment).date().isoformat() == "2025-10-13"
        expect(item.locator("time")).to_contain_text("Oct 13, 2025")


@pytest.mark.fresh_app
def test_user_supplied_markup_renders_as_text(page: Page) -> None:
    dialogs: list[str] = []

    def seen(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", seen)
    open_profile(page, ALICE)
    # Typed into the form: the optimistic update writes it into the card.
    open_edit_dialog(page)
    page.get_by_label("Name").fill(XSS)
    page.get_by_label("Company").fill(XSS)
    with page.expect_response(lambda response: patching(response.request)) as answer:
        page.get_by_role("button", name="Save").click()
    assert answer.value.status == 200
    expect(page.locator("#pb-toast-status [data-pb-toast]")).to_have_text(SAVED)
    assert field(page, "first_name") == XSS
    assert field(page, "company") == XSS
    expect(page.locator("#pb-profile img")).to_have_count(0)

    # Rendered by the server: in the card, the form's values and the avatar's initial.
    page.reload()
    assert field(page, "first_name") == XSS
    assert field(page, "company") == XSS
    expect(page.locator("#pb-field-company")).to_have_value(XSS)
    expect(page.locator("#pb-field-first_name")).to_have_value(XSS)
    expect(page.locator("#pb-profile .pb-avatar--empty")).to_have_text("<")
    expect(page.locator("#pb-profile img")).to_have_count(0)
    expect(page.locator("img[src=x]")).to_have_count(0)
    page.wait_for_load_state("load")
    assert dialogs == []
