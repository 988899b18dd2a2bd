"""Teams on the profile page, in a real browser: Alice creates a team and switches to it, invites
Bob, who accepts in a browser of his own, and she caps his use; axe-core at 360 and 1280 px with
nothing to scroll sideways, and the screenshots of docs/screenshots/ (with and without
JavaScript). The test has an app of its own: it changes who belongs to which team."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.profile_pages import PROFILE
from tests.support.browser import (
    ALICE,
    BOB,
    SCREENSHOT_WIDTHS,
    assert_accessible,
    assert_no_horizontal_overflow,
    login,
    save_screenshots,
)

LINK = re.compile(r"https?://\S+/profile/invitations/[A-Za-z0-9_-]+")


def looks_right(page: Page) -> None:
    for width in SCREENSHOT_WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        assert_no_horizontal_overflow(page)
        assert_accessible(page)
    page.set_viewport_size({"width": 1280, "height": 800})


@pytest.mark.fresh_app
def test_a_team_is_made_joined_and_capped_through_the_page(
    page: Page, new_context: type[BrowserContext]
) -> None:
    login(page, *ALICE)
    page.goto(PROFILE)
    accounts = page.locator("#pb-accounts")
    looks_right(page)
    save_screenshots(page, "accounts-switcher")

    accounts.get_by_label("New team").fill("Acme")
    accounts.get_by_role("button", name="Create team").click()
    team = page.locator("#pb-team")
    expect(team.get_by_role("heading", level=2)).to_have_text("Team Acme")
    expect(accounts.get_by_label("Acting for")).to_have_value(re.compile("^team:"))

    # Back to the personal account and to the team again, with the switcher.
    accounts.get_by_label("Acting for").select_option(label="Personal")
    accounts.get_by_role("button", name="Switch").click()
    expect(team).to_have_count(0)
    accounts.get_by_label("Acting for").select_option(label="Acme")
    accounts.get_by_role("button", name="Switch").click()
    expect(team).to_be_visible()

    team.get_by_label("Email").fill(BOB[0])
    team.get_by_role("button", name="Send invitation").click()
    # The example app sends no email: the page gives the link to pass on, and keeps it shown.
    alert = page.locator("#pb-toast-alert")
    expect(alert).to_contain_text("Pass this link to bob@example.com")
    # The message's own text, without the dismiss button the script adds to it.
    found = LINK.search(alert.locator("[data-pb-toast]").evaluate("toast => toast.firstChild.data"))
    assert found is not None
    expect(team.locator("[data-pb-invitation='bob@example.com']")).to_be_visible()
    expect(team.locator("[data-pb-seats]")).to_have_text("2 of 2 seats taken")

    bob = new_context().new_page()
    login(bob, *BOB)
    bob.goto(found.group(0))
    expect(bob.get_by_role("heading", level=2)).to_have_text("Team Acme")
    looks_right(bob)
    save_screenshots(bob, "accounts-invitation")
    bob.get_by_role("button", name="Accept the invitation").click()
    expect(bob.locator("#pb-toast-status")).to_contain_text("You joined Acme.")
    expect(bob.locator("#pb-team [data-pb-your-role]")).to_have_text("You: Member")

    page.reload()
    team.get_by_label("Member", exact=True).select_option(value=bob_id(team))
    team.get_by_label("Metric").select_option(label="Analyses")
    team.get_by_label("Cap per period (empty: no cap)").fill("3")
    team.get_by_role("button", name="Save cap").click()
    row = team.locator(f"[data-pb-usage-of='{bob_id(team)}']")
    expect(row).to_contain_text("0 of 3 (cap)")
    looks_right(page)
    save_screenshots(page, "accounts-team")

    # Bob, a member, sees his own row only, and no forms that change the team.
    bob.reload()
    expect(bob.locator("#pb-team [data-pb-usage-of]")).to_have_count(1)
    expect(bob.locator("#pb-team [data-pb-cap-form]")).to_have_count(0)

    # Without JavaScript the same page, and its forms still work.
    plain = new_context(java_script_enabled=False).new_page()
    login(plain, *ALICE)
    plain.goto(PROFILE)
    # A new browser, a new session: the personal account until the switcher says otherwise.
    expect(plain.locator("#pb-team")).to_have_count(0)
    plain.locator("#pb-accounts").get_by_label("Acting for").select_option(label="Acme")
    plain.locator("#pb-accounts").get_by_role("button", name="Switch").click()
    expect(plain.locator("#pb-team")).to_be_visible()
    # axe-core runs as a page script, which this context does not run: the markup is the one
    # checked above; the layout, without the script's changes, must still fit a phone.
    for width in SCREENSHOT_WIDTHS:
        plain.set_viewport_size({"width": width, "height": 800})
        assert_no_horizontal_overflow(plain)
    save_screenshots(plain, "accounts-team-nojs")
    plain_team = plain.locator("#pb-team")
    plain_team.get_by_label("Cap per period (empty: no cap)").fill("")
    plain_team.get_by_label("Member", exact=True).select_option(value=bob_id(plain_team))
    plain_team.get_by_role("button", name="Save cap").click()
    expect(plain.locator("#pb-toast-status")).to_contain_text("was removed")
    expect(plain_team.locator(f"[data-pb-usage-of='{bob_id(plain_team)}']")).not_to_contain_text(
        "(cap)"
    )


def bob_id(team: object) -> str:
    """Bob's user id, as the team card lists him (the member who is not "you")."""
    from playwright.sync_api import Locator

    assert isinstance(team, Locator)
    names = team.locator("[data-pb-member]").evaluate_all(
        "items => items.filter(i => !i.textContent.includes('(you)')).map(i => i.dataset.pbMember)"
    )
    assert len(names) == 1, names
    return str(names[0])
