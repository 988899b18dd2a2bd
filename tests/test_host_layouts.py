"""The extension's pages inside a Bootstrap-Flask layout, whose `content` block is the whole body:
the host overrides profile_billing/layout.html to put the pages' blocks into its own, and keeps
its navbar, its container, Bootstrap's stylesheet and script (served by the real Bootstrap-Flask,
locally) and the page's own stylesheet and script."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from flask import Flask
from flask_bootstrap import Bootstrap5
from jinja2 import ChoiceLoader, DictLoader, FileSystemLoader
from werkzeug.test import TestResponse

from tests.support.host_app import AppFactory

HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
LAYOUTS = Path(__file__).parent / "support" / "layouts"
# A host's own version of the page, built on the extension's: a notice above it.
MY_PROFILE = """{% extends "profile_billing/profile.html" %}
{% block billing_content %}<p id="host-notice">Notice</p>{{ super() }}{% endblock %}"""


def bootstrap_host(make_app: AppFactory, **config: Any) -> Flask:
    app = make_app(
        BILLING_BASE_TEMPLATE="bootstrap_layout.html", BOOTSTRAP_SERVE_LOCAL=True, **config
    )
    Bootstrap5(app)
    # The host's templates/ folder, and a page of its own built on the extension's.
    app.jinja_loader = ChoiceLoader(
        [FileSystemLoader(LAYOUTS / "bootstrap"), DictLoader({"my_profile.html": MY_PROFILE})]
    )
    return app


class Outline(HTMLParser):
    """Where the elements that matter are: "<where>>tag#id", or "<where>>tag:url" for
    stylesheets and scripts; <where> is head, body, or body/container (inside the host's)."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[str] = []
        self.where = ""
        self.depth = 0  # open <div>s inside the host's container, itself included

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag in ("head", "body"):
            self.where = tag
        url = found.get("href") or found.get("src")
        if tag in ("link", "script") and url:
            self.items.append(f"{self.where}>{tag}:{url.split('?')[0]}")
        elif found.get("id") in ("host-navbar", "host-container", "profile-billing", "host-notice"):
            self.items.append(f"{self.where}>{tag}#{found['id']}")
        if found.get("id") == "host-container":
            self.where, self.depth = "body/container", 0
        if tag == "div" and self.where == "body/container":
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.where == "body/container":
            self.depth -= 1
            if self.depth == 0:
                self.where = "body"


def outline(page: TestResponse) -> list[str]:
    parser = Outline()
    parser.feed(page.get_data(as_text=True))
    return parser.items


def test_the_profile_page_fills_the_bootstrap_layouts_page_block(make_app: AppFactory) -> None:
    app = bootstrap_host(make_app)

    page = app.test_client().get("/profile/", headers={"X-User": "alice", **HTML})

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert html.count("<html") == 1
    assert "<title>Profile and billing · Job board</title>" in html
    assert outline(page) == [
        "head>link:/bootstrap/static/css/bootstrap.min.css",
        "head>link:/profile/static/profile.css",  # the page's stylesheet, in the head
        "body>nav#host-navbar",
        "body>div#host-container",
        "body/container>div#profile-billing",
        "body>script:/bootstrap/static/umd/popper.min.js",
        "body>script:/bootstrap/static/js/bootstrap.min.js",
        "body>script:/profile/static/profile.js",  # after Bootstrap's, at the end
    ]
    # The host's navbar, rendered by Bootstrap-Flask's macro, marks the page it is on.
    assert re.search(r'class="nav-link active" aria-current="page"\s*href="/profile/"', html)


def test_bootstraps_files_are_served_locally(make_app: AppFactory) -> None:
    client = bootstrap_host(make_app).test_client()

    for path in ("/bootstrap/static/css/bootstrap.min.css", "/profile/static/profile.css"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.mimetype == "text/css"


def test_the_refusal_page_goes_in_the_same_place(make_app: AppFactory) -> None:
    app = bootstrap_host(make_app)

    page = app.test_client().get("/api/data", headers={"X-User": "alice", **HTML})

    assert page.status_code == 403
    html = page.get_data(as_text=True)
    assert "<title>403 Forbidden · Job board</title>" in html
    assert re.search(r'id="host-container">\s*<section class="billing-refusal"', html)
    assert '<nav class="navbar' in html


def test_a_host_still_extends_the_profile_page_and_its_blocks(make_app: AppFactory) -> None:
    app = bootstrap_host(make_app, BILLING_PROFILE_TEMPLATE="my_profile.html")

    page = app.test_client().get("/profile/", headers={"X-User": "alice", **HTML})

    assert page.status_code == 200
    assert outline(page)[3:5] == ["body>div#host-container", "body/container>p#host-notice"]
    assert "body/container>div#profile-billing" in outline(page)
