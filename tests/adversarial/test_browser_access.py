"""Access through a browser to the example app as it ships, over real HTTP to gunicorn: the login
cookie's flags, ``next=`` that never leads off the site, CSRF on every form, and markup that is
escaped wherever it is shown. Every refusal is checked in the database too.

"Lost" in the figures: refused requests that changed the database anyway.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from sqlalchemy import Engine, text

from tests.adversarial.harness import Traffic, user_rows
from tests.adversarial.report import Figures
from tests.adversarial.scenarios import (
    HTML,
    IMG,
    JSON,
    SCRIPT,
    SESSION_COOKIE,
    USER_TABLES,
    Deployment,
    assert_unchanged,
)

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


# -- helpers -------------------------------------------------------------------------------------


def set_cookie_headers(response: requests.Response) -> list[str]:
    headers: list[str] = response.raw.headers.getlist("Set-Cookie")
    return headers


def is_same_origin(location: str, deployment: Deployment) -> bool:
    """A redirect target on the app itself: a path, or an absolute URL of its own origin."""
    parts = urlsplit(location)
    if not parts.scheme and not parts.netloc:
        return location.startswith("/") and not location.startswith(("//", "/\\"))
    own = urlsplit(deployment.server.base_url)
    return (parts.scheme, parts.netloc) == (own.scheme, own.netloc)


def example_login(
    traffic: Traffic, example: Deployment, email: str, password: str, next_url: str | None = None
) -> tuple[requests.Session, requests.Response]:
    session = traffic.session()
    form = session.get(example.url("/login"))
    match = CSRF_FIELD.search(form.text)
    assert match is not None, form.text
    path = "/login" if next_url is None else f"/login?next={quote(next_url, safe='')}"
    response = session.post(
        example.url(path),
        data={"email": email, "password": password, "csrf_token": match[1]},
        allow_redirects=False,
    )
    return session, response


def example_usage(engine: Engine, email: str) -> dict[str, Any]:
    """The example app user's billing rows and vacancy titles."""
    with engine.connect() as connection:
        user_id = connection.execute(
            text("SELECT id FROM users WHERE email = :email"), {"email": email}
        ).scalar_one()
        vacancies = (
            connection.execute(
                text("SELECT title FROM vacancies WHERE user_id = :id ORDER BY id"), {"id": user_id}
            )
            .scalars()
            .all()
        )
    return {"rows": user_rows(engine, str(user_id), USER_TABLES), "vacancies": vacancies}


# -- the example app in a browser ----------------------------------------------------------------


def test_the_session_cookie_is_http_only_and_same_site(
    example_app: Deployment, traffic: Traffic
) -> None:
    session, response = example_login(traffic, example_app, "alice@example.com", "alice")

    assert response.status_code == 303
    cookies = [c for c in set_cookie_headers(response) if c.startswith(f"{SESSION_COOKIE}=")]
    assert cookies, "logging in sets the session cookie"
    for cookie in cookies:
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert "httponly" in flags, cookie
        assert "samesite=lax" in flags, cookie
        assert "path=/" in flags, cookie
    page = session.get(example_app.url("/login"))  # the form page sets it too (CSRF token)
    for cookie in set_cookie_headers(page):
        assert "httponly" in cookie.lower(), cookie


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "https:evil.example",
        "javascript:alert(1)",
        "http://127.0.0.1.evil.example/",
    ],
)
def test_login_never_redirects_off_site(
    example_app: Deployment, traffic: Traffic, next_url: str
) -> None:
    session, response = example_login(
        traffic, example_app, "alice@example.com", "alice", next_url=next_url
    )

    assert response.status_code == 303
    assert is_same_origin(response.headers["Location"], example_app), response.headers["Location"]
    # Already logged in, the login page sends the user on: also only to the site itself.
    again = session.get(
        example_app.url(f"/login?next={quote(next_url, safe='')}"), allow_redirects=False
    )
    assert again.status_code in (302, 303)
    assert is_same_origin(again.headers["Location"], example_app), again.headers["Location"]


def test_example_app_form_posts_without_the_csrf_token_are_refused(
    example_app: Deployment, traffic: Traffic, figures: Figures
) -> None:
    session, response = example_login(traffic, example_app, "bob@example.com", "bob")
    assert response.status_code == 303
    home = session.get(example_app.url("/"))
    token = CSRF_META.search(home.text)
    assert token is not None
    before = example_usage(example_app.engine, "bob@example.com")

    for path, data in (("/analyze", {}), ("/export", {}), ("/vacancies", {"title": "Forged"})):
        for headers in ({}, JSON, {"X-CSRFToken": "forged"}):
            refused = session.post(
                example_app.url(path), data=data, headers=headers, allow_redirects=False
            )
            assert refused.status_code == 400, (path, headers, refused.text)
    logout = session.post(example_app.url("/logout"), allow_redirects=False)
    assert logout.status_code == 400

    assert_unchanged(
        figures, before, example_usage(example_app.engine, "bob@example.com"), "forms without CSRF"
    )
    accepted = session.post(
        example_app.url("/analyze"), json={}, headers={**JSON, "X-CSRFToken": token[1]}
    )
    assert accepted.status_code == 200, accepted.text


def test_example_app_escapes_stored_markup_in_its_pages(
    example_app: Deployment, traffic: Traffic
) -> None:
    session, response = example_login(traffic, example_app, "alice@example.com", "alice")
    assert response.status_code == 303
    home = session.get(example_app.url("/"))
    token = CSRF_FIELD.search(home.text)
    assert token is not None

    added = session.post(
        example_app.url("/vacancies"),
        data={"title": SCRIPT, "csrf_token": token[1]},
        headers=HTML,
    )  # follows the redirect home, where the title and the flashed message are shown
    refused = session.post(
        example_app.url("/vacancies"), data={"title": IMG, "csrf_token": token[1]}, headers=HTML
    )  # the Free plan has one active vacancy: the extension's HTML refusal page

    assert added.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in added.text
    assert refused.status_code == 429
    for page in (added, refused, session.get(example_app.url("/"))):
        assert SCRIPT not in page.text
        assert "<img src=x" not in page.text
