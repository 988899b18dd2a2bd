"""The profile page inside a host's layout that loads a stylesheet and an image from another origin
(a second loopback server standing for a CDN) and runs an inline script: in a real browser the
stylesheet applies, the image loads, the script runs and no Content-Security-Policy violation is
reported, both under the host's own policy (the extension sends none in a host's layout) and
under the extension's strict policy extended with the CDN and the page's nonce."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from jinja2 import ChoiceLoader, FileSystemLoader
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from tests.support.browser import ALICE, LiveServer, PageGuards, login
from tests.support.loopback import HOST

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

LAYOUTS = Path(__file__).resolve().parents[1] / "support" / "layouts"
# What the CDN serves: a rule the test reads back, and a 24 px avatar.
CDN_FILES = {
    "/host.css": ("text/css", b"#host-nav { border-bottom: 7px solid rgb(10, 20, 30); }"),
    "/avatar.svg": (
        "image/svg+xml",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24">'
        b'<circle cx="12" cy="12" r="12" fill="#369"/></svg>',
    ),
}


@dataclass
class Cdn:
    url: str
    requests: list[str]


def serve_cdn_file(requests: list[str]) -> Any:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        requests.append(path)
        if path not in CDN_FILES:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        content_type, body = CDN_FILES[path]
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    return app


@pytest.fixture
def cdn() -> Iterator[Cdn]:
    requests: list[str] = []
    server = make_server(HOST, 0, serve_cdn_file(requests), threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="cdn", daemon=True)
    thread.start()
    yield Cdn(f"http://{HOST}:{server.server_port}", requests)
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture(params=["host's policy", "strict policy with the CDN"])
def app_config(request: pytest.FixtureRequest, cdn: Cdn) -> dict[str, Any]:
    config: dict[str, Any] = {
        # The host's answers, as they are: no policy added by the test harness.
        "strict_csp": False,
        "BILLING_BASE_TEMPLATE": "cdn_layout.html",
        "HOST_CDN": cdn.url,
    }
    if request.param == "strict policy with the CDN":
        config["BILLING_CONTENT_SECURITY_POLICY"] = {"style-src": cdn.url, "img-src": cdn.url}
    return config


@pytest.fixture(autouse=True)
def host_templates(app_server: LiveServer, guards: PageGuards, cdn: Cdn) -> None:
    """The host's templates folder, before the example app's own; the CDN is an origin the page
    may reach."""
    app = app_server.app
    app.jinja_loader = ChoiceLoader([FileSystemLoader(LAYOUTS / "cdn"), app.jinja_loader])
    guards.allow_origin(cdn.url)


def test_the_hosts_cdn_stylesheet_image_and_inline_script_work_on_the_page(
    page: Page, cdn: Cdn, app_config: dict[str, Any]
) -> None:
    login(page, *ALICE)
    response = page.goto("/profile/")
    assert response is not None
    assert response.status == 200
    expect(page.locator("#profile-billing")).to_be_visible()

    policy = response.headers.get("content-security-policy")
    if "BILLING_CONTENT_SECURITY_POLICY" in app_config:
        assert policy is not None
        assert f"style-src 'self' {cdn.url} 'nonce-" in policy
    else:
        assert policy is None
    # The CDN's stylesheet applies, its image loaded, the layout's inline script ran.
    nav = page.locator("#host-nav")
    assert nav.evaluate("nav => getComputedStyle(nav).borderBottomWidth") == "7px"
    assert nav.evaluate("nav => getComputedStyle(nav).borderBottomColor") == "rgb(10, 20, 30)"
    avatar = page.locator("#host-avatar")
    expect(avatar).to_have_js_property("complete", True)
    assert avatar.evaluate("image => image.naturalWidth") == 24
    assert page.evaluate("document.documentElement.dataset.hostScript") == "ran"
    assert {"/host.css", "/avatar.svg"} <= set(cdn.requests)
    # The page's own stylesheet and script still work: its dialog opens as a modal.
    assert page.locator(".pb-page").evaluate("el => getComputedStyle(el).display") != "inline"
    page.locator("#pb-edit-open").click()
    expect(page.locator("#pb-dialog-edit")).to_have_attribute("open", "")
    # The guards' teardown fails the test on any policy violation, console error or request to
    # an origin other than the app's and the CDN's.
