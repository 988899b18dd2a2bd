"""The example app's pages in a browser: no answer of 400 or more to anything the browser asks for
by itself, its icon included (which no console or request event of the page reports), and no
console error, on the app's own pages and on the extension's profile page."""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

from tests.support.browser import ALICE, Answer, LiveServer, login

ICONS = {"/favicon.ico", "/static/favicon.svg"}
WAIT = 10.0
"""Seconds the browser has to ask for a page's icon, which it does after the page has loaded."""


def icon_answers(server: LiveServer, since: int) -> list[Answer]:
    return [answer for answer in server.answers[since:] if answer.path in ICONS]


def wait_for_an_icon_request(page: Page, server: LiveServer, since: int) -> None:
    deadline = time.monotonic() + WAIT
    while not icon_answers(server, since):
        unasked = f"the browser asked for no icon: {server.answers[since:]}"
        assert time.monotonic() < deadline, unasked
        page.wait_for_timeout(50)  # lets Playwright's loop deliver the browser's events


def failed(server: LiveServer, since: int) -> list[Answer]:
    return [answer for answer in server.answers[since:] if answer.status >= 400]


def test_no_page_of_the_app_leaves_a_request_unanswered(page: Page, app_server: LiveServer) -> None:
    start = len(app_server.answers)

    page.goto("/login")
    wait_for_an_icon_request(page, app_server, start)
    assert failed(app_server, start) == []
    login(page, *ALICE)
    expect(page.get_by_role("heading", name="Hello, Alice")).to_be_visible()
    assert failed(app_server, start) == []

    # The extension's page names no icon: the browser asks for /favicon.ico.
    before_profile = len(app_server.answers)
    page.goto("/profile/")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    wait_for_an_icon_request(page, app_server, before_profile)
    assert failed(app_server, start) == []
